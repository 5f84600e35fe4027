"""scripts/val_search.py: trials from a spec, and the choice made on validation only."""

import json
from pathlib import Path

import pytest

from lipschitz_rnn.train.config import load_config
from scripts_loader import load_script

ROOT = Path(__file__).resolve().parents[1]
val_search = load_script("scripts/val_search.py", "val_search")
SPECS = sorted((ROOT / "configs" / "searches").glob("*.toml"))


def _spec(tmp_path, grid='"model.eps" = [0.01, 0.1]\n"train.lr" = [0.001, 0.003]\n', apply=""):
    path = tmp_path / "spec.toml"
    path.write_text(
        '[search]\nname = "toy"\nbase = "configs/smnist/antisymmetric_n128.toml"\nseed = 0\n'
        'overrides = ["train.epochs=10"]\n[grid]\n' + grid + "[apply]\n"
        'configs = ["configs/smnist/antisymmetric_n128.toml", "configs/pmnist/antisymmetric_n128.toml"]\n'
        "seeds = [0, 1]\n" + apply
    )
    return str(path)


def _finish(runs, name, val_best, test, higher=True, status="completed", seed=0):
    run = runs / name / f"seed{seed}"
    run.mkdir(parents=True)
    summary = {"status": status, "val_best": val_best, "best_epoch": 3, "epochs": 10, "test_best_val": test,
               "metric": "accuracy", "higher_is_better": higher, "time_per_epoch_s": 2.0}  # fmt: skip
    (run / "summary.json").write_text(json.dumps(summary))
    (run / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "val": {"accuracy": val_best}}) + "\n")


def test_trials_cover_the_grid_in_order_as_queue_jobs(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    jobs = val_search.trial_jobs(val_search.load_spec(_spec(tmp_path)))
    assert jobs == [
        "configs/smnist/antisymmetric_n128.toml:0:train.epochs=10,model.eps=0.01,train.lr=0.001,"
        "experiment.name=search-toy-eps0.01-lr0.001",
        "configs/smnist/antisymmetric_n128.toml:0:train.epochs=10,model.eps=0.01,train.lr=0.003,"
        "experiment.name=search-toy-eps0.01-lr0.003",
        "configs/smnist/antisymmetric_n128.toml:0:train.epochs=10,model.eps=0.1,train.lr=0.001,"
        "experiment.name=search-toy-eps0.1-lr0.001",
        "configs/smnist/antisymmetric_n128.toml:0:train.epochs=10,model.eps=0.1,train.lr=0.003,"
        "experiment.name=search-toy-eps0.1-lr0.003",
    ]


def test_select_ranks_by_validation_never_test_and_prints_the_final_jobs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    runs = tmp_path / "runs"
    # the best test number belongs to a trial with a worse validation number: it must not win
    _finish(runs, "search-toy-eps0.01-lr0.001", 90.0, 99.0)
    _finish(runs, "search-toy-eps0.01-lr0.003", 95.5, 80.0)
    _finish(runs, "search-toy-eps0.1-lr0.001", 95.5, 85.0)  # a tie: the earlier trial wins
    _finish(runs, "search-toy-eps0.1-lr0.003", None, None, status="diverged")
    val_search.main(["select", _spec(tmp_path), "--runs", str(runs), "--record", str(tmp_path / "rec")])
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("# toy: chose model.eps=0.01 train.lr=0.003 (val 95.5)")
    assert printed[1:] == [
        "configs/smnist/antisymmetric_n128.toml:0,1:model.eps=0.01,train.lr=0.003",
        "configs/pmnist/antisymmetric_n128.toml:0,1:model.eps=0.01,train.lr=0.003",
    ]
    record = json.loads((tmp_path / "rec" / "toy.json").read_text())
    assert record["chosen"]["name"] == "search-toy-eps0.01-lr0.003"
    assert [t["status"] for t in record["trials"]] == ["completed"] * 3 + ["diverged"]
    assert record["trials"][1]["val_curve"] == [95.5]
    assert "test" not in json.dumps(record["trials"])  # the record holds no test numbers


def test_lower_is_better_and_missing_trials(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    spec = val_search.load_spec(_spec(tmp_path, grid='"model.eps" = [0.01, 0.1, 1.0]\n'))
    runs = tmp_path / "runs"
    _finish(runs, "search-toy-eps0.01", 1.60, 1.5, higher=False)
    _finish(runs, "search-toy-eps0.1", 1.45, 1.7, higher=False)
    with pytest.raises(SystemExit, match="unfinished trials.*search-toy-eps1.0"):
        val_search.select(spec, runs)
    record = val_search.select(spec, runs, partial=True)
    assert record["chosen"]["overrides"] == ["model.eps=0.1"] and record["missing"] == ["search-toy-eps1.0"]


def test_skip_unchanged_keeps_the_rows_of_configs_that_already_hold_the_choice(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    runs = tmp_path / "runs"
    _finish(runs, "search-toy-eps0.1-lr0.001", 95.0, 90.0)  # the committed configs' own eps 0.1, lr 0.001
    _finish(runs, "search-toy-eps0.01-lr0.001", 94.0, 90.0)
    grid = '"model.eps" = [0.1, 0.01]\n"train.lr" = [0.001]\n'
    for skip, expected in [
        ("false", "configs/smnist/antisymmetric_n128.toml:0,1:model.eps=0.1,train.lr=0.001"),
        ("true", "# configs/smnist/antisymmetric_n128.toml already holds model.eps=0.1 train.lr=0.001"),
    ]:
        record = val_search.select(val_search.load_spec(_spec(tmp_path, grid, f"skip_unchanged = {skip}\n")), runs)
        assert val_search.final_jobs(record)[0].startswith(expected)
    assert record["apply"]["skip_unchanged"] is True
    record["chosen"]["overrides"] = ["model.eps=0.01", "train.lr=0.001"]  # a different choice is run even when skipping
    expected = "configs/pmnist/antisymmetric_n128.toml:0,1:model.eps=0.01,train.lr=0.001"
    assert val_search.final_jobs(record)[1] == expected


def test_a_variant_names_the_final_runs_apart_from_the_rows(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    runs = tmp_path / "runs"
    _finish(runs, "search-toy-optimizeradagrad-lr0.01", 95.0, 90.0)
    grid = '"train.optimizer" = ["adagrad"]\n"train.lr" = [0.01]\n'
    record = val_search.select(val_search.load_spec(_spec(tmp_path, grid, 'variant = "adagrad"\n')), runs)
    assert val_search.final_jobs(record) == [
        "configs/smnist/antisymmetric_n128.toml:0,1:train.optimizer=adagrad,train.lr=0.01,"
        "experiment.name=smnist_antisymmetric_n128_adagrad",
        "configs/pmnist/antisymmetric_n128.toml:0,1:train.optimizer=adagrad,train.lr=0.01,"
        "experiment.name=pmnist_antisymmetric_n128_adagrad",
    ]
    with pytest.raises(SystemExit, match="variant must be letters"):
        val_search.load_spec(_spec(tmp_path, grid, 'variant = "a,b"\n'))


def _variant_spec(tmp_path, name, variant, seeds="[0, 1]"):
    path = tmp_path / f"{name}.toml"
    path.write_text(
        f'[search]\nname = "{name}"\nbase = "configs/smnist/antisymmetric_n128.toml"\n[grid]\n"train.lr" = [0.01]\n'
        f'[apply]\nconfigs = ["configs/smnist/antisymmetric_n128.toml"]\nseeds = {seeds}\nvariant = "{variant}"\n'
    )
    return str(path)


def test_confirm_keeps_the_row_unless_a_variant_beats_it_at_full_length(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    runs, record = tmp_path / "runs", tmp_path / "rec"
    record.mkdir()
    for name in ("sgd_search", "adagrad_search"):
        (record / f"{name}.json").write_text(json.dumps({"chosen": {"overrides": ["train.lr=0.01"]}}))
    specs = [_variant_spec(tmp_path, "sgd_search", "sgd"), _variant_spec(tmp_path, "adagrad_search", "adagrad")]
    row = "smnist_antisymmetric_n128"
    for seed, (r, sgd, adagrad) in enumerate([(97.0, 99.0, 97.5), (97.0, 95.0, 96.9)]):
        _finish(runs, row, r, 0.0, seed=seed)
        _finish(runs, f"{row}_sgd", sgd, 0.0, seed=seed)
        _finish(runs, f"{row}_adagrad", adagrad, 0.0, seed=seed)
    # means: row 97.0, sgd 97.0 (a tie keeps the row), adagrad 97.2: adagrad is adopted, on means over the seeds
    val_search.main(["confirm", *specs, "--runs", str(runs), "--record", str(record)])
    printed = capsys.readouterr().out
    assert printed.startswith("configs/smnist/antisymmetric_n128.toml: adopt the choice of adagrad_search")
    verdict = json.loads((record / "sgd_search.json").read_text())["confirmed"][
        "configs/smnist/antisymmetric_n128.toml"
    ]
    assert verdict["adopt"] == "adagrad_search" and verdict["row"] == {"name": row, "val_best": 97.0}
    assert [v["val_best"] for v in verdict["variants"]] == [97.0, pytest.approx(97.2)]

    # a diverged seed rules its variant out; the row then stands
    (runs / f"{row}_adagrad" / "seed1" / "summary.json").write_text(json.dumps({"status": "diverged", "val_best": 99}))
    verdicts = val_search.confirm([val_search.load_spec(p) for p in specs], runs)
    assert verdicts["configs/smnist/antisymmetric_n128.toml"]["adopt"] is None


def test_confirm_refuses_unfinished_runs_and_specs_without_a_variant(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    runs = tmp_path / "runs"
    _finish(runs, "smnist_antisymmetric_n128", 97.0, 0.0)
    spec = val_search.load_spec(_variant_spec(tmp_path, "s", "sgd", seeds="[0]"))
    with pytest.raises(SystemExit, match="unfinished final runs of 's': smnist_antisymmetric_n128_sgd/seed0"):
        val_search.confirm([spec], runs)
    with pytest.raises(SystemExit, match="has no .apply. variant"):
        val_search.confirm([val_search.load_spec(_spec(tmp_path))], runs)
    # lower is better (bits per character): 1.5 beats the row's 1.6
    _finish(runs, "smnist_antisymmetric_n128_sgd", 1.5, 0.0, higher=False)
    (runs / "smnist_antisymmetric_n128" / "seed0" / "summary.json").write_text(
        json.dumps({"status": "completed", "val_best": 1.6, "higher_is_better": False})
    )
    assert val_search.confirm([spec], runs)["configs/smnist/antisymmetric_n128.toml"]["adopt"] == "s"


def test_confirm_counts_a_choice_of_the_rows_own_setting_as_the_row(tmp_path, monkeypatch, capsys):
    # skip_unchanged: the search chose what the row already holds, so it ran no final run and the row stands
    monkeypatch.chdir(ROOT)
    runs, record = tmp_path / "runs", tmp_path / "rec"
    record.mkdir()
    path = tmp_path / "own.toml"
    path.write_text(
        '[search]\nname = "own"\nbase = "configs/smnist/antisymmetric_n128.toml"\n'
        '[grid]\n"model.init_std" = [1.0, 2.0]\n'
        '[apply]\nconfigs = ["configs/smnist/antisymmetric_n128.toml"]\nseeds = [0]\nvariant = "init"\n'
        "skip_unchanged = true\n"
    )
    (record / "own.json").write_text(json.dumps({"chosen": {"overrides": ["model.init_std=1.0"]}}))
    _finish(runs, "smnist_antisymmetric_n128", 97.0, 0.0)
    val_search.main(["confirm", str(path), "--runs", str(runs), "--record", str(record)])
    assert (
        "the row smnist_antisymmetric_n128 stands (val 97.0; own chose the row's own setting)"
        in capsys.readouterr().out
    )
    verdict = json.loads((record / "own.json").read_text())["confirmed"]["configs/smnist/antisymmetric_n128.toml"]
    assert verdict["adopt"] is None
    assert verdict["variants"] == [
        {"search": "own", "name": "smnist_antisymmetric_n128", "val_best": 97.0, "is_row": True}
    ]
    # a choice the row does not hold still needs its variant run
    (record / "own.json").write_text(json.dumps({"chosen": {"overrides": ["model.init_std=2.0"]}}))
    with pytest.raises(SystemExit, match="unfinished final runs of 'own': smnist_antisymmetric_n128_init/seed0"):
        val_search.main(["confirm", str(path), "--runs", str(runs), "--record", str(record)])


RECORDS = sorted((ROOT / "results" / "search").glob("*.json"))


@pytest.mark.parametrize("path", RECORDS, ids=lambda p: p.stem)
def test_committed_configs_agree_with_the_committed_verdicts(path, monkeypatch):
    """A config holds a variant search's choice exactly when `confirm` recorded that choice as adopted."""
    monkeypatch.chdir(ROOT)
    record = json.loads(path.read_text())
    for config, verdict in record.get("confirmed", {}).items():
        adopted = verdict["adopt"] == record["search"]["name"]
        own = next(v for v in verdict["variants"] if v["search"] == record["search"]["name"])
        # a choice that is the row's own setting (skip_unchanged) is held without being adopted
        assert val_search.holds(config, record["chosen"]["overrides"]) == (adopted or own.get("is_row", False)), config


def test_bad_specs_are_named(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit, match="must be a non-empty list"):
        val_search.load_spec(_spec(tmp_path, grid='"model.eps" = 0.1\n'))
    with pytest.raises(SystemExit, match="may not contain"):
        val_search.load_spec(_spec(tmp_path, grid='"train.lr_milestones" = ["[60,90]"]\n'))


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_committed_specs_give_valid_trial_and_final_configs(path, monkeypatch):
    monkeypatch.chdir(ROOT)
    spec = val_search.load_spec(str(path))
    jobs = val_search.trial_jobs(spec)
    assert len(jobs) >= 2
    for job in jobs:
        config, _seed, overrides = job.split(":")
        cfg = load_config(config, overrides.split(","))
        # a trial is never longer than the run it chooses for (most are short proxies)
        assert cfg.experiment.name.startswith("search-") and cfg.train.epochs <= load_config(config).train.epochs
    for config in spec["apply"]["configs"]:  # every grid value is a valid override of every target
        for trial in val_search.trials(spec):
            load_config(config, trial["overrides"])
    record = {"apply": spec["apply"], "chosen": {"overrides": val_search.trials(spec)[0]["overrides"]}}
    for job in val_search.final_jobs(record):  # and the final runs resolve, under their own names if a variant
        if not job.startswith("#"):
            config, _seeds, overrides = job.split(":")
            name = load_config(config, overrides.split(",")).experiment.name
            assert (name != load_config(config).experiment.name) == bool(spec["apply"].get("variant"))
