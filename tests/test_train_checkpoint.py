"""Checkpoints and run directories that are not ours are refused: nothing executed, nothing overwritten."""

import json
import os
import pickle
import shutil

import pytest
import torch

from lipschitz_rnn.cli import main
from lipschitz_rnn.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from test_train_toytasks import snapshot, write_config


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    directory = tmp_path_factory.mktemp("finished")
    assert main(["train", str(write_config(directory)), "train.epochs=1", "--out", str(directory / "run")]) == 0
    return directory / "run"


@pytest.fixture
def run_dir(finished_run, tmp_path):
    """A private copy of a finished one-epoch run, to tamper with."""
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy


class WritesSentinel:
    """Unpickling this calls open(path, "w"): proof that the loader ran code from the file."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _refused(args, capsys, *expected):
    assert main(args) == 2
    err = capsys.readouterr().err
    for text in expected:
        assert text in err, err


def test_the_sentinel_payload_really_runs_when_unpickled(tmp_path):
    sentinel = tmp_path / "ran"
    pickle.loads(pickle.dumps(WritesSentinel(sentinel))).close()
    assert sentinel.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_a_checkpoint_with_code_in_it_is_refused_without_running_it(run_dir, tmp_path, capsys, writer):
    sentinel = tmp_path / "sentinel"
    state_path = run_dir / "checkpoints" / "last" / "state.pt"
    with open(state_path, "wb") as f:
        (torch.save if writer == "torch.save" else pickle.dump)({"format": WritesSentinel(sentinel)}, f)
    before = snapshot(run_dir)
    _refused(["train", "--resume", str(run_dir), "train.epochs=2"], capsys, "refused without running it")
    _refused(["eval", str(run_dir), "--checkpoint", "last"], capsys, "not a lipschitz-rnn checkpoint")
    assert not sentinel.exists()
    assert snapshot(run_dir) == before


def test_a_checkpoint_without_our_marker_is_refused(run_dir, capsys):
    torch.save({"format": "someone-else", "epoch": 1}, run_dir / "checkpoints" / "last" / "state.pt")
    before = snapshot(run_dir)
    _refused(["train", "--resume", str(run_dir), "train.epochs=2"], capsys, "no format marker")
    assert snapshot(run_dir) == before


def test_weights_that_do_not_match_their_state_are_refused(run_dir, capsys):
    weights = run_dir / "checkpoints" / "last" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    _refused(["train", "--resume", str(run_dir), "train.epochs=2"], capsys, "SHA-256 differs")


def test_a_truncated_state_file_is_refused(run_dir, capsys):
    state = run_dir / "checkpoints" / "last" / "state.pt"
    state.write_bytes(state.read_bytes()[:100])
    _refused(["train", "--resume", str(run_dir), "train.epochs=2"], capsys, "corrupted")


def test_a_newer_checkpoint_format_is_refused(run_dir, capsys):
    path = run_dir / "checkpoints" / "last" / "state.pt"
    state = torch.load(path, weights_only=True)
    state["format_version"] = 99
    torch.save(state, path)
    _refused(["train", "--resume", str(run_dir)], capsys, "checkpoint format version 99")


def test_a_run_directory_of_another_format_version_is_refused(run_dir, capsys):
    meta = json.loads((run_dir / "meta.json").read_text())
    meta["format_version"] = 999
    (run_dir / "meta.json").write_text(json.dumps(meta))
    before = snapshot(run_dir)
    _refused(["train", "--resume", str(run_dir), "train.epochs=2"], capsys, "format version 999", "reads version 1")
    _refused(["eval", str(run_dir)], capsys, "format version 999")
    assert snapshot(run_dir) == before


def test_a_directory_that_is_not_a_run_is_refused(tmp_path, capsys):
    _refused(["train", "--resume", str(tmp_path)], capsys, "not a run directory")


def test_resume_may_not_change_the_arithmetic(run_dir, capsys):
    before = snapshot(run_dir)
    _refused(["train", "--resume", str(run_dir), "train.lr=0.5"], capsys, "train.lr: cannot change when resuming")
    assert snapshot(run_dir) == before


def test_save_refuses_non_finite_weights_and_keeps_the_old_checkpoint(tmp_path):
    good = {"w": torch.ones(3)}
    save_checkpoint(tmp_path / "last", good, {"epoch": 1})
    with pytest.raises(CheckpointError, match="non-finite"):
        save_checkpoint(tmp_path / "last", {"w": torch.tensor([1.0, float("nan"), 0.0])}, {"epoch": 2})
    weights, state = load_checkpoint(tmp_path / "last")
    assert state["epoch"] == 1 and torch.equal(weights["w"], good["w"])


def test_a_kill_between_the_two_renames_leaves_a_loadable_checkpoint(tmp_path):
    save_checkpoint(tmp_path / "last", {"w": torch.zeros(2)}, {"epoch": 1})
    save_checkpoint(tmp_path / "next", {"w": torch.ones(2)}, {"epoch": 2})
    # the state a kill leaves after "last -> last.old" and before "last.tmp -> last"
    os.replace(tmp_path / "last", tmp_path / "last.old")
    os.replace(tmp_path / "next", tmp_path / "last.tmp")
    weights, state = load_checkpoint(tmp_path / "last")
    assert state["epoch"] == 2 and torch.equal(weights["w"], torch.ones(2))
    # the next save cleans up and completes the swap
    save_checkpoint(tmp_path / "last", {"w": torch.full((2,), 3.0)}, {"epoch": 3})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]
    assert load_checkpoint(tmp_path / "last")[1]["epoch"] == 3


def test_a_second_kill_while_saving_after_an_interrupted_swap_keeps_the_newest_checkpoint(tmp_path, monkeypatch):
    # the state of a kill between the renames (epoch 2 complete in last.tmp, epoch 1 in last.old) ...
    save_checkpoint(tmp_path / "last", {"w": torch.zeros(2)}, {"epoch": 1})
    save_checkpoint(tmp_path / "next", {"w": torch.ones(2)}, {"epoch": 2})
    os.replace(tmp_path / "last", tmp_path / "last.old")
    os.replace(tmp_path / "next", tmp_path / "last.tmp")

    # ... then the resumed run is killed while writing its next checkpoint (after the weights file)
    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "last", {"w": torch.full((2,), 3.0)}, {"epoch": 3})
    monkeypatch.undo()
    weights, state = load_checkpoint(tmp_path / "last")  # epoch 2, not a half-written epoch 3 nor epoch 1
    assert state["epoch"] == 2 and torch.equal(weights["w"], torch.ones(2))


def test_a_half_written_tmp_is_ignored(tmp_path):
    save_checkpoint(tmp_path / "last", {"w": torch.zeros(2)}, {"epoch": 1})
    (tmp_path / "last.tmp").mkdir()
    (tmp_path / "last.tmp" / "model.safetensors").write_bytes(b"partial")
    assert load_checkpoint(tmp_path / "last")[1]["epoch"] == 1
