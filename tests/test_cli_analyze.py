"""``lipschitz-rnn analyze``: trained runs in, Hessian and perturbation results (JSON and plots) out."""

import json

import pytest

from lipschitz_rnn.cli import main
from lipschitz_rnn.train import load_config, train
from lipschitz_rnn.train.analyze import analyze_runs
from test_train_toytasks import write_config


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    runs = []
    for model in ("lipschitz", "antisymmetric"):
        config = write_config(root, name=f"toy_{model}", model=model)
        cfg = load_config(config, ["train.epochs=1", "log.plots=false"])
        train(cfg, root / model, command=["test"])
        runs.append(root / model)
    return runs


def test_analyze_writes_one_json_per_run_and_combined_plots(two_runs, tmp_path):
    out = tmp_path / "analysis"
    small = ["--samples", "64", "--draws", "2", "--eval-samples", "32", "--lanczos-steps", "20", "--num-probes", "8",
             "--density-runs", "1", "--density-steps", "8", "--input-samples", "8", "--batch-size", "16"]  # fmt: skip
    code = main(["analyze", *map(str, two_runs), "--out", str(out), *small])
    assert code == 0
    results = {path.stem: json.loads(path.read_text()) for path in out.glob("*.json")}
    assert set(results) == {"toy_lipschitz-seed0", "toy_antisymmetric-seed0"}
    for result in results.values():
        hessian = result["hessian"]
        assert hessian["lambda_max"] is not None and hessian["trace"]["estimate"] is not None
        assert result["run"]["checkpoint"] == "best"
        assert result["stability"]["layer0"]["norm_W"] > 0  # both cells have certificates
        for kind in ("gaussian", "salt_pepper", "parameter"):
            curve = result["perturbation"]["curves"][kind]
            assert curve["levels"][0] == 0 and curve["mean"][0] == result["perturbation"]["clean"]
    pytest.importorskip("matplotlib")
    assert (out / "perturbation.png").stat().st_size > 10_000
    assert (out / "hessian_density.png").stat().st_size > 10_000


def test_a_single_run_writes_into_its_own_folder(two_runs):
    results = analyze_runs(
        [two_runs[0]], parts=("perturbation",), samples=32, draws=1, eval_samples=16, batch_size=16, log=None
    )
    assert list(results) == ["toy_lipschitz-seed0"]
    assert (two_runs[0] / "analysis" / "toy_lipschitz-seed0.json").is_file()


def test_bad_input_is_refused_before_any_work(two_runs, tmp_path, capsys):
    assert main(["analyze", str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err
    with pytest.raises(ValueError, match="several runs: pass out_dir"):
        analyze_runs(two_runs)


SMALL = ["--samples", "32", "--draws", "1", "--eval-samples", "16", "--batch-size", "16"]


def test_an_existing_analysis_is_kept_unless_overwrite(two_runs, tmp_path, capsys):
    out = tmp_path / "analysis"
    assert main(["analyze", str(two_runs[0]), "--out", str(out), "--parts", "perturbation", *SMALL]) == 0
    first = (out / "toy_lipschitz-seed0.json").read_text()
    # a second part into the same folder would have replaced the first: refused before any work
    assert main(["analyze", str(two_runs[0]), "--out", str(out), "--parts", "stability", *SMALL]) == 2
    assert "toy_lipschitz-seed0.json exists" in capsys.readouterr().err
    assert (out / "toy_lipschitz-seed0.json").read_text() == first
    assert main(["analyze", str(two_runs[0]), "--out", str(out), "--parts", "stability", "--overwrite", *SMALL]) == 0
    assert "perturbation" not in json.loads((out / "toy_lipschitz-seed0.json").read_text())


def test_two_runs_with_one_label_are_refused(two_runs, tmp_path, capsys):
    out = tmp_path / "analysis"
    assert main(["analyze", str(two_runs[0]), str(two_runs[0]), "--out", str(out), *SMALL]) == 2
    assert "two runs share the label 'toy_lipschitz-seed0'" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--parts", ","], "parts is empty"),
        (["--parts", "hessian,perturbation", "--draws", "0"], "draws must be"),
        (["--parts", "hessian", "--density-steps", "0"], "density_steps must be"),
        (["--parts", "hessian", "--num-probes", "1"], "num_probes must be"),
    ],
)
def test_every_option_is_checked_before_any_part_runs(two_runs, tmp_path, capsys, monkeypatch, options, message):
    import lipschitz_rnn.analysis.report as report

    monkeypatch.setattr(report, "fixed_batches", lambda *a, **k: pytest.fail("work started before the checks"))
    out = tmp_path / "analysis"
    assert main(["analyze", str(two_runs[0]), "--out", str(out), "--samples", "32", *options]) == 2
    assert message in capsys.readouterr().err
    assert not list(out.glob("*.json"))


def test_the_default_parts_are_every_part_run_analysis_knows():
    from lipschitz_rnn.analysis.report import PARTS
    from lipschitz_rnn.cli import _parser

    assert tuple(_parser().parse_args(["analyze", "RUN"]).parts.split(",")) == PARTS
