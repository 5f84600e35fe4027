"""The adding problem, copy memory, and tasks from the user's own arrays."""

import math

import numpy as np
import pytest
import torch

from lipschitz_rnn.data import build_task, from_arrays


def test_adding_problem_samples():
    task = build_task("adding", length=31, train_size=500, val_size=0, test_size=300)
    assert (task.input_size, task.seq_len, task.metric, task.readout, task.num_classes) == (2, 31, "mse", "last", 1)
    assert task.num_batches("val", 10) == 0
    x, y = next(task.batches("test", batch_size=300))
    values, markers = x[..., 0], x[..., 1]
    assert x.dtype == y.dtype == torch.float32 and y.shape == (300,)
    assert ((values >= 0) & (values < 1)).all() and set(markers.unique().tolist()) == {0.0, 1.0}
    assert markers[:, :15].sum(1).eq(1).all() and markers[:, 15:].sum(1).eq(1).all()  # one marker per half
    assert torch.allclose(y, (values * markers).sum(1))
    assert abs(y.mean().item() - 1.0) < 0.1  # sum of two U[0, 1]


def test_copy_memory_samples():
    task = build_task("copy", length=15, train_size=64)
    assert (task.input_size, task.num_classes, task.seq_len, task.readout) == (10, 9, 35, "all")
    x, y = next(task.batches("train", batch_size=64, epoch=2, seed=1))
    tokens = x.argmax(-1)
    assert x.shape == (64, 35, 10) and torch.equal(x.sum(-1), torch.ones(64, 35))
    symbols = tokens[:, :10]
    assert ((symbols >= 1) & (symbols <= 8)).all()
    assert tokens[:, 10:24].eq(0).all() and tokens[:, 24].eq(9).all() and tokens[:, 25:].eq(0).all()
    assert y.shape == (64, 35) and y.dtype == torch.int64
    assert y[:, :25].eq(0).all() and torch.equal(y[:, 25:], symbols)
    assert task.info["baseline_cross_entropy"] == pytest.approx(10 * math.log(8) / 35)


def test_a_sample_depends_only_on_seed_split_and_index():
    task = build_task("adding", length=20, train_size=50, test_size=50)
    whole = next(task.batches("test", batch_size=50))[0]
    assert torch.equal(torch.cat([x for x, _ in task.batches("test", batch_size=7)]), whole)
    shuffled = next(task.batches("train", batch_size=50, epoch=4))[0]
    in_order = next(task.batches("train", batch_size=50, epoch=0))[0]
    assert not torch.equal(shuffled, in_order)
    assert sorted(map(tuple, shuffled[:, :, 0].tolist())) == sorted(map(tuple, in_order[:, :, 0].tolist()))
    assert not torch.equal(whole, in_order)  # splits are different streams
    other = build_task("adding", length=20, train_size=50, test_size=50, data_seed=1)
    assert not torch.equal(next(other.batches("test", batch_size=50))[0], whole)


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"length": 1}, ValueError, "length must be >= 2"),
        ({"length": 0}, ValueError, "length must be a positive int"),
        ({"train_size": 2.5}, TypeError, "train_size must be an int"),
        ({"data_seed": -3}, ValueError, "data_seed"),
        ({"size": 10}, TypeError, "size"),
    ],
)
def test_bad_synthetic_options(options, error, match):
    with pytest.raises(error, match=match):
        build_task("adding", **options)


# --- from_arrays ----------------------------------------------------------------------------------


def test_from_arrays_keeps_values_and_order():
    rng = np.random.default_rng(0)
    x_train, y_train = rng.integers(0, 255, size=(30, 6), dtype=np.uint8), rng.integers(0, 4, 30)
    x_test, y_test = torch.randn(9, 6), torch.arange(9) % 4
    task = from_arrays(x_train, y_train, x_test, y_test, name="mine")
    assert (task.seq_len, task.input_size, task.num_classes, task.readout) == (6, 1, 4, "last")
    x, y = next(task.batches("test", batch_size=9))
    assert torch.equal(x[..., 0], x_test) and torch.equal(y, y_test)
    x, y = next(task.batches("train", batch_size=30, epoch=0, seed=0))
    assert x.dtype == torch.float32 and sorted(x[:, 0, 0].tolist()) == sorted(x_train[:, 0].astype(float).tolist())
    assert task.info["data_sha256"] and task.source == "user arrays (mine)"


def test_from_arrays_per_step_labels_and_validation_split():
    x, y = np.zeros((50, 5, 2), np.float32), np.ones((50, 5), np.int64)
    task = from_arrays(x, y, x[:10], y[:10], val_split=0.2, num_classes=3)
    assert task.readout == "all" and task.num_classes == 3 and task.sizes == {"train": 40, "val": 10, "test": 10}
    assert next(task.batches("val", batch_size=4))[1].shape == (4, 5)


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"x_train": np.zeros((4, 2, 2, 2))}, ValueError, "x_train must be"),
        ({"y_train": np.zeros(4)}, TypeError, "y_train must hold integer"),
        ({"y_train": np.zeros(3, np.int64)}, ValueError, "y_train must be"),
        ({"x_test": np.zeros((4, 3, 2))}, ValueError, "train and test disagree"),
        ({"y_test": -np.ones(4, np.int64)}, ValueError, "non-negative"),
        ({"x_train": [[1.0]]}, TypeError, "x_train must be a numpy array or a torch tensor"),
    ],
)
def test_from_arrays_refuses_bad_input(change, error, match):
    arrays = {"x_train": np.zeros((4, 2, 2)), "y_train": np.zeros(4, np.int64)}
    arrays.update(x_test=np.zeros((4, 2, 2)), y_test=np.zeros(4, np.int64))
    arrays.update(change)
    with pytest.raises(error, match=match):
        from_arrays(**arrays)
