"""lipschitz_rnn._files: the one way the package writes a file in place (run directories, data caches)."""

import doctest
import os
import threading

import pytest

from lipschitz_rnn import _files
from lipschitz_rnn._files import atomic_write_bytes
from lipschitz_rnn.train.checkpoint import atomic_write_json


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_written_file_has_the_permissions_a_new_file_gets_and_no_temporary_is_left(tmp_path):
    atomic_write_json(tmp_path / "run" / "summary.json", {"test": 1})  # a run directory's files go through it
    path = tmp_path / "run" / "summary.json"
    assert path.read_text().strip().startswith("{")
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()  # not mkstemp's owner-only 0o600
    assert [p.name for p in path.parent.iterdir()] == ["summary.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    atomic_write_bytes(path, b"old")

    def no_disk(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", no_disk)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]


def test_concurrent_writers_of_one_file_leave_one_whole_version(tmp_path):
    path = tmp_path / "cache.npy"
    versions = [bytes([k]) * 1_000_000 for k in range(8)]
    threads = [threading.Thread(target=atomic_write_bytes, args=(path, data)) for data in versions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert path.read_bytes() in versions
    assert [p.name for p in tmp_path.iterdir()] == ["cache.npy"]


def test_docstring_example():
    result = doctest.testmod(_files)
    assert result.attempted > 0 and result.failed == 0
