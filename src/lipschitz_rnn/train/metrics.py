"""What a run records: the text log, per-epoch metrics (JSON lines, TensorBoard), stability numbers, plots.

Example:
    >>> import lipschitz_rnn as lr
    >>> model = lr.SequenceClassifier(lr.build_model("lipschitz", 1, 8), num_classes=2)
    >>> numbers = stability_numbers(model)
    >>> sorted(numbers["layer0"])
    ['c1_margin', 'lambda_max_A_sym', 'max_abs_R_eps_lambda_D0', 'max_re_eig_A', 'max_re_eig_W', 'norm_A', 'norm_W']
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Optional

from torch import nn

from ..stability import certified_cells, spectral_numbers, stability_reports
from .checkpoint import atomic_write_text

__all__ = [
    "RunLog",
    "TensorBoard",
    "read_metrics",
    "stability_numbers",
    "stability_reports",
    "write_metrics",
    "write_plots",
]


class RunLog:
    """Prints a line and appends it, time-stamped, to ``train.log`` (when a path is given)."""

    def __init__(self, path: Optional[Path] = None, echo: bool = True) -> None:
        self.path = path
        self.echo = echo

    def __call__(self, message: str) -> None:
        if self.echo:
            print(message, flush=True)
        if self.path is not None:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            with open(self.path, "a", encoding="utf-8") as f:
                f.writelines(f"{stamp}  {line}\n" for line in message.splitlines() or [""])


def write_metrics(path: Path, history: Iterable[dict[str, Any]]) -> None:
    """``metrics.jsonl``: rewritten whole from the history, so a resumed run never duplicates a line."""
    import json

    atomic_write_text(path, "".join(json.dumps(record, allow_nan=True) + "\n" for record in history))


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The per-epoch records of ``metrics.jsonl`` (written by :func:`write_metrics`), in order."""
    import json

    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def _flatten(record: dict[str, Any], prefix: str = "") -> dict[str, float]:
    out = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and value is not None:
            out[name] = float(value)
    return out


class TensorBoard:
    """Scalars of every epoch record under their nested names (``val/accuracy``, ...); a no-op
    when disabled or when the ``tensorboard`` package is missing."""

    def __init__(self, directory: Optional[Path], purge_step: Optional[int] = None) -> None:
        self.writer = None
        if directory is None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            print("note: tensorboard is not installed; no event files (pip install tensorboard)", file=sys.stderr)
            return
        self.writer = SummaryWriter(log_dir=str(directory), purge_step=purge_step)

    def write(self, record: dict[str, Any]) -> None:
        if self.writer is None:
            return
        step = record["epoch"]
        for name, value in _flatten(record).items():
            if name != "epoch" and math.isfinite(value):
                self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


# -- stability ---------------------------------------------------------------------------------


def stability_numbers(model: nn.Module) -> dict[str, dict[str, float]]:
    """Per layer: ``max Re λ(A)``, ``max Re λ(W)``, ``λ_max(A_sym)``, ``‖A‖₂``, ``‖W‖₂``, the C1 margin and, for
    cells with a step size, ``max |R(ελ)|`` over the eigenvalues λ of A (``max_abs_R_eps_lambda_D0``).

    The last is the explicit step's amplification of the linear part: above 1, some mode of A grows
    at every step although the ODE may be stable (max Re λ(A) < 0). Round 34's PTB seed 1 diverged
    so, at 2.58 (``results/diagnostics/ptb-seed1-divergence``). Empty for models without
    Lipschitz/Antisymmetric cells (LSTM, ...). For the AntisymmetricRNN A is zero (no linear term),
    so the C1 margin is ``−‖W‖₂``.
    """
    # the report's cheap numbers only: at N = 1024 the whole report (spectrum of A + LW, the linearised
    # exponential step, Bendixson boxes) takes 2.0 (Euler) to 2.8 (exp_euler) times as long on one CPU
    # thread (benchmarks/results/stability-numbers-cpu-1thread.json)
    return {name: spectral_numbers(cell) for name, cell in certified_cells(model).items()}


# -- plots -------------------------------------------------------------------------------------


def write_plots(
    directory: Path,
    history: list[dict[str, Any]],
    metric: str,
    stability_start: Optional[dict[str, Any]] = None,
    stability_end: Optional[dict[str, Any]] = None,
) -> list[Path]:
    """Learning curves, eigenvalues of A and W (start vs end), stability margins and gradient norms as PNGs.

    Returns the files written; nothing (and no error) without matplotlib.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    epochs = [r["epoch"] for r in history]

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for split in ("train", "val", "test"):
        if all(split in r for r in history) and history:
            axes[0].plot(epochs, [r[split]["loss"] for r in history], marker=".", label=split)
            axes[1].plot(epochs, [r[split][metric] for r in history], marker=".", label=split)
    axes[0].set_ylabel("loss")
    axes[1].set_ylabel(f"{metric} (%)" if metric == "accuracy" else metric)
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.legend()
        ax.grid(alpha=0.3)
    written.append(_save(fig, directory / "learning_curves.png"))

    layers = sorted((stability_end or {}).keys())
    if layers and stability_start:
        fig, axes = plt.subplots(len(layers), 2, figsize=(11, 4.5 * len(layers)), squeeze=False)
        for row, layer in enumerate(layers):
            for col, matrix in enumerate(("A", "W")):
                ax = axes[row][col]
                for label, report, style in (("start", stability_start, "o"), ("end", stability_end, "x")):
                    pairs = report.get(layer, {}).get("eigenvalues", {}).get(matrix, [])
                    if pairs:
                        re, im = zip(*pairs)
                        ax.scatter(re, im, s=14, marker=style, label=label, alpha=0.8)
                ax.axvline(0, color="0.5", lw=0.7)
                ax.axhline(0, color="0.5", lw=0.7)
                ax.set_title(f"eigenvalues of {matrix} ({layer})")
                ax.set_xlabel("Re λ")
                ax.set_ylabel("Im λ")
                ax.legend()
                ax.grid(alpha=0.3)
        written.append(_save(fig, directory / "eigenvalues.png"))

    if layers and all("stability" in r for r in history):
        names = ("c1_margin", "max_re_eig_A", "max_re_eig_W")
        step = "max_abs_R_eps_lambda_D0"
        if all(step in r["stability"][layer] for r in history for layer in layers):
            names += (step,)  # the explicit step's bound is 1, the others' 0
        fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4))
        for ax, name in zip(axes, names):
            for layer in layers:
                ax.plot(epochs, [r["stability"][layer][name] for r in history], marker=".", label=layer)
            ax.axhline(1 if name == step else 0, color="0.5", lw=0.7)
            ax.set_title(name)
            ax.set_xlabel("epoch")
            ax.legend()
            ax.grid(alpha=0.3)
        written.append(_save(fig, directory / "stability.png"))

    if history and all("grad_norm_mean" in r["train"] for r in history):
        fig, ax = plt.subplots(figsize=(6, 4))
        for key, label in (("grad_norm_mean", "mean over the epoch"), ("grad_norm_max", "largest step")):
            ax.plot(epochs, [r["train"][key] for r in history], marker=".", label=label)
        ax.set_yscale("log")
        ax.set_title("gradient norm before clipping")
        ax.set_xlabel("epoch")
        ax.legend()
        ax.grid(alpha=0.3)
        written.append(_save(fig, directory / "grad_norm.png"))
    return written


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return path
