"""A short training run writes a complete run directory, and the numbers in it agree with each other."""

import json

import pytest
import torch

import lipschitz_rnn as lr
import lipschitz_rnn.train.loop as loop
from lipschitz_rnn.cli import main
from lipschitz_rnn.train import evaluate_run, load_checkpoint, load_config
from test_train_toytasks import read_jsonl, write_config

OVERRIDES = ["log.plots=true", "train.lr_milestones=[1]", "train.checkpoint_every_steps=3", "model.method=midpoint"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    directory = tmp_path_factory.mktemp("run")
    config = write_config(directory)
    assert main(["train", str(config), *OVERRIDES, "--out", str(directory / "run")]) == 0
    return config, directory / "run"


def test_the_run_directory_has_every_file(run):
    _, run_dir = run
    for name in [
        "config.toml",
        "meta.json",
        "metrics.jsonl",
        "summary.json",
        "train.log",
        "stability_start.json",
        "stability_end.json",
        "checkpoints/best/model.safetensors",
        "checkpoints/best/state.pt",
        "checkpoints/last/model.safetensors",
        "checkpoints/last/state.pt",
    ]:
        assert (run_dir / name).is_file(), name
    for name in ["learning_curves.png", "eigenvalues.png", "stability.png", "grad_norm.png"]:
        assert (run_dir / "plots" / name).read_bytes().startswith(b"\x89PNG"), name
    assert not list(run_dir.rglob("*.tmp")) and not list(run_dir.rglob("*.old"))


def test_config_toml_is_the_resolved_config(run):
    config, run_dir = run
    assert load_config(run_dir / "config.toml") == load_config(config, OVERRIDES)


def test_meta_records_versions_device_command_data_and_params(run):
    _, run_dir = run
    meta = json.loads((run_dir / "meta.json").read_text())
    assert (meta["format"], meta["format_version"]) == ("lipschitz-rnn/run", 1)
    assert meta["package_version"] == lr.__version__ and meta["torch_version"] == torch.__version__
    assert "git_commit" in meta and meta["device"] == "cpu" and meta["world_size"] == 1
    assert meta["command"][:2] == ["lipschitz-rnn", "train"] and "model.method=midpoint" in meta["command"]
    assert meta["data"]["source"] == "synthetic (toy_sign)" and meta["data"]["metric"] == "accuracy"
    # 2N^2 + (p + 1)N + (N + 1)q with N = 8, p = 2, q = 2
    assert meta["model"] == {
        "name": "lipschitz",
        "hidden_size": 8,
        "num_layers": 1,
        "method": "midpoint",
        "params": 170,
        "free_params": 170,  # 0 < β < 1: A and W keep all N² entries of their free matrices
    }


def test_metrics_has_one_record_per_epoch_with_step_decay_and_stability(run):
    _, run_dir = run
    records = read_jsonl(run_dir / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2]
    assert [r["lr"] for r in records] == pytest.approx([0.01, 0.001])  # x0.1 after epoch 1
    assert [r["steps"] for r in records] == [8, 16]  # 128 samples / batch 16
    for r in records:
        for split in ("val", "test"):
            assert set(r[split]) == {"loss", "accuracy", "samples"} and 0 <= r[split]["accuracy"] <= 100
        # training adds the gradient norm before clipping: its mean over the epoch's steps and the largest step's
        assert set(r["train"]) == {"loss", "accuracy", "samples", "grad_norm_mean", "grad_norm_max"}
        assert 0 <= r["train"]["accuracy"] <= 100
        assert 0 < r["train"]["grad_norm_mean"] <= r["train"]["grad_norm_max"]
        assert (r["train"]["samples"], r["val"]["samples"], r["test"]["samples"]) == (128, 48, 48)
        assert r["epoch_time_s"] > 0 and r["ms_per_step"] > 0
        assert set(r["stability"]["layer0"]) == {
            "max_re_eig_A",
            "max_re_eig_W",
            "lambda_max_A_sym",
            "norm_A",
            "norm_W",
            "c1_margin",
            "max_abs_R_eps_lambda_D0",
        }
        s = r["stability"]["layer0"]
        assert s["c1_margin"] == pytest.approx(-s["lambda_max_A_sym"] - s["norm_W"])
        # the Euler step's largest |1 + ελ(A)|: near 1 at γ = 0.001, where the Euler region is tangent to the
        # imaginary axis (REFERENCE §2's example is 1.00042)
        assert 0.9 < s["max_abs_R_eps_lambda_D0"] < 1.01


def test_summary_reports_best_validation_and_last_epoch_test_metrics(run):
    _, run_dir = run
    summary = json.loads((run_dir / "summary.json").read_text())
    records = read_jsonl(run_dir / "metrics.jsonl")
    best = max(records, key=lambda r: r["val"]["accuracy"])  # first maximum wins
    assert summary["status"] == "completed" and summary["epochs"] == 2
    assert summary["best_epoch"] == best["epoch"]
    assert summary["test_best_val"] == best["test"]["accuracy"]
    assert summary["test_last"] == records[-1]["test"]["accuracy"]
    assert summary["params"] == summary["free_params"] == 170
    assert summary["seed"] == 0 and summary["method"] == "midpoint"
    assert summary["time_per_epoch_s"] == pytest.approx(sum(r["epoch_time_s"] for r in records) / 2)


def test_checkpoints_hold_their_epoch_and_load_with_weights_only(run):
    _, run_dir = run
    summary = json.loads((run_dir / "summary.json").read_text())
    state = torch.load(run_dir / "checkpoints" / "last" / "state.pt", weights_only=True)
    assert state["format"] == "lipschitz-rnn/checkpoint" and state["epoch"] == 2 and state["step_in_epoch"] == 0
    _, best = load_checkpoint(run_dir / "checkpoints" / "best")
    assert best["epoch"] == summary["best_epoch"]
    assert set(state) >= {"optimizer", "rng", "history", "best", "global_step", "running", "weights_sha256"}


def test_best_checkpoint_keeps_weights_and_record_but_no_optimizer_state(run):
    _, run_dir = run
    _, best = load_checkpoint(run_dir / "checkpoints" / "best")
    assert set(best) == {"epoch", "global_step", "best", "format", "format_version", "weights_sha256"}
    assert best["best"]["epoch"] == best["epoch"] and best["global_step"] > 0
    last = run_dir / "checkpoints" / "last" / "state.pt"
    assert (run_dir / "checkpoints" / "best" / "state.pt").stat().st_size < last.stat().st_size / 4
    # what `lipschitz-rnn eval` needs: the weights load into the model and score the recorded test metric
    result = evaluate_run(run_dir, "best", "test", device="cpu")
    assert result["epoch"] == best["epoch"]
    assert result["accuracy"] == pytest.approx(best["best"]["test"], abs=1e-9)


def test_stability_reports_before_and_after_training_differ(run):
    _, run_dir = run
    start = json.loads((run_dir / "stability_start.json").read_text())["layer0"]
    end = json.loads((run_dir / "stability_end.json").read_text())["layer0"]
    assert len(start["eigenvalues"]["A"]) == len(end["eigenvalues"]["W"]) == 8
    assert start["eigenvalues"]["A"] != end["eigenvalues"]["A"]
    last = read_jsonl(run_dir / "metrics.jsonl")[-1]["stability"]["layer0"]
    assert end["c1"]["margin"] == pytest.approx(last["c1_margin"])
    assert end["discrete"]["D=0"]["max_abs_R"] == pytest.approx(last["max_abs_R_eps_lambda_D0"])


def test_the_log_has_a_line_per_epoch_and_the_result(run):
    _, run_dir = run
    text = (run_dir / "train.log").read_text()
    assert "epoch 1/2 |" in text and "epoch 2/2 |" in text and "ms/step" in text
    assert "at the best-validation epoch" in text and str(run_dir) in text


def test_a_new_run_refuses_a_non_empty_directory(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    assert main(["train", str(write_config(tmp_path)), "--out", str(tmp_path / "out")]) == 2
    assert "not empty" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["notes.txt"]


def test_a_bad_config_key_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["train", str(write_config(tmp_path)), "train.lrr=0.1", "--out", str(out)]) == 2
    assert "train.lrr: unknown key; did you mean 'lr'?" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(("task", "model", "metric"), [("toy_chars", "lstm", "bpc"), ("toy_regress", "gru", "mse")])
def test_stateful_and_regression_tasks_train_with_their_metric(tmp_path, task, model, metric):
    out = tmp_path / "run"
    assert main(["train", str(write_config(tmp_path, task=task, model=model)), "--out", str(out)]) == 0
    record = read_jsonl(out / "metrics.jsonl")[-1]
    assert set(record["test"]) == {"loss", metric, "samples"} and "stability" not in record
    if metric == "bpc":
        assert record["test"]["bpc"] == pytest.approx(record["test"]["loss"] / torch.log(torch.tensor(2.0)).item())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["higher_is_better"] is False and summary["test_last"] == record["test"][metric]


def test_a_task_without_validation_split_reports_the_last_epoch(tmp_path):
    out = tmp_path / "run"
    assert main(["train", str(write_config(tmp_path)), "task.val=false", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test_best_val"] is None and summary["test_last"] is not None
    assert not (out / "checkpoints" / "best").exists()
    assert "val" not in read_jsonl(out / "metrics.jsonl")[0]


def test_tensorboard_event_files_hold_the_epoch_records(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    assert main(["train", str(write_config(tmp_path)), "log.tensorboard=true", "--out", str(out)]) == 0
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert "stability/layer0/c1_margin" in events.Tags()["scalars"]
    recorded = [r["test"]["accuracy"] for r in read_jsonl(out / "metrics.jsonl")]
    assert [e.step for e in events.Scalars("test/accuracy")] == [1, 2]
    assert [e.value for e in events.Scalars("test/accuracy")] == pytest.approx(recorded, rel=1e-6)


def test_stability_numbers_can_be_switched_off(tmp_path):
    out = tmp_path / "run"
    assert main(["train", str(write_config(tmp_path)), "log.stability=false", "log.plots=true", "--out", str(out)]) == 0
    assert "stability" not in read_jsonl(out / "metrics.jsonl")[0]
    assert not (out / "stability_start.json").exists() and not (out / "stability_end.json").exists()
    # the stability plots go with the numbers; the training curves stay
    assert sorted(p.name for p in (out / "plots").iterdir()) == ["grad_norm.png", "learning_curves.png"]


def test_a_cosine_schedule_sets_each_epochs_rate_and_records_it(tmp_path):
    out = tmp_path / "run"
    overrides = ["train.epochs=3", "train.lr_schedule=cosine", "train.lr_min=0.001"]
    assert main(["train", str(write_config(tmp_path)), *overrides, "--out", str(out)]) == 0
    # lr_min + (lr - lr_min) (1 + cos(pi e / 3)) / 2 with lr = 0.01: factors 1, 3/4, 1/4
    expected = [0.01, 0.001 + 0.009 * 0.75, 0.001 + 0.009 * 0.25]
    assert [r["lr"] for r in read_jsonl(out / "metrics.jsonl")] == pytest.approx(expected)
    optimizer = torch.load(out / "checkpoints" / "last" / "state.pt", weights_only=True)["optimizer"]
    assert optimizer["param_groups"][0]["lr"] == pytest.approx(expected[-1])  # the rate the optimizer ran with


def test_the_recorded_gradient_norm_is_the_norm_before_clipping(tmp_path):
    # clipped norms could not exceed the threshold; the record keeps what the optimizer was given before clipping
    config = write_config(tmp_path)
    overrides = ["train.epochs=1", "train.clip_grad_norm=1e-6", "log.plots=false"]
    assert main(["train", str(config), *overrides, "--out", str(tmp_path / "run")]) == 0
    (record,) = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert record["train"]["grad_norm_mean"] > 1e-3


def test_a_warmup_ramp_gives_each_optimizer_step_its_rate(tmp_path, monkeypatch):
    used = []
    real = loop._make_optimizer

    def recording_optimizer(model, cfg):
        optimizer = real(model, cfg)
        optimizer.register_step_pre_hook(lambda opt, *_: used.append(opt.param_groups[0]["lr"]))
        return optimizer

    monkeypatch.setattr(loop, "_make_optimizer", recording_optimizer)
    out = tmp_path / "run"
    # 4 steps per epoch, lr 0.01, a ramp over the first 6 steps; the decay after epoch 2 applies after the ramp
    overrides = ["train.epochs=3", "train.limit_train_batches=4", "train.warmup_steps=6", "train.lr_milestones=[2]"]
    assert main(["train", str(write_config(tmp_path)), *overrides, "log.plots=false", "--out", str(out)]) == 0
    ramp = [0.01 * (g + 1) / 6 for g in range(6)]
    assert used == pytest.approx([*ramp, 0.01, 0.01, 0.001, 0.001, 0.001, 0.001])
    # each epoch's record holds the rate of its last step
    assert [r["lr"] for r in read_jsonl(out / "metrics.jsonl")] == pytest.approx([ramp[3], 0.01, 0.001])
