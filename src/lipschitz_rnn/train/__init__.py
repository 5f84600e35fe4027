"""The experiment harness: configs, the training loop, run directories, checkpoints, reports.

    from lipschitz_rnn.train import load_config, train
    summary = train(load_config("configs/quickstart.toml", ["train.seed=1"]), "runs/quickstart/seed1")

The command line (``lipschitz-rnn train|eval|report``, see :mod:`lipschitz_rnn.cli`) is a thin
layer over :func:`train`, :func:`evaluate_run` and :func:`summarize`.
"""

from .checkpoint import CheckpointError, RunDirError, load_checkpoint
from .config import Config, ConfigError, check_registries, load_config, parse_config, to_toml
from .loop import (
    TrainingDiverged,
    TrainingInterrupted,
    evaluate,
    evaluate_run,
    learning_rate,
    load_run,
    resume_config,
    train,
)
from .report import find_runs, markdown_table, summarize

__all__ = [
    "CheckpointError",
    "Config",
    "ConfigError",
    "RunDirError",
    "TrainingDiverged",
    "TrainingInterrupted",
    "check_registries",
    "evaluate",
    "evaluate_run",
    "find_runs",
    "learning_rate",
    "load_checkpoint",
    "load_config",
    "load_run",
    "markdown_table",
    "parse_config",
    "resume_config",
    "summarize",
    "to_toml",
    "train",
]
