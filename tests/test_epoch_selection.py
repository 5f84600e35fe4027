"""scripts/epoch_selection.py: the test metric at the best-validation, last and best-test epochs."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import epoch_selection  # noqa: E402


def _run(directory: Path, val, test, metric="accuracy", higher=True) -> Path:
    directory.mkdir(parents=True)
    records = [{"epoch": k + 1, "val": {metric: v}, "test": {metric: t}} for k, (v, t) in enumerate(zip(val, test))]
    (directory / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (directory / "summary.json").write_text(json.dumps({"metric": metric, "higher_is_better": higher}))
    return directory


def test_each_rule_picks_its_epoch_and_ties_keep_the_first(tmp_path):
    run = _run(tmp_path / "seed0", val=[50, 70, 70, 60], test=[52, 66, 69, 71])
    row = epoch_selection.seed_row(run)
    assert row["best_val"] == (66, 2)  # epochs 2 and 3 tie on validation: the first is kept
    assert row["last"] == (71, 4)
    assert row["best_test"] == (71, 4)


def test_lower_is_better_metrics_pick_minima(tmp_path):
    run = _run(tmp_path / "seed0", val=[2.0, 1.5, 1.6], test=[1.9, 1.45, 1.4], metric="bpc", higher=False)
    row = epoch_selection.seed_row(run)
    assert row["best_val"] == (1.45, 2) and row["best_test"] == (1.4, 3) and row["last"] == (1.4, 3)


def test_a_run_without_test_records_is_refused(tmp_path):
    run = tmp_path / "seed0"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "val": {"accuracy": 1.0}}) + "\n")
    (run / "summary.json").write_text(json.dumps({"metric": "accuracy", "higher_is_better": True}))
    with pytest.raises(ValueError, match="no epoch with test metrics"):
        epoch_selection.seed_row(run)


def test_a_run_without_a_validation_split_has_no_best_validation_epoch(tmp_path, capsys):
    for seed, test in [(0, [90, 95, 94]), (1, [91, 93, 96])]:
        run = tmp_path / "full" / f"seed{seed}"
        run.mkdir(parents=True)
        records = [{"epoch": k + 1, "test": {"accuracy": t}} for k, t in enumerate(test)]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        (run / "summary.json").write_text(json.dumps({"metric": "accuracy", "higher_is_better": True}))
    row = epoch_selection.seed_row(tmp_path / "full" / "seed0")
    assert row["best_val"] == (None, None) and row["last"] == (94, 3) and row["best_test"] == (95, 2)
    epoch_selection.main([str(tmp_path / "full")])
    mean_line = capsys.readouterr().out.splitlines()[-1].split()
    assert mean_line == ["mean", "n/a", "95", "95.5"]


def test_validation_in_only_some_epochs_is_refused(tmp_path):
    run = _run(tmp_path / "seed0", val=[50, 70], test=[52, 66])
    with (run / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"epoch": 3, "test": {"accuracy": 60}}) + "\n")
    with pytest.raises(ValueError, match="validation in only some epochs"):
        epoch_selection.seed_row(run)


def test_the_best_validation_rule_agrees_with_every_committed_summary():
    summaries = sorted(ROOT.glob("results/*/seed*/summary.json"))
    completed = [s for s in summaries if json.loads(s.read_text()).get("status") == "completed"]
    assert len(completed) > 50
    for path in completed:
        summary = json.loads(path.read_text())
        row = epoch_selection.seed_row(path.parent)
        assert row["best_val"] == (summary["test_best_val"], summary["best_epoch"]), path


def test_metrics_read_back_as_written(tmp_path):
    from lipschitz_rnn.train.metrics import read_metrics, write_metrics

    history = [{"epoch": 1, "val": {"bpc": 2.5}}, {"epoch": 2, "val": {"bpc": float("nan")}}]
    write_metrics(tmp_path / "metrics.jsonl", history)
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2] and records[0] == history[0]
    assert records[1]["val"]["bpc"] != records[1]["val"]["bpc"]  # NaN survives the round trip
