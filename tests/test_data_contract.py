"""The batching contract of data/base.py, checked on every kind of in-memory task (built from tiny data):
reproducible order, exact resume, rank slices that add up to the global batch, fixed evaluation order."""

import numpy as np
import pytest
import torch

from lipschitz_rnn.data import TASKS, build_task, from_arrays
from test_data_fakes import make_idx_dir, make_jpeg_tarball, make_official_dir


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    root = tmp_path_factory.mktemp("contract")
    make_idx_dir(root / "idx", n_train=45, n_test=13)
    md5, _ = make_official_dir(root / "official" / "cifar-10-batches-py", per_batch=5)
    sha, _ = make_jpeg_tarball(root / "tiny.tar.gz")
    official = {"data_dir": root, "cifar_path": root / "official", "cifar_md5": md5}
    rng = np.random.default_rng(0)
    return {
        "idx": build_task("idx", data_dir=root / "idx", val_split=0.2, pixels_per_step=4, permutation="seed:1"),
        "scifar+augment": build_task("scifar", augment=True, val_split=0.2, **official),
        "noisy_cifar": build_task(
            "noisy_cifar", cifar_path=root / "tiny.tar.gz", cifar_sha256=sha, data_dir=root, val_split=0.25
        ),
        "adding": build_task("adding", length=12, train_size=37, val_size=9, test_size=11),
        "copy": build_task("copy", length=5, train_size=37, val_size=9, test_size=11),
        "arrays": from_arrays(
            rng.normal(size=(41, 7, 3)),
            rng.integers(0, 5, 41),
            rng.normal(size=(6, 7, 3)),
            rng.integers(0, 5, 6),
            val_split=0.25,
        ),
    }


NAMES = ["idx", "scifar+augment", "noisy_cifar", "adding", "copy", "arrays"]
BATCH = 4


def same(a, b):
    return len(a) == len(b) and all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))


@pytest.mark.parametrize("name", NAMES)
def test_batch_layout(tasks, name):
    task = tasks[name]
    for split in ("train", "val", "test"):
        for x, y in task.batches(split, BATCH, epoch=0, seed=0):
            assert x.dtype == torch.float32 and x.shape[1:] == (task.seq_len, task.input_size)
            assert torch.isfinite(x).all()
            if task.metric == "mse":
                assert y.dtype == torch.float32 and y.shape == (len(x),)
            elif task.readout == "all":
                assert y.dtype == torch.int64 and y.shape == (len(x), task.seq_len)
            else:
                assert y.dtype == torch.int64 and y.shape == (len(x),)
            if task.metric == "accuracy":
                assert 0 <= y.min() and y.max() < task.num_classes


@pytest.mark.parametrize("name", NAMES)
def test_training_order_is_a_function_of_seed_and_epoch(tasks, name):
    task = tasks[name]
    run = [list(task.batches("train", BATCH, epoch=e, seed=s)) for e, s in ((0, 0), (0, 0), (1, 0), (0, 1))]
    assert same(run[0], run[1])
    assert not same(run[0], run[2]) and not same(run[0], run[3])
    assert len(run[0]) == task.num_batches("train", BATCH) == -(-task.sizes["train"] // BATCH)
    assert sum(len(x) for x, _ in run[0]) == task.sizes["train"]  # every training sample once per epoch


@pytest.mark.parametrize("name", NAMES)
def test_start_skips_exactly_the_first_batches(tasks, name):
    task = tasks[name]
    full = list(task.batches("train", BATCH, epoch=3, seed=2))
    for start in (1, 4, len(full)):
        assert same(list(task.batches("train", BATCH, epoch=3, seed=2, start=start)), full[start:])


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("split", ["train", "test"])
def test_rank_slices_make_up_the_global_batch(tasks, name, split):
    task = tasks[name]
    whole = list(task.batches(split, BATCH, epoch=1, seed=5))
    parts = [list(task.batches(split, BATCH, epoch=1, seed=5, rank=r, world_size=2)) for r in range(2)]
    assert len(parts[0]) == len(parts[1]) == len(whole)
    for k, (x, y) in enumerate(whole):
        assert torch.equal(torch.cat([parts[0][k][0], parts[1][k][0]]), x)
        assert torch.equal(torch.cat([parts[0][k][1], parts[1][k][1]]), y)
        if len(x) == BATCH:
            assert len(parts[0][k][0]) == len(parts[1][k][0]) == BATCH // 2


@pytest.mark.parametrize("name", NAMES)
def test_evaluation_order_is_fixed_and_complete(tasks, name):
    task = tasks[name]
    for split in ("val", "test"):
        first = list(task.batches(split, BATCH, epoch=0, seed=0))
        again = list(task.batches(split, BATCH, epoch=9, seed=3))
        assert same(first, again)
        assert len(first) == task.num_batches(split, BATCH) and sum(len(x) for x, _ in first) == task.sizes[split]
        one_batch = list(task.batches(split, task.sizes[split], epoch=0, seed=0))
        assert torch.equal(torch.cat([x for x, _ in first]), one_batch[0][0])


def test_bad_batch_arguments(tasks):
    task = tasks["adding"]
    for kwargs, error, match in (
        ({"split": "dev"}, ValueError, "split must be one of train, val, test"),
        ({"batch_size": 0}, ValueError, "batch_size must be >= 1"),
        ({"batch_size": 4.0}, TypeError, "batch_size must be an int"),
        ({"start": -1}, ValueError, "start must be >= 0"),
        ({"rank": 2, "world_size": 2}, ValueError, "rank must be an int in"),
        ({"batch_size": 5, "world_size": 2}, ValueError, "divisible by world_size=2"),
    ):
        arguments = {"split": "train", "batch_size": 4, **kwargs}
        with pytest.raises(error, match=match):
            next(task.batches(arguments.pop("split"), arguments.pop("batch_size"), **arguments))


def test_every_task_is_registered_with_its_aliases():
    # other tests may register toy tasks of their own: check that ours are all there
    expected = {"adding", "copy", "idx", "noisy_cifar", "pmnist", "ptb_char", "scifar", "smnist"}
    assert expected <= set(TASKS.names())
    assert TASKS.canonical("sequential_mnist") == "smnist" and TASKS.canonical("ptb") == "ptb_char"
