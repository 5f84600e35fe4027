"""What an evaluation reads: every batch of a split, or with a limit a fixed sample of it, never one class."""

import numpy as np
import pytest
import torch

from lipschitz_rnn.data import from_arrays
from lipschitz_rnn.data.base import SequenceTask

CLASSES, PER_CLASS, BATCH = 10, 20, 16


@pytest.fixture(scope="module")
def sorted_task():
    # stored sorted by class, as the CIFAR-10 JPEG copy stores its images; x[i] carries its own index
    n = CLASSES * PER_CLASS
    x = np.arange(n, dtype=np.float32).reshape(n, 1, 1).repeat(3, axis=1)
    y = np.repeat(np.arange(CLASSES), PER_CLASS)
    return from_arrays(x, y, x.copy(), y.copy(), name="sorted", val_split="none")


def indices(batches):
    return [int(v) for x, _ in batches for v in x[:, 0, 0]]


def labels(batches):
    return [int(v) for _, y in batches for v in y]


def test_without_a_limit_an_evaluation_reads_the_whole_split_in_stored_order(sorted_task):
    assert indices(sorted_task.eval_batches("test", BATCH)) == list(range(CLASSES * PER_CLASS))
    assert indices(sorted_task.eval_batches("test", BATCH)) == indices(sorted_task.batches("test", BATCH))


def test_a_limited_evaluation_samples_the_split_instead_of_its_first_class(sorted_task):
    first_batches = labels(sorted_task.batches("test", BATCH))[: 2 * BATCH]
    assert set(first_batches) == {0, 1}  # what reading the first two batches would have measured
    sample = indices(sorted_task.eval_batches("test", BATCH, limit=2))
    assert len(sample) == len(set(sample)) == 2 * BATCH
    assert len(set(labels(sorted_task.eval_batches("test", BATCH, limit=2)))) >= 6


def test_the_sample_is_the_same_on_every_call_and_grows_with_the_limit(sorted_task):
    one = indices(sorted_task.eval_batches("test", BATCH, limit=3))
    assert one == indices(sorted_task.eval_batches("test", BATCH, limit=3))
    assert indices(sorted_task.eval_batches("test", BATCH, limit=1)) == one[:BATCH]


def test_a_limit_past_the_end_is_the_whole_split(sorted_task):
    whole = indices(sorted_task.eval_batches("test", BATCH))
    assert indices(sorted_task.eval_batches("test", BATCH, limit=10_000)) == whole


def test_ranks_share_out_the_same_sample(sorted_task):
    single = indices(sorted_task.eval_batches("test", BATCH, limit=2))
    ranks = [list(sorted_task.eval_batches("test", BATCH, limit=2, rank=r, world_size=2)) for r in range(2)]
    merged = [int(v) for pair in zip(*ranks) for part in pair for v in part[0][:, 0, 0]]
    assert merged == single


def test_a_task_of_its_own_takes_its_first_batches():
    class Stream(SequenceTask):  # a stream cannot be sampled: the default reads batches in order
        def batches(self, split, batch_size, *, epoch=0, seed=0, start=0, rank=0, world_size=1):
            for k in range(5):
                yield torch.full((batch_size, 1, 1), float(k)), torch.zeros(batch_size, dtype=torch.long)

    stream = Stream("stream", 1, 2, 1, "accuracy", "last", "test")
    assert [int(x[0, 0, 0]) for x, _ in stream.eval_batches("test", 4, limit=3)] == [0, 1, 2]
    assert len(list(stream.eval_batches("test", 4))) == 5
