"""The committed results can be made again: every command in RESULTS.md trains its run's recorded config.

`lipschitz-rnn report` writes each experiment's command so that, with today's config files, it resolves
to the config its first run recorded (``config.toml`` in the run directory). A config file changed
without re-running the report would break that promise silently; these tests catch it.
"""

import json
import shlex
from pathlib import Path

import pytest

from lipschitz_rnn.train.config import config_to_dict, load_config, split_train_items

ROOT = Path(__file__).resolve().parents[1]
SUMMARY = ROOT / "results" / "summary.json"
REGENERATE = (
    "regenerate the tables: lipschitz-rnn report results --rows results/rows.toml "
    "--markdown RESULTS.md --json results/summary.json"
)

pytestmark = pytest.mark.skipif(not SUMMARY.is_file(), reason="no committed results/summary.json")


def _records():
    return [r for r in json.loads(SUMMARY.read_text()) if r.get("command")] if SUMMARY.is_file() else []


def _settings(cfg):
    """What decides a run's numbers besides its seed: the config without its seed and [log] section."""
    settings = {section: values for section, values in config_to_dict(cfg).items() if section != "log"}
    settings["train"] = {key: value for key, value in settings["train"].items() if key != "seed"}
    return settings


def test_there_are_committed_commands_to_check():
    assert len(_records()) > 50


@pytest.mark.parametrize("record", _records(), ids=lambda r: r["experiment"])
def test_the_command_trains_the_config_every_seed_of_its_experiment_recorded(record, monkeypatch):
    monkeypatch.chdir(ROOT)  # the commands name config files relative to the repository
    words = shlex.split(record["command"])
    (config,), overrides = split_train_items(words[words.index("train") + 1 :])
    cfg = load_config(config, overrides)
    seeds = []
    for run_dir in record["run_dirs"]:
        ran = load_config(Path(run_dir) / "config.toml")
        assert _settings(cfg) == _settings(ran), f"{run_dir}: {REGENERATE}"
        seeds.append(ran.train.seed)
    assert cfg.train.seed in seeds
