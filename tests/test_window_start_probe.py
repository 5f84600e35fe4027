"""scripts/window_start_probe.py: a stateful run's next windows from a zero and from a carried state."""

import json

import pytest

from lipschitz_rnn.cli import main
from scripts_loader import load_script
from test_train_toytasks import write_config

window_start_probe = load_script("scripts/window_start_probe.py", "window_start_probe")


def test_each_mode_sequence_and_dropout_draw_gives_the_windows_losses(tmp_path):
    run = tmp_path / "run"
    overrides = ["train.epochs=2", "train.limit_train_batches=3", "model.input_dropout=0.3", "log.plots=false"]
    assert main(["train", str(write_config(tmp_path, task="toy_chars")), *overrides, "--out", str(run)]) == 0
    before = {str(p): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}
    output = tmp_path / "probe.json"
    assert (
        window_start_probe.main(
            [str(run), "--windows", "3", "--draws", "2", "--device", "cpu", "--output", str(output)]
        )
        == 0
    )
    result = json.loads(output.read_text())
    best = json.loads((run / "summary.json").read_text())["best_epoch"]
    assert result["checkpoint"]["epoch_after"] == best + 1 and set(result["layers"]) == {"layer0"}
    by_sequence = {}
    for r in result["results"]:
        assert len(r["loss"]) == len(r["hidden_max_abs"]) == len(r["modes"]) == 3
        assert all(loss is not None and loss > 0 for loss in r["loss"])  # a stable toy run: every window finite
        by_sequence.setdefault(r["sequence"], []).append(r)
    assert sorted(by_sequence) == ["eval 1, then train", "eval 2, then train", "train from zero"]
    assert by_sequence["train from zero"][0]["modes"] == ["train"] * 3
    assert by_sequence["eval 2, then train"][0]["modes"] == ["eval", "eval", "train"]
    # windows in evaluation mode draw no dropout: the same loss under each draw; training windows differ by draw
    first, second = by_sequence["eval 2, then train"]
    assert first["loss"][:2] == second["loss"][:2] and first["loss"][2] != second["loss"][2]
    zero_a, zero_b = by_sequence["train from zero"]
    assert zero_a["loss"][0] != zero_b["loss"][0]
    assert {str(p): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()} == before  # writes nothing there


def test_a_stateless_task_is_refused(tmp_path):
    run = tmp_path / "run"
    assert main(["train", str(write_config(tmp_path)), "train.epochs=1", "log.plots=false", "--out", str(run)]) == 0
    with pytest.raises(SystemExit, match="carries no state"):
        window_start_probe.probe(run, device="cpu")
