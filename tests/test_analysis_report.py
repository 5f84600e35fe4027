"""run_analysis on a toy task (JSON-able, consistent with the parts it is made of), plots, and doc examples."""

import doctest
import importlib
import json
import sys

import pytest
import torch

import lipschitz_rnn as lr
from lipschitz_rnn.analysis import (
    EigenResult,
    evaluate,
    fixed_batches,
    hessian_eigenvalues,
    hessian_trace,
    perturbation_curves,
    plot_hessian_densities,
    plot_perturbation_curves,
    run_analysis,
)
from lipschitz_rnn.data.base import SequenceTask

analysis_report = importlib.import_module("lipschitz_rnn.analysis.report")

pytestmark = [
    pytest.mark.filterwarnings("ignore::lipschitz_rnn.StepSizeWarning"),
    pytest.mark.usefixtures("one_thread"),
]

STEPS, CLASSES = 6, 3


class ToyTask(SequenceTask):
    """In-memory sequences in [0, 1]: training order shuffled by (seed, epoch), test in a fixed order."""

    def __init__(self, train=40, test=30):
        super().__init__("toy", 1, CLASSES, STEPS, "accuracy", "last", "random numbers", sizes={"train": train})
        generator = torch.Generator().manual_seed(0)
        self.data = {
            split: (torch.rand(n, STEPS, 1, generator=generator), torch.randint(0, CLASSES, (n,), generator=generator))
            for split, n in (("train", train), ("test", test))
        }

    def batches(self, split, batch_size, *, epoch=0, seed=0, start=0, rank=0, world_size=1):
        x, y = self.data[split]
        order = torch.arange(len(x))
        if split == "train":
            order = torch.randperm(len(x), generator=torch.Generator().manual_seed(1000 * seed + epoch))
        for i in range(start * batch_size, len(x), batch_size):
            index = order[i : i + batch_size]
            yield x[index], y[index]

    def num_batches(self, split, batch_size):
        return -(-len(self.data[split][0]) // batch_size)


def model():
    torch.manual_seed(0)
    return lr.SequenceClassifier(lr.build_model("lipschitz", 1, 3, init_std=1.0, eps=0.3), CLASSES).double()


SMALL = {
    "samples": 24,
    "batch_size": 8,
    "lanczos_steps": 30,
    "tol": 1e-6,
    "num_probes": 4,
    "density_runs": 2,
    "density_steps": 6,
    "input_samples": 5,
    "draws": 2,
    "levels": {"gaussian": [0.0, 0.5], "salt_pepper": [0.0, 0.3], "parameter": [0.0, 0.5]},
}


@pytest.fixture(scope="module")
def analysis():
    return run_analysis(model(), ToyTask(), seed=0, **SMALL)


def test_fixed_batches_are_a_seeded_subset_of_the_training_split():
    task = ToyTask()
    first = fixed_batches(task, 20, batch_size=8, seed=0)
    assert [len(x) for x, _ in first] == [8, 8, 4]
    again = fixed_batches(task, 20, batch_size=8, seed=0)
    other = fixed_batches(task, 20, batch_size=8, seed=1)
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(first, again))
    assert not torch.equal(torch.cat([x for x, _ in first]), torch.cat([x for x, _ in other]))


def test_a_task_as_data_means_its_first_samples_in_the_seeded_order():
    task, net = ToyTask(), model()
    batches = fixed_batches(task, 16, batch_size=256, seed=2)
    from_task = hessian_trace(net, None, task, num_probes=3, seed=2, samples=16)
    from_batches = hessian_trace(net, None, batches, num_probes=3, seed=2)
    torch.testing.assert_close(from_task.samples, from_batches.samples)


def test_run_analysis_is_json_able_and_has_every_part(analysis):
    text = json.dumps(analysis, allow_nan=False)
    assert set(json.loads(text)) >= {"task", "model", "settings", "definitions", "caveats", "seconds"}
    assert set(analysis) >= {"hessian", "input_hessian", "perturbation", "stability"}
    assert analysis["model"]["num_parameters"] == 2 * 9 + 2 * 3 + 4 * CLASSES
    assert analysis["settings"]["levels"]["gaussian"] == [0.0, 0.5]


def test_run_analysis_hessian_numbers_are_those_of_the_parts(analysis):
    net, batches = model(), fixed_batches(ToyTask(), 24, batch_size=8, seed=0)
    hessian = analysis["hessian"]
    assert hessian["samples"] == 24 and hessian["dim"] == analysis["model"]["num_parameters"]
    top = hessian_eigenvalues(net, None, batches, which="largest", tol=1e-9)
    bottom = hessian_eigenvalues(net, None, batches, which="smallest", tol=1e-9)
    assert hessian["lambda_max"] == pytest.approx(float(top.eigenvalues[0]), rel=1e-4)
    assert hessian["lambda_min"] == pytest.approx(float(bottom.eigenvalues[0]), rel=1e-4)
    big, small = sorted([abs(hessian["lambda_max"]), abs(hessian["lambda_min"])], reverse=True)
    assert hessian["condition_number"] == pytest.approx(big / small)
    assert hessian["trace"]["estimate"] == hessian_trace(net, None, batches, num_probes=4, seed=0).estimate
    assert len(hessian["density"]["grid"]) == len(hessian["density"]["density"])
    assert hessian["loss"] > 0 and hessian["grad_norm"] > 0


def test_run_analysis_withholds_the_condition_number_of_an_unresolved_lambda_min(monkeypatch):
    # as for the plain ASR sMNIST model: Lanczos met tol * ||H|| with lambda_min 0.03 +- 0.6
    def extremes(*args, **kwargs):
        def result(which, value, residual):
            return EigenResult(which, torch.tensor([value]), torch.tensor([residual]), True, 3, 1e-3, 9)

        return result("largest", 3337.0, 0.38), result("smallest", 0.03, 0.6)

    monkeypatch.setattr(analysis_report, "hessian_extreme_eigenvalues", extremes)
    small = {k: v for k, v in SMALL.items() if k not in ("input_samples", "draws", "levels")}
    result = run_analysis(model(), ToyTask(), parts=["hessian"], seed=0, **small)
    assert result["hessian"]["lambda_min"] == pytest.approx(0.03) and result["hessian"]["condition_number"] is None
    assert any("lambda_min not resolved" in caveat for caveat in result["caveats"])


def test_run_analysis_input_hessian_summaries(analysis):
    part = analysis["input_hessian"]
    assert part["samples"] == 5 and part["dim"] == STEPS
    assert len(part["lambda_max"]["per_sample"]) == 5
    assert part["lambda_max"]["min"] <= part["lambda_max"]["mean"] <= part["lambda_max"]["max"]
    assert len(part["trace"]["per_sample"]) == 5


def test_run_analysis_perturbation_matches_perturbation_curves(analysis):
    net, task = model(), ToyTask()
    part = analysis["perturbation"]
    assert part["clean"] == evaluate(net, task)
    curves = perturbation_curves(net, task, levels=SMALL["levels"], draws=2, seed=0, batch_size=SMALL["batch_size"])
    for kind, curve in curves.items():
        assert part["curves"][kind]["draws"] == curve.draws
        assert part["curves"][kind]["mean"][0] == part["clean"]


def test_run_analysis_stability_is_the_report_of_each_certified_cell(analysis):
    net = model()
    expected = lr.stability_report(net.rnn.cells[0]).to_dict()
    assert list(analysis["stability"]) == ["layer0"]
    assert analysis["stability"]["layer0"] == json.loads(json.dumps(expected))
    assert analysis["stability"]["layer0"]["c1"]["margin"] == pytest.approx(expected["c1"]["margin"])


def test_run_analysis_stability_of_a_model_without_certificates_is_empty_and_says_so():
    torch.manual_seed(0)
    lstm = lr.SequenceClassifier(lr.build_model("lstm", 1, 3), CLASSES).double()
    result = run_analysis(lstm, ToyTask(), parts=["stability"])
    assert result["stability"] == {}
    assert any("no stability certificates" in caveat for caveat in result["caveats"])
    assert "hessian" not in result and "perturbation" not in result


def test_run_analysis_is_deterministic_for_a_seed_and_leaves_the_model_as_it_was(analysis):
    net = model().train()
    before = {name: t.clone() for name, t in net.state_dict().items()}
    again = run_analysis(net, ToyTask(), seed=0, **SMALL)
    strip = lambda result: {k: v for k, v in result.items() if k != "seconds"}  # noqa: E731
    assert json.dumps(strip(again)) == json.dumps(strip(analysis))
    assert net.training and net.rnn.backend == "auto"
    assert all(torch.equal(t, before[name]) for name, t in net.state_dict().items())


def test_run_analysis_computes_only_the_requested_parts():
    result = run_analysis(model(), ToyTask(), parts=["perturbation"], draws=1, levels=SMALL["levels"])
    assert "hessian" not in result and "input_hessian" not in result and "perturbation" in result
    with pytest.raises(ValueError, match="parts"):
        run_analysis(model(), ToyTask(), parts=["spectrum"])
    with pytest.raises(TypeError, match="SequenceTask"):
        run_analysis(model(), [(torch.zeros(2, STEPS, 1), torch.zeros(2, dtype=torch.long))])


def test_plots_accept_run_analysis_results(tmp_path, analysis):
    pytest.importorskip("matplotlib")
    results = {"lipschitz": analysis, "copy": json.loads(json.dumps(analysis))}
    fig = plot_perturbation_curves(results, path=tmp_path / "robustness.png")
    assert len(fig.axes) == 3 and (tmp_path / "robustness.png").stat().st_size > 0
    assert [len(ax.containers) for ax in fig.axes] == [2, 2, 2]  # one error-bar series per model and panel
    fig = plot_hessian_densities(results, path=tmp_path / "density.png")
    assert len(fig.axes[0].get_lines()) == 2 and (tmp_path / "density.png").stat().st_size > 0


def test_plots_without_matplotlib_say_how_to_install_it(monkeypatch, analysis):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"lipschitz-rnn\[plot\]"):
        plot_hessian_densities({"lipschitz": analysis})


@pytest.mark.parametrize(
    "name",
    [
        "lipschitz_rnn.analysis",
        "lipschitz_rnn.analysis._common",
        "lipschitz_rnn.analysis.lanczos",
        "lipschitz_rnn.analysis.hessian",
        "lipschitz_rnn.analysis.perturbation",
    ],
)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
