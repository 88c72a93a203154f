import pytest
from transformers import HfArgumentParser

from hf_dfkd import DistillationConfig


def test_config_parses_from_command_line(tmp_path):
    (config,) = HfArgumentParser(DistillationConfig).parse_args_into_dataclasses(
        ["--output_dir", str(tmp_path), "--temperature", "2.5", "--lambda_patch", "0.3",
         "--patch_layer_pairs", "1:2", "3:6", "--label_source", "teacher"]
    )
    assert config.temperature == 2.5 and config.lambda_patch == 0.3 and config.label_source == "teacher"
    assert config.layer_pairs == [(1, 2), (3, 6)]
    assert config.remove_unused_columns is False
    assert (config.learning_rate, config.adam_beta1, config.weight_decay) == (7.5e-4, 0.5, 0.025)


def test_config_parses_from_json(tmp_path):
    path = tmp_path / "args.json"
    path.write_text('{"output_dir": "%s", "lambda_kd": 0.5, "patch_layer_pairs": ["2:2"]}' % tmp_path)
    (config,) = HfArgumentParser(DistillationConfig).parse_json_file(str(path))
    assert config.lambda_kd == 0.5 and config.layer_pairs == [(2, 2)]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"temperature": 0.0}, "temperature must be > 0"),
        ({"temperature": -1.0}, "temperature must be > 0"),
        ({"lambda_ce": -1.0}, "lambda_ce must be >= 0"),
        ({"lambda_kd": 0, "lambda_ce": 0, "lambda_patch": 0}, "nothing to train"),
        ({"label_source": "oracle"}, "label_source"),
        ({"patch_layer_pairs": ["a:b"]}, "STUDENT:TEACHER"),
    ],
)
def test_config_rejects_bad_values(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        DistillationConfig(output_dir=str(tmp_path), **kwargs)
