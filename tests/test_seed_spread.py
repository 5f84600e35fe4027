"""scripts/seed_spread.py: one command's seeds pooled over experiment directories, and nothing else pooled."""

import json
import sys
from pathlib import Path

import pytest

from lipschitz_rnn.train.config import parse_config, to_toml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import seed_spread

CONFIG = """
[experiment]
name = "{name}"
[task]
name = "adding"
[model]
name = "lipschitz"
hidden_size = 8
[train]
epochs = 2
batch_size = 16
seed = {seed}
"""


def _run(root: Path, name: str, seed: int, test: float, overrides=(), status="completed", higher=True) -> None:
    run = root / name / f"seed{seed}"
    run.mkdir(parents=True)
    cfg = parse_config(CONFIG.format(name=name, seed=seed), list(overrides))
    (run / "config.toml").write_text(to_toml(cfg))
    summary = {"status": status, "seed": seed, "metric": "accuracy", "higher_is_better": higher}
    summary |= {"test_best_val": test, "val_best": test + 0.5}
    (run / "summary.json").write_text(json.dumps({**summary, "best_epoch": 2, "epochs": 2}))


def test_seeds_of_one_command_pool_across_experiment_names(tmp_path, capsys):
    for seed, test in enumerate([95.7, 95.6, 95.8]):
        _run(tmp_path, "row", seed, test)
    for seed, test in [(3, 96.1), (4, 95.5)]:
        _run(tmp_path, "row_more", seed, test, ["log.plots=false"])  # [log] is not a setting of the command
    out = tmp_path / "spread.json"
    seed_spread.main([str(tmp_path / "row"), str(tmp_path / "row_more"), "--target", "96.0", "--json", str(out)])
    result = json.loads(out.read_text())
    assert [s["seed"] for s in result["seeds"]] == [0, 1, 2, 3, 4]
    assert result["experiments"]["row"]["mean"] == pytest.approx(95.7)
    assert result["experiments"]["row_more"]["n"] == 2
    pooled = result["pooled"]
    assert (pooled["n"], pooled["min"], pooled["max"]) == (5, 95.5, 96.1)
    assert pooled["mean"] == pytest.approx(95.74) and pooled["std"] == pytest.approx(0.2302, abs=1e-4)
    assert pooled["reaching_target"] == 1 and "reaching_paper" not in pooled
    out = capsys.readouterr().out
    assert "pooled: 95.74 ± 0.23 over 5 seeds, min 95.50, max 96.10" in out
    assert "seeds at or above the target 96.0: 1 of 5" in out


def test_a_lower_is_better_metric_counts_the_seeds_at_or_below_a_bound(tmp_path, capsys):
    for seed, bpc in [(0, 1.39), (1, 1.41), (2, 1.43), (10, 1.40)]:
        _run(tmp_path, "ptb", seed, bpc, higher=False)
    # numbered, not alphabetical: seed2 before seed10
    result = seed_spread.spread([tmp_path / "ptb"], target=1.42, paper=1.40)
    assert [s["seed"] for s in result["seeds"]] == [0, 1, 2, 10]
    assert (result["pooled"]["reaching_target"], result["pooled"]["reaching_paper"]) == (3, 2)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.lr=0.002"], "settings differ from .*train.lr=0.002"),
        (["train.backend=triton-tf32x3"], "train.backend=triton-tf32x3"),
    ],
)
def test_a_run_of_other_settings_is_refused(tmp_path, overrides, message):
    _run(tmp_path, "row", 0, 95.7)
    _run(tmp_path, "other", 1, 96.4, overrides)
    with pytest.raises(SystemExit, match=message):
        seed_spread.main([str(tmp_path / "row"), str(tmp_path / "other")])


def test_an_unfinished_run_or_a_seed_counted_twice_is_refused(tmp_path):
    _run(tmp_path, "row", 0, 95.7)
    _run(tmp_path, "stopped", 1, 96.4, status="running")
    with pytest.raises(SystemExit, match="not a completed run"):
        seed_spread.main([str(tmp_path / "row"), str(tmp_path / "stopped")])
    _run(tmp_path, "again", 0, 95.7)
    with pytest.raises(SystemExit, match="the same seed appears twice"):
        seed_spread.main([str(tmp_path / "row"), str(tmp_path / "again")])
    with pytest.raises(SystemExit, match="no seed"):
        seed_spread.main([str(tmp_path / "empty")])
