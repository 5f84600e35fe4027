"""Files written whole: a reader sees the old file or the new one, never a part.

One mechanism for every file the package writes in place (run directories, the decoded
CIFAR-10 cache): the bytes go to a temporary file of this writer's own beside the target,
are flushed to disk and moved over the target with ``os.replace``. Several processes may
write the same target at once (runs started together on a fresh machine each build the
data cache); each has its own temporary file, and the last ``os.replace`` wins whole.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "note.txt"
    >>> atomic_write_bytes(path, b"whole")
    >>> path.read_bytes()
    b'whole'
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Union

__all__ = ["atomic_write_bytes", "fsync_dir"]

PathLike = Union[str, Path]


def fsync_dir(path: PathLike) -> None:
    """Flush a directory's entries (a rename in it) to disk, where the platform can."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some platforms cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a part.

    The temporary file's name holds the process id and a random part and is created exclusively,
    so concurrent writers never share one; it gets the permissions the umask gives a new file
    (``tempfile.mkstemp``'s would be owner-only, wrong in a shared data or results directory).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(6)}.tmp")
    try:
        with open(temporary, "xb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
