"""Config: TOML plus flags (flags win), and one clear line for each kind of bad input."""
import dataclasses

import pytest

from distbp.training import registry
from distbp.training.config import FIELDS, ConfigError, TrainConfig, build_parser, parse_config


def _toml(tmp_path, text):
    path = tmp_path / "c.toml"
    path.write_text(text)
    return str(path)


def test_defaults_without_arguments():
    cfg, explicit = parse_config([])
    assert cfg == TrainConfig() and explicit == set()
    assert (cfg.model, cfg.dataset, cfg.optimizer, cfg.dtype, cfg.device) == ("mlp", "digits", "sgd", "float32", "cpu")


def test_toml_values_are_read_and_flags_win(tmp_path):
    path = _toml(tmp_path, 'model = "linear"\nepochs = 3\nlr = 1\nhidden = [32, 16]\nresume = true\n')
    cfg, explicit = parse_config(["--config", path, "--epochs", "5", "--batch-size", "8"])
    assert (cfg.model, cfg.epochs, cfg.lr, cfg.hidden, cfg.batch_size) == ("linear", 5, 1.0, [32, 16], 8)
    assert cfg.resume == "latest" and isinstance(cfg.lr, float)
    assert explicit == {"model", "epochs", "lr", "hidden", "resume", "batch_size"}


def test_flag_forms():
    cfg, _ = parse_config(["--hidden", "64,32", "--resume", "--no-progress", "--label-column", "y"])
    assert cfg.hidden == [64, 32] and cfg.resume == "latest" and cfg.progress is False and cfg.label_column == "y"
    assert parse_config(["--resume", "a.safetensors"])[0].resume == "a.safetensors"


@pytest.mark.parametrize("text, words", [
    ('lrr = 0.1\n', "unknown key 'lrr'; did you mean 'lr'?"),
    ('zzz = 1\n', "unknown key 'zzz'; valid keys: model, dataset"),
    ('epochs = "ten"\n', "epochs must be an integer, got 'ten'"),
    ('epochs = 2.5\n', "epochs must be an integer, got 2.5"),
    ('epochs = true\n', "epochs must be an integer, got True"),
    ('lr = "big"\n', "lr must be a number"),
    ('hidden = [1, "a"]\n', "hidden must be a list of integers"),
    ('progress = 1\n', "progress must be true or false"),
    ('model = 3\n', "model must be a string"),
    ('epochs = \n', "is not valid TOML"),
])
def test_bad_toml_gives_one_line_naming_file_and_key(tmp_path, text, words):
    path = _toml(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        parse_config(["--config", path])
    assert words in str(e.value) and "\n" not in str(e.value).strip()


@pytest.mark.parametrize("argv, words", [
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--epoch", "3"], "unrecognized arguments: --epoch"),      # no silent abbreviation
    (["--epochs", "x"], "argument --epochs: invalid int value: 'x'"),
    (["--lr", "abc"], "argument --lr: invalid float value"),
    (["--hidden", "1,b"], "comma-separated integers"),
    (["--config", "/nonexistent/c.toml"], "config file /nonexistent/c.toml not found"),
])
def test_bad_flags_give_one_line(argv, words):
    with pytest.raises(ConfigError, match=words.replace("(", r"\(")):
        parse_config(argv)


@pytest.mark.parametrize("argv, words", [
    (["--model", "resnet"], "invalid model 'resnet': choose one of mlp, linear, cnn, gru, lstm"),
    (["--optimizer", "lbfgs"], "invalid optimizer 'lbfgs'"),
    (["--dtype", "float16"], "invalid dtype 'float16'"),
    (["--device", "tpu"], "invalid device 'tpu'"),
    (["--epochs", "0"], "invalid epochs 0: must be at least 1"),
    (["--batch-size", "-2"], "invalid batch_size -2"),
    (["--steps", "-1"], "invalid steps -1: must be 0 or more"),
    (["--lr", "0"], "invalid lr 0.0: must be a positive number"),
    (["--lr", "inf"], "invalid lr inf"),
    (["--dropout", "1"], "invalid dropout 1.0: must be in [0, 1)"),
    (["--momentum", "1"], "invalid momentum 1.0: must be in [0, 1)"),
    (["--val-fraction", "0.5", "--test-fraction", "0.5"], "val_fraction + test_fraction must be below 1"),
    (["--test-fraction", "0"], "invalid test_fraction 0.0"),
    (["--hidden", "0"], "invalid hidden [0]"),
    (["--keep-checkpoints", "0"], "invalid keep_checkpoints 0"),
    (["--pipeline-stages", "0"], "invalid pipeline_stages 0: must be at least 1"),
    (["--micro-batches", "-1"], "invalid micro_batches -1: must be 0 or more"),
    (["--micro-batches", "4", "--micro-batch-size", "8"], "give --micro-batches or --micro-batch-size, not both"),
    (["--schedule", "zb"], "invalid schedule 'zb': choose one of gpipe, 1f1b"),
    (["--partition", "even"], "invalid partition 'even': give uniform, parameters, balanced or increasing split points"),
    (["--partition", "4,2"], "invalid partition '4,2': split points must be positive and increase strictly"),
    (["--partition", "0,2"], "invalid partition '0,2'"),
    (["--zero", "2"], "invalid zero 2: choose 0 or 1"),
])
def test_bad_values_name_key_value_and_rule(argv, words):
    with pytest.raises(ConfigError) as e:
        parse_config(argv)
    assert words in str(e.value)


def test_help_documents_every_setting(capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for name in FIELDS:
        flag = "--no-progress" if name == "progress" else "--" + name.replace("_", "-")
        assert flag in out, flag
    assert all(f.metadata.get("help") for f in dataclasses.fields(TrainConfig))


def test_names_and_help_come_from_the_registry(capsys):
    @registry.register_model("config_test_net")
    def net(input_shape, num_outputs):
        raise AssertionError("not built by the config")
    try:
        assert parse_config(["--model", "config_test_net"])[0].model == "config_test_net"
        with pytest.raises(SystemExit):
            build_parser().parse_args(["--help"])
        out = " ".join(capsys.readouterr().out.split())
        assert "model from the zoo: mlp, linear, cnn, gru, lstm, config_test_net" in out
        assert "optimizer: sgd, adam, adamw, rmsprop" in out and "built-in dataset (digits, xor, regression, sine)" in out
    finally:
        del registry.MODELS["config_test_net"]
    with pytest.raises(ConfigError, match="invalid model 'config_test_net'"):
        parse_config(["--model", "config_test_net"])


def test_pipeline_settings_from_flags_and_toml(tmp_path):
    cfg, _ = parse_config([])
    assert (cfg.pipeline_stages, cfg.micro_batches, cfg.micro_batch_size, cfg.schedule, cfg.partition,
            cfg.show_schedule) == (1, 0, 0, "1f1b", "uniform", False)
    cfg, explicit = parse_config(["--pipeline-stages", "2", "--micro-batches", "8", "--schedule", "gpipe",
                                  "--partition", "3", "--show-schedule"])
    assert (cfg.pipeline_stages, cfg.micro_batches, cfg.schedule, cfg.partition, cfg.show_schedule) == (
        2, 8, "gpipe", "3", True)
    assert {"pipeline_stages", "micro_batches", "schedule", "partition", "show_schedule"} <= explicit
    path = _toml(tmp_path, 'pipeline_stages = 4\nmicro_batch_size = 16\npartition = "2,5,7"\n')
    cfg, _ = parse_config(["--config", path])
    assert (cfg.pipeline_stages, cfg.micro_batch_size, cfg.partition) == (4, 16, "2,5,7")
    with pytest.raises(ConfigError, match="pipeline_stages must be an integer"):
        parse_config(["--config", _toml(tmp_path, 'pipeline_stages = "2"\n')])


def test_zero_from_flags_and_toml(tmp_path):
    assert parse_config([])[0].zero == 0
    cfg, explicit = parse_config(["--zero", "1"])
    assert cfg.zero == 1 and "zero" in explicit
    assert parse_config(["--config", _toml(tmp_path, "zero = 1\n")])[0].zero == 1
    with pytest.raises(ConfigError, match="zero must be an integer"):
        parse_config(["--config", _toml(tmp_path, "zero = true\n")])
    with pytest.raises(ConfigError, match="invalid zero -1: choose 0 or 1"):
        parse_config(["--config", _toml(tmp_path, "zero = -1\n")])


def test_tensor_parallel_from_flags_and_toml(tmp_path):
    assert parse_config([])[0].tensor_parallel == 1
    cfg, explicit = parse_config(["--tensor-parallel", "2"])
    assert cfg.tensor_parallel == 2 and "tensor_parallel" in explicit
    assert parse_config(["--config", _toml(tmp_path, "tensor_parallel = 4\n")])[0].tensor_parallel == 4
    with pytest.raises(ConfigError, match="tensor_parallel must be an integer"):
        parse_config(["--config", _toml(tmp_path, 'tensor_parallel = "2"\n')])
    with pytest.raises(ConfigError, match="invalid tensor_parallel 0: must be at least 1"):
        parse_config(["--tensor-parallel", "0"])
    cfg, _ = parse_config(["--tensor-parallel", "2", "--pipeline-stages", "2", "--zero", "1"])   # all compose
    assert (cfg.tensor_parallel, cfg.pipeline_stages, cfg.zero) == (2, 2, 1)


# ----- resume: which settings come from the checkpoint (#16) -----
def test_every_setting_is_either_the_results_the_plans_or_this_launchs():
    from distbp.training.config import LAUNCH_KEYS, PLAN_KEYS, RESUME_KEYS
    groups = [*RESUME_KEYS, *PLAN_KEYS, *LAUNCH_KEYS]
    assert sorted(groups) == sorted(FIELDS)      # a new setting must say whether a resume keeps it


def test_resume_takes_the_saved_plan_unless_given_again_and_never_the_launch_settings(tmp_path):
    from types import SimpleNamespace

    from distbp.training.checkpoint import CheckpointError
    from distbp.training.config import resume_config, resume_directory
    saved = dataclasses.replace(TrainConfig(), epochs=7, steps=30, checkpoint_every=5, keep_checkpoints=9,
                                log_dir="runs/a", lr=0.2, pipeline_stages=2, device="cuda", schedule="gpipe").to_dict()
    ckpt = SimpleNamespace(path="x.safetensors", meta={"config": saved})
    cfg, explicit = parse_config(["--resume", "--epochs", "12"])
    cfg = resume_config(cfg, explicit, ckpt)
    assert (cfg.epochs, cfg.steps, cfg.checkpoint_every, cfg.keep_checkpoints, cfg.log_dir, cfg.lr) == (
        12, 30, 5, 9, "runs/a", 0.2)
    assert (cfg.pipeline_stages, cfg.device, cfg.schedule, cfg.checkpoint_dir) == (1, "cpu", "1f1b", "checkpoints")
    with pytest.raises(CheckpointError, match="was written with lr=0.2 but this run asks for lr=0.1"):
        resume_config(*parse_config(["--resume", "--lr", "0.1"]), ckpt)
    (tmp_path / "run").mkdir()
    path = str(tmp_path / "run" / "ckpt-00000005.safetensors")
    assert resume_directory(*parse_config(["--resume", path])).checkpoint_dir == str(tmp_path / "run")
    assert resume_directory(*parse_config(["--resume", str(tmp_path / "run")])).checkpoint_dir == str(tmp_path / "run")
    assert resume_directory(*parse_config(["--resume", path, "--checkpoint-dir", "b"])).checkpoint_dir == "b"
    assert resume_directory(*parse_config(["--resume"])).checkpoint_dir == "checkpoints"
