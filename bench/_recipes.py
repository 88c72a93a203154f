"""The recipes' presets for the bench scripts (``recipes/`` is a folder of scripts, not a package)."""

import importlib.util
from pathlib import Path


def recipe_presets(name: str) -> dict:
    """``PRESETS`` of ``recipes/<name>.py``."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).parent.parent / "recipes" / f"{name}.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    return recipe.PRESETS
