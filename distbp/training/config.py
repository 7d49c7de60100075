"""TrainConfig: the settings of `python -m distbp.train`, from a TOML file and flags (flags win).

Names (models, optimizers, activations, datasets) come from the registry. Every key is checked: an unknown key, a wrong type or a bad value raises
ConfigError with one line that names the key, the value and what is allowed."""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import sys
from dataclasses import dataclass, field

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - pyproject pulls tomli in on 3.10
    import tomli as tomllib

from ..distributed.pipeline.schedule import SCHEDULES
from . import registry, user_code
from .checkpoint import CheckpointError
from .control import SCHEDULES as SCHEDULES_LR

# Settings whose allowed names come from the registry: read when checked or shown, so a model
# registered after this module was imported is accepted and listed too.
_REGISTERED = {"model": registry.MODELS, "optimizer": registry.OPTIMIZERS, "activation": registry.ACTIVATIONS}


class ConfigError(ValueError):
    """A bad setting; str(e) is the one line shown to the user."""


def _opt(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    model: str = _opt("mlp", "model from the zoo: {model}")
    dataset: str = _opt("digits", "built-in dataset ({dataset}), a folder of MNIST/Fashion-MNIST IDX files, "
                                  "or a CSV file")
    hidden: list = field(default_factory=lambda: [128], metadata={"help": "hidden layer sizes, comma separated (mlp: all; cnn/gru/lstm: the first)"})
    activation: str = _opt("relu", "hidden activation: {activation}")
    dropout: float = _opt(0.0, "dropout probability after each hidden layer (mlp)")
    label_column: str = _opt("", "CSV label column, by header name or 0-based index (default: a column named "
                                 "label/target/y/class, else the last)")
    epochs: int = _opt(20, "passes over the training split")
    steps: int = _opt(0, "stop after this many optimizer steps in total (0: no cap)")
    batch_size: int = _opt(64, "GLOBAL batch size, split across ranks")
    lr: float = _opt(0.05, "learning rate")
    optimizer: str = _opt("sgd", "optimizer: {optimizer}")
    momentum: float = _opt(0.9, "momentum (sgd, rmsprop)")
    weight_decay: float = _opt(0.0, "L2 weight decay")
    seed: int = _opt(0, "seed of every random choice: split, init, shuffling")
    dtype: str = _opt("float32", "compute precision: float32 or float64")
    device: str = _opt("cpu", "cpu, or cuda (CuPy)")
    val_fraction: float = _opt(0.1, "fraction of the data held out for per-epoch validation")
    test_fraction: float = _opt(0.2, "fraction held out for the final test (ignored when the data has a test set)")
    checkpoint_dir: str = _opt("checkpoints", "folder for checkpoints")
    checkpoint_every: int = _opt(0, "save a checkpoint every N steps (0: only at the end)")
    keep_checkpoints: int = _opt(3, "keep the newest K checkpoints")
    resume: str = _opt("", "continue from the newest checkpoint in --checkpoint-dir, or from PATH")
    log_dir: str = _opt("", "write metrics.jsonl here (plot it with python -m distbp.plot DIR)")
    progress: bool = _opt(True, "progress bar on rank 0 (only on a terminal)")
    pipeline_stages: int = _opt(1, "split the model into P consecutive stages on P ranks (world size a multiple "
                                   "of P; data parallelism takes the rest)")
    micro_batches: int = _opt(0, "micro-batches per replica and step in a pipeline (0: one per stage, or as "
                                 "--micro-batch-size gives)")
    micro_batch_size: int = _opt(0, "samples per micro-batch instead of --micro-batches (0: not used)")
    schedule: str = _opt("1f1b", "pipeline schedule: {schedule}")
    partition: str = _opt("uniform", "where to cut the model into stages: uniform (equal layer counts), "
                                     "parameters (balanced parameter counts), balanced (equal work, cutting "
                                     "inside a Linear; mlp) or split points i,j,... (i:k: inside layer i, at "
                                     "output feature k)")
    zero: int = _opt(0, "1: shard the optimizer state over the data-parallel ranks (of each stage and tensor "
                        "shard; ZeRO stage 1; same weights as 0); 0: every rank keeps all of it")
    tensor_parallel: int = _opt(1, "split every Linear pair of the mlp, or the cnn's head, over T ranks (Megatron "
                                   "column/row; world size a multiple of T x P; data parallelism takes the rest)")
    show_schedule: bool = _opt(False, "print every stage's timeline for this run's pipeline, then exit")
    # deterministic mode and tracing (#16)
    deterministic: bool = _opt(False, "the same weights, bit for bit, on any number of ranks: each global batch "
                                      "in --deterministic-groups fixed groups summed in a fixed tree (slower)")
    deterministic_groups: int = _opt(8, "groups per global batch in --deterministic mode (ranks own whole groups)")
    trace: str = _opt("", "write each rank's timeline here (Chrome trace JSON: open in https://ui.perfetto.dev, "
                          "or python -m distbp.plot --trace DIR)")
    # checkpoint directory ownership (#16)
    overwrite_checkpoint_dir: bool = _opt(False, "delete the checkpoints of another run found in --checkpoint-dir "
                                                 "instead of refusing to start")
    # user models and losses, training options (#15): training/user_code.py, training/control.py
    model_args: dict = field(default_factory=dict, metadata={"help": "keyword settings of a --model "
                             "module:factory, as key=value,... (TOML: a table)"})
    loss: str = _opt("", "loss: {loss}, or module:factory / file.py:factory (default: cross_entropy for "
                         "classes, mse for targets)")
    loss_args: dict = field(default_factory=dict, metadata={"help": "keyword settings of a --loss factory, "
                            "as key=value,..."})
    lr_schedule: str = _opt("none", "learning-rate schedule per step: {lr_schedule}")
    warmup_steps: int = _opt(0, "raise the lr linearly over the first N steps (onecycle: its rise)")
    lr_step_size: int = _opt(0, "step schedule: multiply the lr by --lr-gamma every N steps (0: every epoch)")
    lr_gamma: float = _opt(0.1, "step: the factor per decay; plateau: the factor per cut")
    lr_patience: int = _opt(2, "plateau: validations without improvement before the lr is cut")
    clip_grad_norm: float = _opt(0.0, "clip the global gradient norm to X before each update (0: off)")
    accumulate: int = _opt(1, "accumulate gradients over N batches of --batch-size per optimizer step (the "
                              "same weights as one batch N times larger)")
    early_stopping: int = _opt(0, "stop after N validations without a lower validation loss (0: never)")
    eval_every: int = _opt(0, "validate every N steps (0: at the end of each epoch)")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
# Settings a resumed run must share with its checkpoint, or the continuation would not be exact.
RESUME_KEYS = ("model", "dataset", "hidden", "activation", "dropout", "label_column", "batch_size", "lr", "optimizer",
               "momentum", "weight_decay", "seed", "dtype", "val_fraction", "test_fraction",
               "deterministic_groups")
# The run's plan: a resume takes it from the checkpoint unless the user gives a key again (that wins).
PLAN_KEYS = ("epochs", "steps", "checkpoint_every", "keep_checkpoints", "log_dir", "deterministic")
# This launch's own choices (grid, device, terminal, folder): never taken from a checkpoint, as a run
# resumes on another grid or machine. Every setting is in exactly one of the three groups.
LAUNCH_KEYS = ("device", "checkpoint_dir", "resume", "progress", "pipeline_stages", "micro_batches",
               "micro_batch_size", "schedule", "partition", "zero", "tensor_parallel", "show_schedule",
               "overwrite_checkpoint_dir", "trace")
RESUME_KEYS += ("model_args", "loss", "loss_args", "lr_schedule", "warmup_steps", "lr_step_size", "lr_gamma",
                "lr_patience", "clip_grad_norm", "accumulate", "early_stopping", "eval_every")   # (#15)


# Sizes beyond these cannot fit in memory (a 784 x 2**24 float32 layer alone is 52 GB): refused
# at once (#16); a model that is smaller but still too big ends as "out of memory" in distbp.train.
MAX_BATCH_SIZE, MAX_HIDDEN = 2**31 - 1, 2**24


def _type_name(t) -> str:
    return {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false",
            "list": "a list of integers", "dict": "key=value pairs (a TOML table)"}[t]


def _check_type(key: str, value, source: str):
    kind = FIELDS[key].type
    if key == "resume" and isinstance(value, bool):   # resume = true in TOML means "the newest"
        return "latest" if value else ""
    ok = {"str": isinstance(value, str),
          "int": isinstance(value, int) and not isinstance(value, bool),
          "float": isinstance(value, (int, float)) and not isinstance(value, bool),
          "bool": isinstance(value, bool),
          "list": isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)}
    if key == "hidden" and isinstance(value, int) and not isinstance(value, bool):
        return [value]
    if kind == "dict":   # --model-args k=v,... (a TOML table arrives as a dict)
        if isinstance(value, str):
            try:
                return user_code.parse_args(value, source)
            except user_code.UserCodeError as e:
                raise ConfigError(str(e)) from None
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key} must be {_type_name(kind)}, got {value!r}")
        return dict(value)
    if not ok[kind]:
        raise ConfigError(f"{source}: {key} must be {_type_name(kind)}, got {value!r}")
    return float(value) if kind == "float" else value


def _check_values(cfg: TrainConfig) -> None:
    def bad(key, rule):
        raise ConfigError(f"invalid {key} {getattr(cfg, key)!r}: {rule}")

    choices = {**{k: tuple(table) for k, table in _REGISTERED.items()},
               "dtype": ("float32", "float64"), "device": ("cpu", "cuda")}
    for key, allowed in choices.items():
        if key == "model" and user_code.is_reference(cfg.model):
            continue   # module:factory, imported and checked when the model is built
        if getattr(cfg, key) not in allowed:
            bad(key, f"choose one of {', '.join(allowed)}")
    for key in ("epochs", "batch_size", "keep_checkpoints"):
        if getattr(cfg, key) < 1:
            bad(key, "must be at least 1")
    for key in ("steps", "checkpoint_every", "seed"):
        if getattr(cfg, key) < 0:
            bad(key, "must be 0 or more")
    if not cfg.lr > 0 or cfg.lr != cfg.lr or cfg.lr == float("inf"):
        bad("lr", "must be a positive number")
    if not 0 <= cfg.dropout < 1:
        bad("dropout", "must be in [0, 1)")
    if not 0 <= cfg.momentum < 1:
        bad("momentum", "must be in [0, 1)")
    if not 0 <= cfg.weight_decay < float("inf"):
        bad("weight_decay", "must be 0 or more")
    if not 0 <= cfg.val_fraction < 1:
        bad("val_fraction", "must be in [0, 1)")
    if not 0 < cfg.test_fraction < 1:
        bad("test_fraction", "must be in (0, 1)")
    if cfg.val_fraction + cfg.test_fraction >= 1:
        raise ConfigError(f"val_fraction + test_fraction must be below 1, got {cfg.val_fraction} + "
                          f"{cfg.test_fraction}")
    if not cfg.hidden or any(h < 1 for h in cfg.hidden):
        bad("hidden", "give one or more positive sizes, e.g. 128,64")
    if not cfg.dataset:
        bad("dataset", "give a built-in name or a path")
    if cfg.pipeline_stages < 1:
        bad("pipeline_stages", "must be at least 1")
    for key in ("micro_batches", "micro_batch_size"):
        if getattr(cfg, key) < 0:
            bad(key, "must be 0 or more")
    if cfg.micro_batches and cfg.micro_batch_size:
        raise ConfigError(f"give --micro-batches or --micro-batch-size, not both (got {cfg.micro_batches} and "
                          f"{cfg.micro_batch_size})")
    if cfg.schedule not in SCHEDULES:
        bad("schedule", f"choose one of {', '.join(SCHEDULES)}")
    if cfg.tensor_parallel < 1:
        bad("tensor_parallel", "must be at least 1")
    if cfg.zero not in (0, 1):
        bad("zero", "choose 0 or 1")
    _check_deterministic(cfg)
    try:
        partition_method(cfg.partition)
    except ValueError as e:
        bad("partition", str(e))
    # absurd sizes (#16): refused in one line rather than ending in a MemoryError
    if cfg.batch_size > MAX_BATCH_SIZE:
        bad("batch_size", f"must be at most {MAX_BATCH_SIZE}")
    if any(h > MAX_HIDDEN for h in cfg.hidden):
        bad("hidden", f"each size must be at most {MAX_HIDDEN}")
    _check_training_options(cfg, bad)


def _check_training_options(cfg: TrainConfig, bad) -> None:
    """User models and losses, schedules, clipping, accumulation, early stopping (#15)."""
    if cfg.loss and cfg.loss not in registry.LOSSES and not user_code.is_reference(cfg.loss):
        bad("loss", f"choose one of {', '.join(registry.LOSSES)}, or give module:factory")
    if cfg.lr_schedule not in SCHEDULES_LR:
        bad("lr_schedule", f"choose one of {', '.join(SCHEDULES_LR)}")
    for key in ("warmup_steps", "lr_step_size", "early_stopping", "eval_every", "lr_patience"):
        if getattr(cfg, key) < 0:
            bad(key, "must be 0 or more")
    if cfg.accumulate < 1:
        bad("accumulate", "must be at least 1")
    if not 0 < cfg.lr_gamma < 1:
        bad("lr_gamma", "must be in (0, 1)")
    if not 0 <= cfg.clip_grad_norm < float("inf"):
        bad("clip_grad_norm", "must be 0 (off) or a positive number")
    for key, on in (("early_stopping", cfg.early_stopping), ("lr_schedule plateau", cfg.lr_schedule == "plateau")):
        if on and cfg.val_fraction == 0:
            raise ConfigError(f"--{key.replace('_', '-')} watches the validation loss, but --val-fraction is 0; "
                              "hold out a validation split")
    if cfg.eval_every and cfg.val_fraction == 0:
        raise ConfigError("--eval-every needs a validation split, but --val-fraction is 0")
    if cfg.clip_grad_norm and cfg.zero:
        raise ConfigError("--clip-grad-norm with --zero 1: the sharded optimizer reduces the gradients inside its "
                          "step, after any clipping could see them; use one or the other")
    if cfg.accumulate > 1 and cfg.pipeline_stages > 1:
        raise ConfigError(f"--accumulate {cfg.accumulate} with --pipeline-stages {cfg.pipeline_stages}: a pipeline "
                          "step already runs many micro-batches; raise --batch-size and --micro-batches instead")
    if cfg.loss and cfg.pipeline_stages > 1:
        raise ConfigError("--loss with --pipeline-stages: the pipeline trains on its task's own loss only")


def _check_deterministic(cfg: TrainConfig) -> None:
    if not 1 <= cfg.deterministic_groups <= 16384:
        raise ConfigError(f"invalid deterministic_groups {cfg.deterministic_groups!r}: must be from 1 to 16384")
    other = [f"--{k.replace('_', '-')} {getattr(cfg, k)}" for k in ("pipeline_stages", "tensor_parallel", "zero", "accumulate")
             if getattr(cfg, k) > (0 if k == "zero" else 1)]
    if cfg.deterministic and other:
        raise ConfigError(f"--deterministic with {other[0]}: deterministic mode is for plain data parallelism "
                          "only; use one or the other")


def partition_method(text: str):
    """--partition as `distributed.pipeline.partition` takes it: a method name or a list of split points,
    each a layer index i or i:k, a (layer, output feature) pair that cuts inside Linear i."""
    if text in ("uniform", "parameters", "balanced"):
        return text
    points = []
    for item in text.split(","):
        layer, sep, feature = item.partition(":")
        try:
            points.append((int(layer), int(feature)) if sep else int(layer))
        except ValueError:
            raise ValueError("give uniform, parameters, balanced or increasing split points like 3, 2,5 or 4:762 "
                             "(inside layer 4, at output feature 762)") from None
    keys = [(p, 0) if isinstance(p, int) else p for p in points]
    if keys != sorted(set(keys)) or keys[0] <= (0, 0):
        raise ValueError("split points must be positive and increase strictly, like 2,5 or 4:762,6")
    return points


def help_of(name: str) -> str:
    """The help line of a setting, with today's registered names filled in."""
    names = {k: ", ".join(table) for k, table in {**_REGISTERED, "dataset": registry.DATASETS,
                                                   "schedule": SCHEDULES, "loss": registry.LOSSES,
                                                   "lr_schedule": SCHEDULES_LR}.items()}
    return FIELDS[name].metadata["help"].format(**names)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage block: every bad input is one line on stderr
        raise ConfigError(message)


def _int_list(text: str) -> list:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 128,64, got {text!r}") from None


def build_parser(prog: str = "python -m distbp.train") -> argparse.ArgumentParser:
    p = _Parser(prog=prog, description="Train a model from the zoo on a dataset, alone or under mpirun -n N "
                "(data parallel). Settings come from defaults, then --config FILE.toml (same keys, with "
                "underscores), then flags.", argument_default=argparse.SUPPRESS, allow_abbrev=False)
    p.add_argument("--config", metavar="FILE.toml", help="read settings from a TOML file (flags win)")
    for name, f in FIELDS.items():
        flag = "--" + name.replace("_", "-")
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        help_text = f"{help_of(name)} (default: {default!r})"
        if name == "progress":
            p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
        elif f.type == "bool":
            p.add_argument(flag, action="store_true", help=help_of(name))
        elif name == "resume":
            p.add_argument(flag, nargs="?", const="latest", metavar="PATH", help=help_text)
        elif name == "hidden":
            p.add_argument(flag, type=_int_list, metavar="N[,N...]", help=help_text)
        elif f.type == "dict":
            p.add_argument(flag, metavar="KEY=VALUE[,...]", help=help_text)
        else:
            p.add_argument(flag, type={"int": int, "float": float, "str": str}[f.type], metavar=name.upper(),
                           help=help_text)
    return p


def read_toml(path: str) -> dict:
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path} not found")
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {path}: {e}") from None
    for key in data:
        if key not in FIELDS:
            near = difflib.get_close_matches(key.replace("-", "_"), FIELDS, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else f"; valid keys: {', '.join(FIELDS)}"
            raise ConfigError(f"{path}: unknown key {key!r}{hint}")
    return data


def parse_config(argv=None) -> tuple[TrainConfig, set]:
    """(config, names of the keys the user set explicitly in the TOML file or as flags)."""
    args = vars(build_parser().parse_args(argv))
    values = {}
    path = args.pop("config", None)
    if path is not None:
        values = {k: _check_type(k, v, path) for k, v in read_toml(path).items()}
    values.update({k: _check_type(k, v, "--" + k.replace("_", "-")) for k, v in args.items()})
    cfg = TrainConfig(**values)
    _check_values(cfg)
    return cfg, set(values)


def config_from_dict(data: dict) -> TrainConfig:
    """A TrainConfig from `to_dict()` output (a checkpoint's metadata); unknown keys are an error."""
    unknown = [k for k in data if k not in FIELDS]
    if unknown:
        raise ConfigError(f"unknown config keys {unknown}")
    cfg = TrainConfig(**{k: _check_type(k, v, "checkpoint config") for k, v in data.items()})
    _check_values(cfg)
    return cfg


def resume_directory(cfg: TrainConfig, explicit: set) -> TrainConfig:
    """`--resume PATH` without `--checkpoint-dir` continues writing in the run's own folder: PATH's
    (or PATH, a folder)."""
    if cfg.resume and cfg.resume != "latest" and "checkpoint_dir" not in explicit:
        cfg.checkpoint_dir = cfg.resume if os.path.isdir(cfg.resume) else os.path.dirname(os.path.abspath(cfg.resume))
    return cfg


def resume_config(cfg: TrainConfig, explicit: set, ckpt) -> TrainConfig:
    """The saved run's settings: RESUME_KEYS from the checkpoint, PLAN_KEYS from the checkpoint unless
    given again, LAUNCH_KEYS from this launch.

    A RESUME_KEYS key the user set explicitly to another value is an error: silently continuing with
    other hyperparameters would not be the run that was saved."""
    try:
        saved = config_from_dict(ckpt.meta["config"])
    except (KeyError, TypeError, ConfigError) as e:
        raise CheckpointError(f"checkpoint {ckpt.path} has no usable config ({e})") from None
    for key in RESUME_KEYS:
        mine, theirs = getattr(cfg, key), getattr(saved, key)
        if mine != theirs:
            if key in explicit:
                raise CheckpointError(f"checkpoint {ckpt.path} was written with {key}={theirs!r} but this run "
                                      f"asks for {key}={mine!r}; resume with the same {key}, or start a new run "
                                      f"in another --checkpoint-dir")
            setattr(cfg, key, theirs)
    for key in PLAN_KEYS:
        if key not in explicit:
            setattr(cfg, key, getattr(saved, key))
    return cfg
