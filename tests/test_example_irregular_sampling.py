"""``examples/irregular_sampling.py``: its data, its three arms and the record it writes."""

import json

import pytest
import torch

from scripts_loader import load_script

example = load_script("examples/irregular_sampling.py", "irregular_sampling")

pytestmark = pytest.mark.filterwarnings("ignore::lipschitz_rnn.StepSizeWarning")


def test_the_gaps_sum_to_each_observations_time_and_the_labels_are_the_four_classes():
    settings = example.Settings(steps=20, horizon=5.0)
    values, gaps, labels = example.make_split(300, settings, seed=3)
    assert values.shape == (300, 20, 1) and gaps.shape == (300, 20) and labels.shape == (300,)
    times = gaps.double().cumsum(dim=1)
    assert bool((gaps >= 0).all()) and float(times[:, -1].max()) <= 5.0
    assert set(labels.tolist()) == {0, 1, 2, 3}
    again = example.make_split(300, settings, seed=3)
    assert all(torch.equal(a, b) for a, b in zip((values, gaps, labels), again))


def test_a_noiseless_sample_is_a_sine_of_its_class_frequency_at_the_summed_gaps():
    values, gaps, labels = example.make_split(8, example.Settings(steps=30, noise=0.0), seed=1)
    times = gaps.double().cumsum(dim=1)
    for value, t, label in zip(values[..., 0].double(), times, labels):
        residuals = []
        for frequency in example.FREQUENCIES:  # least squares on [sin ωt, cos ωt]: any phase
            basis = torch.stack([torch.sin(2 * torch.pi * frequency * t), torch.cos(2 * torch.pi * frequency * t)], 1)
            coefficients = torch.linalg.lstsq(basis, value.unsqueeze(1)).solution
            residuals.append(float((basis @ coefficients - value.unsqueeze(1)).norm()))
        assert residuals[int(label)] < 1e-5
        assert min(r for i, r in enumerate(residuals) if i != int(label)) > 0.1


def test_only_the_dt_arm_steps_by_the_gaps_and_only_gaps_as_input_reads_them():
    settings = example.Settings(hidden_size=8)
    values, gaps, _ = example.make_split(4, example.Settings(steps=10), seed=0)
    for arm, reads_gaps in (("dt", True), ("gaps_as_input", True), ("ignore_gaps", False)):
        torch.manual_seed(0)
        model = example.ArmModel(arm, settings)
        changed = not torch.equal(model(values, gaps), model(values, 2 * gaps))
        assert changed == reads_gaps, arm
    assert example.ArmModel("gaps_as_input", settings).classifier.rnn.input_size == 2
    with pytest.raises(ValueError, match="arm must be one of"):
        example.ArmModel("lstm", settings)


TINY = dict(steps=8, train_size=60, val_size=30, test_size=40, hidden_size=8, epochs=2, batch_size=20)


def test_a_short_run_writes_every_arms_curves_and_the_summary(tmp_path):
    output = tmp_path / "record.json"
    record = example.run(example.Settings(**TINY), seeds=(0, 1), output=output)
    assert json.loads(output.read_text()) == json.loads(json.dumps(record))
    assert record["seeds"] == [0, 1] and record["chance"] == 25.0 and "git_commit" in record
    assert record["choices"] == {} and record["search_trials"] == []
    for arm in example.ARMS:
        curves = [record["runs"][seed][arm]["accuracy_per_epoch"] for seed in ("0", "1")]
        assert record["summary"][arm]["per_seed"] == [curve["test"][-1] for curve in curves]
        assert all(len(curve["val"]) == len(curve["test"]) == 2 for curve in curves)
        assert all(0.0 <= value <= 100.0 for curve in curves for value in curve["test"])


def test_the_search_picks_each_arms_best_validation_trial_and_never_scores_the_test_split(monkeypatch):
    scored_splits = []
    train_arm = example.train_arm

    def recording(arm, settings, data, scored):
        scored_splits.append(scored)
        return train_arm(arm, settings, data, scored)

    monkeypatch.setattr(example, "train_arm", recording)
    grid = {"lr": (0.005, 0.02), "eps": (0.1,), "epochs": (1, 2)}
    choices, trials = example.search(example.Settings(**TINY), grid)
    assert set(scored_splits) == {("val",)} and len(scored_splits) == 3 * 2  # arms x (lr, eps)
    assert len(trials) == 3 * 2 * 2
    for arm in example.ARMS:
        mine = [trial for trial in trials if trial["arm"] == arm]
        best = max(trial["val_accuracy"] for trial in mine)
        chosen = next(trial for trial in mine if trial["val_accuracy"] == best)  # the first of the best
        assert choices[arm] == {key: chosen[key] for key in ("lr", "eps", "epochs", "val_accuracy")}


def test_a_shorter_length_is_scored_as_a_run_of_that_length_would_be():
    settings = example.Settings(**{**TINY, "epochs": 1})
    data = example.make_data(settings)
    one = example.train_arm("dt", settings, data, ("val",))["accuracy_per_epoch"]["val"]
    two = example.train_arm("dt", example.Settings(**TINY), data, ("val",))["accuracy_per_epoch"]["val"]
    assert one == two[:1]
