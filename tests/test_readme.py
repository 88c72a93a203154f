from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    commands = [line for line in readme.splitlines() if line.startswith("pip install")]
    assert len(commands) >= 2, "README.md must start with the install-and-run and install-and-test commands"
    test_command = next(line for line in commands if "pytest" in line)
    assert test_command in ci.splitlines()
