"""Experiment configs: plain TOML files checked against a schema of dataclasses.

A config has five sections. ``[task]`` and ``[model]`` hold a name plus free options that go
to ``build_task`` / ``build_model``; the other sections have a fixed set of keys::

    [experiment]              name, paper (key into lipschitz_rnn.paper.PAPER), imports, notes
    [task]                    name, then task options (permutation, input_scale, ...)
    [model]                   name, hidden_size, num_layers, readout_dropout, input_dropout, linear_init,
                              then model options (eps, ...)
    [train]                   epochs, batch_size, optimizer, lr, ... (see TrainConfig)
    [log]                     progress, tensorboard, plots, stability

Command-line overrides are ``section.key=value`` pairs whose value is parsed as TOML (a bare
word that is not valid TOML is taken as a string). Every key is checked: an unknown key or a
bad value raises :class:`ConfigError` naming it, before anything is written.

Example:
    >>> text = '''
    ... [experiment]
    ... name = "demo"
    ... [task]
    ... name = "adding"
    ... length = 100
    ... [model]
    ... name = "lipschitz"
    ... hidden_size = 32
    ... eps = 0.03
    ... [train]
    ... epochs = 2
    ... batch_size = 64
    ... '''
    >>> cfg = parse_config(text, overrides=["train.lr=0.01", "model.method=midpoint"])
    >>> cfg.train.lr, cfg.model.options, cfg.task.options
    (0.01, {'eps': 0.03, 'method': 'midpoint'}, {'length': 100})
    >>> parse_config(to_toml(cfg)) == cfg
    True
    >>> parse_config(text, overrides=["train.lrr=1"])
    Traceback (most recent call last):
    ...
    lipschitz_rnn.train.config.ConfigError: train.lrr: unknown key; did you mean 'lr'? (expected one of: ...)
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import json
import math
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union, get_args, get_origin, get_type_hints

from ..models import LINEAR_INITS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = [
    "Config",
    "ConfigError",
    "ExperimentConfig",
    "LogConfig",
    "ModelConfig",
    "TaskConfig",
    "TrainConfig",
    "check_registries",
    "load_config",
    "overrides_between",
    "parse_config",
    "parse_overrides",
    "split_train_items",
    "to_toml",
]


class ConfigError(ValueError):
    """A config key is unknown, missing or has a bad value; the message names it."""


def _positive(v) -> Optional[str]:
    return None if v > 0 else "must be > 0"


def _non_negative(v) -> Optional[str]:
    return None if v >= 0 else "must be >= 0"


#: the ``train.optimizer`` names; their factories are ``loop.OPTIMIZERS`` (a test keeps the two in step;
#: this module does not import torch)
OPTIMIZER_NAMES = ("adam", "sgd", "adagrad", "rmsprop")


def _one_of(*choices: str) -> Callable[[Any], Optional[str]]:
    return lambda v: None if v in choices else f"must be one of {', '.join(map(repr, choices))}"


def _device(v: str) -> Optional[str]:
    ok = re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", v)
    return None if ok else "must be 'auto', 'cpu', 'cuda', 'cuda:K' or 'mps'"


def _milestones(v: list[int]) -> Optional[str]:
    if any(m < 1 for m in v) or v != sorted(set(v)):
        return "must be increasing epoch numbers >= 1, e.g. [90]"
    return None


def _decay(v: float) -> Optional[str]:
    return None if 0 < v <= 1 else "must be in (0, 1]"


def _zero_to_one(zero_means: str) -> Callable[[float], Optional[str]]:
    """A check of a value in [0, 1) whose 0 switches a feature off."""
    return lambda v: None if 0 <= v < 1 else f"must be in [0, 1) (0 = {zero_means})"


def _identifier(v: str) -> Optional[str]:
    return None if re.fullmatch(r"[A-Za-z0-9_.\-]+", v) else "must be letters, digits, '_', '-' or '.'"


@dataclass
class ExperimentConfig:
    """What this run is: ``name`` groups seeds in reports; ``paper`` names the published number."""

    name: str
    paper: str = ""  # key into lipschitz_rnn.paper.PAPER; "" when the paper has no such row
    imports: list[str] = field(default_factory=list)  # modules imported first, to register custom tasks or models
    notes: str = ""


@dataclass
class TaskConfig:
    """``name`` in ``lipschitz_rnn.data.TASKS``; every other key goes to the task's builder."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelConfig:
    """``name`` in ``lipschitz_rnn.MODELS``; every other key goes to the model's constructor."""

    name: str
    hidden_size: int
    num_layers: int = 1
    # dropout on the hidden values the linear readout sees (training only); 0 = off
    readout_dropout: float = 0.0
    # dropout on the RNN's input values (training only; whole tokens for one-hot inputs); 0 = off
    input_dropout: float = 0.0
    # how the input maps U, b and the readout D are drawn (lipschitz_rnn.models.init_linear_maps_):
    # "default" (nn.Linear's) or "xavier_normal" (an early reference code's)
    linear_init: str = "default"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    """Optimisation, schedule, hardware and checkpointing."""

    epochs: int
    batch_size: int  # the global batch (split across DDP ranks)
    eval_batch_size: int = 1000
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.0  # SGD only
    weight_decay: float = 0.0
    lr_schedule: str = "step"  # "step": lr *= lr_decay after each milestone; "cosine": lr -> lr_min over the epochs
    lr_milestones: list[int] = field(default_factory=list)  # lr *= lr_decay after each of these epochs ("step")
    lr_decay: float = 0.1
    lr_min: float = 0.0  # the last epoch's floor of the "cosine" schedule
    # 0 = off; else the first warmup_steps optimizer steps ramp the rate linearly up to the schedule's,
    # step g (0-based, over the whole run) at min(1, (g + 1) / warmup_steps) of it
    warmup_steps: int = 0
    clip_grad_norm: float = 0.0  # 0 = off
    # 0 = off; else the run evaluates and saves an exponential moving average of the weights,
    # updated after every step with this decay (0.999: about the last 1,000 steps)
    ema_decay: float = 0.0
    seed: int = 0
    device: str = "auto"
    backend: str = "auto"  # recurrence backend of the lipschitz_rnn layers
    limit_train_batches: int = 0  # 0 = the whole epoch (smoke runs)
    limit_eval_batches: int = 0  # 0 = the whole split; k = a fixed random sample of k batches (streams: the first k)
    checkpoint_every_steps: int = 0  # 0 = at the end of each epoch only


@dataclass
class LogConfig:
    progress: bool = True  # tqdm progress bars (when tqdm is installed)
    tensorboard: bool = True  # event files (when tensorboard is installed)
    plots: bool = True  # PNG plots at the end (when matplotlib is installed)
    stability: bool = True  # stability numbers of Lipschitz/Antisymmetric cells every epoch, and reports at start/end


@dataclass
class Config:
    experiment: ExperimentConfig
    task: TaskConfig
    model: ModelConfig
    train: TrainConfig
    log: LogConfig = field(default_factory=LogConfig)


#: value checks beyond the type, each returning an error message or None
CHECKS: dict[str, Callable[[Any], Optional[str]]] = {
    "experiment.name": _identifier,
    "model.readout_dropout": _zero_to_one("no dropout"),
    "model.input_dropout": _zero_to_one("no dropout"),
    "model.linear_init": _one_of(*LINEAR_INITS),
    "train.epochs": _positive,
    "train.batch_size": _positive,
    "train.eval_batch_size": _positive,
    "train.optimizer": _one_of(*OPTIMIZER_NAMES),
    "train.lr": _positive,
    "train.momentum": _non_negative,
    "train.weight_decay": _non_negative,
    "train.lr_schedule": _one_of("step", "cosine"),
    "train.lr_milestones": _milestones,
    "train.lr_min": _non_negative,
    "train.warmup_steps": _non_negative,
    "train.lr_decay": _decay,
    "train.clip_grad_norm": _non_negative,
    "train.ema_decay": _zero_to_one("no weight average"),
    "train.seed": _non_negative,
    "train.device": _device,
    "train.limit_train_batches": _non_negative,
    "train.limit_eval_batches": _non_negative,
    "train.checkpoint_every_steps": _non_negative,
}

SECTIONS: dict[str, type] = {
    "experiment": ExperimentConfig,
    "task": TaskConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "log": LogConfig,
}
# sections whose unknown keys are options for a registered builder, not errors
_OPEN_SECTIONS = ("task", "model")


# -- parsing ---------------------------------------------------------------------------------


def load_config(path: Union[str, Path], overrides: Sequence[str] = ()) -> Config:
    """Read a TOML file, apply ``section.key=value`` overrides and validate."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {str(path)!r}: {exc.strerror or exc}") from None
    return parse_config(text, overrides, source=str(path))


def parse_config(text: str, overrides: Sequence[str] = (), *, source: str = "<config>") -> Config:
    """A validated :class:`Config` from TOML text and ``section.key=value`` overrides."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML: {exc}") from None
    for section, key, value in parse_overrides(overrides):
        table = raw.setdefault(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{section}: must be a [section], got a {type(table).__name__}")
        table[key] = value
    return _from_dict(raw)


def split_train_items(items: Sequence[str]) -> tuple[list[str], list[str]]:
    """``lipschitz-rnn train``'s positional items as (config files, ``section.key=value`` overrides).

    Example:
        >>> split_train_items(["configs/smnist/lipschitz_euler_n128.toml", "train.seed=1"])
        (['configs/smnist/lipschitz_euler_n128.toml'], ['train.seed=1'])
    """
    return [item for item in items if "=" not in item], [item for item in items if "=" in item]


def parse_overrides(overrides: Sequence[str]) -> list[tuple[str, str, Any]]:
    """``["train.lr=0.01", "task.name=smnist"]`` -> ``[("train", "lr", 0.01), ("task", "name", "smnist")]``."""
    parsed = []
    for item in overrides:
        key, sep, text = item.partition("=")
        parts = key.strip().split(".")
        if not sep or len(parts) != 2 or not all(parts):
            raise ConfigError(f"override {item!r} must look like section.key=value (e.g. train.lr=0.001)")
        section, name = parts
        if section not in SECTIONS:
            raise ConfigError(f"override {item!r}: unknown section {section!r}{_suggest(section, SECTIONS)}")
        parsed.append((section, name, _parse_value(text.strip())))
    return parsed


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text  # a bare word: cuda:1, smnist, midpoint


def _suggest(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _from_dict(raw: dict[str, Any]) -> Config:
    for section in raw:
        if section not in SECTIONS:
            raise ConfigError(
                f"[{section}]: unknown section{_suggest(section, SECTIONS)}; expected {', '.join(SECTIONS)}"
            )
    parts = {}
    for section, cls in SECTIONS.items():
        table = raw.get(section)
        if table is None:
            if section == "log":
                table = {}
            else:
                raise ConfigError(f"[{section}]: missing section")
        if not isinstance(table, dict):
            raise ConfigError(f"{section}: must be a [section], got a {type(table).__name__}")
        parts[section] = _build_section(section, cls, table)
    cfg = Config(**parts)
    _check_cross_fields(cfg)
    return cfg


def _build_section(section: str, cls: type, table: dict[str, Any]):
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "options"}
    values: dict[str, Any] = {}
    options: dict[str, Any] = {}
    for key, value in table.items():
        if key in fields:
            name = f"{section}.{key}"
            values[key] = _check_value(name, value, hints[key], CHECKS.get(name))
        elif section in _OPEN_SECTIONS:
            if isinstance(value, dict):
                raise ConfigError(f"{section}.{key}: options must be plain values or lists, not tables")
            options[key] = value
        else:
            raise ConfigError(
                f"{section}.{key}: unknown key{_suggest(key, fields)} (expected one of: {', '.join(fields)})"
            )
    for name, f in fields.items():
        if name not in values and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{section}.{name}: missing (required)")
    if section in _OPEN_SECTIONS:
        values["options"] = options
    return cls(**values)


def _check_value(name: str, value: Any, hint: Any, check) -> Any:
    origin = get_origin(hint)
    if origin is list:
        (item_type,) = get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"{name}: expected a list of {item_type.__name__}, got {value!r}")
        value = [_check_scalar(f"{name}[{i}]", v, item_type) for i, v in enumerate(value)]
    else:
        value = _check_scalar(name, value, hint)
    if check is not None:
        problem = check(value)
        if problem:
            raise ConfigError(f"{name}: {problem}, got {value!r}")
    return value


def _check_scalar(name: str, value: Any, kind: type) -> Any:
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{name}: expected a finite number, got {value!r}")
        return float(value)
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{name}: expected an integer, got {value!r}")
    if kind is not int and not isinstance(value, kind):
        raise ConfigError(f"{name}: expected {kind.__name__}, got {value!r}")
    return value


def _check_cross_fields(cfg: Config) -> None:
    train = cfg.train
    if train.optimizer != "sgd" and train.momentum:
        raise ConfigError(f"train.momentum: only used with optimizer = 'sgd' (optimizer is {train.optimizer!r})")
    if train.lr_schedule == "cosine" and train.lr_milestones:
        raise ConfigError(
            f"train.lr_milestones: step-decay milestones {train.lr_milestones} with lr_schedule = 'cosine'; "
            "set train.lr_milestones=[] or lr_schedule = 'step'"
        )
    if train.lr_min > train.lr:
        raise ConfigError(f"train.lr_min: must be <= train.lr ({train.lr}), got {train.lr_min}")
    if not cfg.task.name:
        raise ConfigError("task.name: must not be empty")
    for key in ("hidden_size", "num_layers"):
        value = getattr(cfg.model, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"model.{key}: expected an integer >= 1, got {value!r}")
    for key in ("input_size", "batch_first", "backend"):
        if key in cfg.model.options:
            where = "train.backend" if key == "backend" else "the task"
            raise ConfigError(f"model.{key}: set by {where}, not in [model]")
    from ..backends import backend_names

    if train.backend not in backend_names():
        raise ConfigError(f"train.backend: must be one of {', '.join(backend_names())}, got {train.backend!r}")


# -- registries --------------------------------------------------------------------------------


def import_plugins(cfg: Config) -> None:
    """Import ``experiment.imports`` (modules that register extra tasks or models)."""
    for module in cfg.experiment.imports:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(f"experiment.imports: cannot import {module!r}: {exc}") from None


def backend_option(cfg: Config) -> dict[str, str]:
    """The ``backend`` keyword for the configured model: ``train.backend`` for the ODE layers, and for any
    other model unless it is ``"auto"``, so that a backend a model cannot use (the LSTM/GRU wrappers take
    ``"auto"`` only) is refused by the model's constructor instead of being dropped without a word."""
    from ..layer import RecurrentLayer
    from ..models import MODELS

    model = MODELS.get(cfg.model.name)  # a class, or a factory function registered by a plugin
    if (isinstance(model, type) and issubclass(model, RecurrentLayer)) or cfg.train.backend != "auto":
        return {"backend": cfg.train.backend}
    return {}


def check_registries(cfg: Config, *, require_task: bool = True) -> None:
    """Check the model name and options by building a small throwaway model, and the task name and options
    against its builder's signature. With ``require_task=False`` an unregistered task is let through
    (configs written before their data package is installed)."""
    from ..data import TASKS
    from ..models import MODELS

    import_plugins(cfg)
    if cfg.model.name not in MODELS:
        raise ConfigError(f"model.name: unknown model {cfg.model.name!r}; expected one of {', '.join(MODELS.names())}")
    model_class = MODELS.get(cfg.model.name)
    extra = backend_option(cfg)
    # a small stand-in checks option names and values (at N = 1024 its eigenvalue checks would take seconds)
    hidden_size = min(cfg.model.hidden_size, 64)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model_class(1, hidden_size, cfg.model.num_layers, batch_first=True, **extra, **cfg.model.options)
    except (TypeError, ValueError) as exc:
        given = str(cfg.model.options)
        if cfg.train.backend != "auto":  # handed to every model, and not among the options: name it
            given += f" with train.backend = {cfg.train.backend!r}"
        raise ConfigError(f"[model] {cfg.model.name!r} rejects its options {given}: {exc}") from None

    if cfg.task.name not in TASKS:
        if require_task:
            raise ConfigError(
                f"task.name: unknown task {cfg.task.name!r}; expected one of {', '.join(TASKS.names()) or '(none)'}"
            )
        return
    builder = TASKS.get(cfg.task.name)
    try:
        signature = inspect.signature(builder)
    except (TypeError, ValueError):  # builtins without a signature: the builder checks at build time
        return
    try:
        signature.bind(**cfg.task.options)
    except TypeError as exc:
        names = [p for p in signature.parameters if p != "self"]
        raise ConfigError(
            f"[task] {cfg.task.name!r} rejects its options {sorted(cfg.task.options)}: {exc}; "
            f"it takes: {', '.join(names)}"
        ) from None


# -- writing -----------------------------------------------------------------------------------


def to_toml(cfg: Config, header: str = "") -> str:
    """The config as TOML text that :func:`parse_config` reads back to an equal config."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    for section in SECTIONS:
        part = getattr(cfg, section)
        items = {f.name: getattr(part, f.name) for f in dataclasses.fields(part) if f.name != "options"}
        items.update(getattr(part, "options", {}))
        if lines:
            lines.append("")
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in items.items())
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON string escapes are valid TOML basic strings
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML: {value!r}")


def overrides_between(base: Config, target: Config, skip: Sequence[str] = ("log",)) -> Optional[list[str]]:
    """The ``section.key=value`` overrides that turn ``base`` into ``target``, sections in ``skip`` aside.

    ``None`` where no overrides can: ``base`` has an option that ``target`` lacks (an override adds
    or changes a key, it cannot remove one).

    Example:
        >>> tables = ['experiment = {name = "demo"}', 'task = {name = "adding"}']
        >>> tables += ['model = {name = "lipschitz", hidden_size = 8}', "train = {epochs = 2, batch_size = 64}"]
        >>> text = "\\n".join(tables)
        >>> base = parse_config(text)
        >>> overrides_between(base, parse_config(text, ["train.lr=0.01", "train.lr_milestones=[1, 2]"]))
        ['train.lr=0.01', 'train.lr_milestones=[1,2]']
        >>> overrides_between(parse_config(text, ["task.length=50"]), base) is None  # cannot remove an option
        True
    """
    have, want = config_to_dict(base), config_to_dict(target)
    overrides = []
    for section in SECTIONS:
        if section in skip:
            continue
        if set(have[section]) - set(want[section]):
            return None
        for key, value in want[section].items():
            if key not in have[section] or have[section][key] != value:
                overrides.append(f"{section}.{key}={_override_value(value)}")
    return overrides


def _override_value(value: Any) -> str:
    """``value`` as the command line writes it: a bare word where it reads back the same, lists without spaces."""
    if isinstance(value, str) and value and _parse_value(value) == value and value == value.strip():
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, (bool, int, float)) for v in value):
        return "[" + ",".join(_toml_value(v) for v in value) + "]"
    return _toml_value(value)


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """A JSON-able dict with the options folded into their sections (the TOML layout)."""
    out = {}
    for section in SECTIONS:
        part = dataclasses.asdict(getattr(cfg, section))
        part.update(part.pop("options", {}))
        out[section] = part
    return out
