"""The run directory on disk: atomic files, format checks, and checkpoints that load without executing code.

Layout of a run directory::

    config.toml              the resolved config (overrides applied)
    meta.json                format version, package/torch versions, git commit, device, data, params
    train.log                plain-text log
    metrics.jsonl            one JSON record per epoch
    summary.json             final results (written at the end, or on divergence)
    stability_start.json     stability report of every Lipschitz/Antisymmetric cell before training
    stability_end.json       ... and after
    checkpoints/last/        model.safetensors + state.pt (optimizer, RNG, position, history)
    checkpoints/best/        the weights at the best validation epoch, with that epoch's position and record
                             (no optimizer or RNG state: it is evaluated, never resumed from)
    plots/*.png              learning curves, eigenvalues, stability margins (matplotlib)
    tensorboard/             event files (tensorboard)

Every file is written to a temporary name and moved into place with ``os.replace``. A
checkpoint is a directory of two files, so it is swapped in as a whole: written to
``<name>.tmp/``, then ``<name>`` -> ``<name>.old`` and ``<name>.tmp`` -> ``<name>``; a kill
between the two renames leaves a complete ``<name>.tmp`` that :func:`load_checkpoint` picks
up. The state file is a ``torch.save`` dict tagged with :data:`CHECKPOINT_FORMAT`, read with
``torch.load(weights_only=True)`` (a pickle that would run code is refused, not run), and it
carries the SHA-256 of its weights file.

Example:
    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> directory = Path(tempfile.mkdtemp()) / "last"
    >>> model = torch.nn.Linear(2, 1)
    >>> save_checkpoint(directory, model.state_dict(), {"epoch": 3})
    >>> weights, state = load_checkpoint(directory)
    >>> state["epoch"], torch.equal(weights["weight"], model.weight)
    (3, True)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Mapping, Union

import torch
from torch import Tensor

from .._files import atomic_write_bytes, fsync_dir

__all__ = [
    "CHECKPOINT_FORMAT",
    "RUN_FORMAT",
    "CheckpointError",
    "RunDirError",
    "atomic_write_text",
    "check_run_dir",
    "load_checkpoint",
    "save_checkpoint",
]

#: ``format`` / ``format_version`` in meta.json; bump the version when the layout changes
RUN_FORMAT = ("lipschitz-rnn/run", 1)
#: ``format`` / ``format_version`` in every checkpoint's state.pt
CHECKPOINT_FORMAT = ("lipschitz-rnn/checkpoint", 1)

WEIGHTS_FILE = "model.safetensors"
STATE_FILE = "state.pt"

PathLike = Union[str, Path]


class RunDirError(ValueError):
    """A directory is not a run directory this version can use (or is one where a new run would go)."""


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupted, or not written by lipschitz-rnn."""


# -- atomic files ------------------------------------------------------------------------------


def atomic_write_text(path: PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, allow_nan=True) + "\n")


def read_json(path: PathLike) -> Any:
    """The JSON value in ``path``; a file that does not parse raises ``ValueError`` naming it."""
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except ValueError as exc:  # a truncated or hand-edited file: say which
            raise ValueError(f"{path}: not valid JSON ({exc})") from None


# -- run directory -----------------------------------------------------------------------------


def check_new_run_dir(path: PathLike) -> Path:
    """``path`` may receive a new run: it does not exist, or is an empty directory."""
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise RunDirError(f"{path} exists and is not a directory")
        if any(path.iterdir()):
            hint = " (it holds a run: continue it with --resume)" if (path / "meta.json").exists() else ""
            raise RunDirError(f"{path} exists and is not empty{hint}; choose another --out")
    return path


def check_run_dir(path: PathLike) -> dict[str, Any]:
    """The run's meta.json, after checking that this version can read the run directory."""
    path = Path(path)
    meta_path = path / "meta.json"
    if not meta_path.is_file():
        raise RunDirError(f"{path} is not a run directory (no meta.json)")
    try:
        meta = read_json(meta_path)
    except (OSError, ValueError) as exc:
        raise RunDirError(f"{meta_path}: unreadable ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != RUN_FORMAT[0]:
        raise RunDirError(f"{path} is not a lipschitz-rnn run directory (meta.json has no format {RUN_FORMAT[0]!r})")
    version = meta.get("format_version")
    if version != RUN_FORMAT[1]:
        raise RunDirError(
            f"{path}: run directory format version {version!r}; this lipschitz-rnn reads version {RUN_FORMAT[1]} "
            "only (use the version that wrote it)"
        )
    if not (path / "config.toml").is_file():
        raise RunDirError(f"{path}: config.toml is missing")
    return meta


# -- checkpoints -------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_checkpoint(directory: PathLike, weights: Mapping[str, Tensor], state: dict[str, Any]) -> None:
    """Write ``weights`` (safetensors) and ``state`` (torch.save) as one checkpoint directory.

    Refuses non-finite weights, so a diverged model never replaces a good checkpoint.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in weights.items()}
    bad = [name for name, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise CheckpointError(f"refusing to checkpoint non-finite weights ({', '.join(bad[:3])})")
    tmp = directory.with_name(directory.name + ".tmp")
    old = directory.with_name(directory.name + ".old")
    if not directory.exists() and old.is_dir() and tmp.is_dir():
        # an earlier save was killed between its renames: its complete `tmp` is the newest checkpoint, so
        # finish that swap before `tmp` is reused (a kill during this write must not leave only `old`)
        os.replace(tmp, directory)
        fsync_dir(directory.parent)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": CHECKPOINT_FORMAT[0]})
    state = {
        "format": CHECKPOINT_FORMAT[0],
        "format_version": CHECKPOINT_FORMAT[1],
        **state,
        "weights_sha256": _sha256(tmp / WEIGHTS_FILE),
    }
    with open(tmp / STATE_FILE, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    fsync_dir(tmp)
    # swap: a kill between the renames leaves `old` and a complete `tmp` (see _resolve)
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        os.replace(directory, old)
    os.replace(tmp, directory)
    fsync_dir(directory.parent)
    shutil.rmtree(old, ignore_errors=True)


def _resolve(directory: Path) -> Path:
    """The complete checkpoint directory: ``directory`` itself, or a finished swap's ``.tmp``."""
    if directory.is_dir():
        return directory
    tmp = directory.with_name(directory.name + ".tmp")
    old = directory.with_name(directory.name + ".old")
    if old.is_dir() and tmp.is_dir():  # killed between the two renames: tmp was complete
        return tmp
    raise CheckpointError(f"no checkpoint at {directory}")


def checkpoint_exists(directory: PathLike) -> bool:
    try:
        _resolve(Path(directory))
    except CheckpointError:
        return False
    return True


def load_checkpoint(directory: PathLike, map_location: Union[str, torch.device] = "cpu"):
    """``(weights, state)`` of a checkpoint directory written by :func:`save_checkpoint`.

    Raises :class:`CheckpointError` for anything else (a pickle with code in it included: it is
    rejected by ``torch.load(weights_only=True)`` before any of it runs).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = _resolve(Path(directory))
    state_path, weights_path = directory / STATE_FILE, directory / WEIGHTS_FILE
    if not state_path.is_file() or not weights_path.is_file():
        raise CheckpointError(f"{directory}: incomplete checkpoint (needs {STATE_FILE} and {WEIGHTS_FILE})")
    try:
        state = torch.load(state_path, map_location=map_location, weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError, EOFError, ...: never ours
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{state_path}: not a lipschitz-rnn checkpoint, or corrupted; refused without running it ({first_line})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT[0]:
        raise CheckpointError(
            f"{state_path}: not a lipschitz-rnn checkpoint (no format marker {CHECKPOINT_FORMAT[0]!r})"
        )
    if state.get("format_version") != CHECKPOINT_FORMAT[1]:
        raise CheckpointError(
            f"{state_path}: checkpoint format version {state.get('format_version')!r}; "
            f"this lipschitz-rnn reads version {CHECKPOINT_FORMAT[1]}"
        )
    if _sha256(weights_path) != state.get("weights_sha256"):
        raise CheckpointError(f"{weights_path}: does not match its state file (SHA-256 differs); corrupted checkpoint")
    try:
        weights = load_file(str(weights_path), device=str(map_location))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights_path}: unreadable safetensors file ({exc})") from None
    return weights, state
