"""``lipschitz-rnn analyze``: Hessian spectra and perturbation curves of trained runs, side by side.

    results = analyze_runs(["runs/smnist_lipschitz_euler_n128/seed0", "runs/smnist_lstm_n128/seed0"],
                           out_dir="analysis/smnist", samples=4096)

For each run: its checkpoint (``best`` by default) on its own task, through
:func:`lipschitz_rnn.analysis.run_analysis` with one shared seed, so every model is measured
on the same Hessian samples and the same noise draws. Writes one JSON per run
(``<experiment>-seed<seed>.json``, with the run, checkpoint and settings) and, with
matplotlib, ``perturbation.png`` (accuracy against noise level, all models on one figure)
and ``hessian_density.png``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

from .checkpoint import atomic_write_json
from .loop import load_run

__all__ = ["analyze_runs"]


def analyze_runs(
    run_dirs: Sequence[Union[str, Path]],
    out_dir: Optional[Union[str, Path]] = None,
    *,
    checkpoint: str = "best",
    device: str = "auto",
    log: Optional[Callable[[str], None]] = print,
    overwrite: bool = False,
    **analysis_options: Any,
) -> dict[str, dict[str, Any]]:
    """Analyse each run; returns ``{label: result}`` and writes JSON (and plots) into ``out_dir``.

    ``out_dir`` defaults to ``<run_dir>/analysis`` for a single run and is required for several.
    ``analysis_options`` go to ``run_analysis`` (``samples``, ``seed``, ``parts``, ``draws``, ...).
    Each run's JSON is ``<experiment>-seed<seed>.json``: an existing one is kept (``ValueError`` before any
    work) unless ``overwrite``, so parts analysed separately go to separate output directories, which
    ``lipschitz-rnn report`` merges; two runs with one label in one call are refused the same way.
    """
    from ..analysis import run_analysis

    if not run_dirs:
        raise ValueError("analyze needs at least one run directory")
    if out_dir is None:
        if len(run_dirs) > 1:
            raise ValueError("several runs: pass out_dir for the combined results")
        out_dir = Path(run_dirs[0]) / "analysis"
    out_dir = Path(out_dir)
    runs = [load_run(run_dir, checkpoint, device) for run_dir in run_dirs]  # every check before any work
    labels = [f"{run['cfg'].experiment.name}-seed{run['cfg'].train.seed}" for run in runs]
    for label in labels:
        if labels.count(label) > 1:
            raise ValueError(
                f"two runs share the label {label!r} (experiment and seed): analyse them into separate --out"
            )
        if (out_dir / f"{label}.json").exists() and not overwrite:
            raise ValueError(
                f"{out_dir / f'{label}.json'} exists (an earlier analysis); pass another --out (report merges the "
                "parts of several), or --overwrite"
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = {}
    for run_dir, run, label in zip(run_dirs, runs, labels):
        cfg = run["cfg"]
        if log:
            log(f"analyze {label} ({checkpoint} checkpoint, epoch {run['state']['epoch']}) from {run_dir}")
        start = time.perf_counter()
        result = run_analysis(run["model"], run["task"], log=log, **analysis_options)
        result["run"] = {"run_dir": str(run_dir), "experiment": cfg.experiment.name, "seed": cfg.train.seed,
                         "checkpoint": checkpoint, "epoch": run["state"]["epoch"], "model": cfg.model.name,
                         "device": str(run["ctx"].device), "seconds": time.perf_counter() - start}  # fmt: skip
        atomic_write_json(out_dir / f"{label}.json", result)
        results[label] = result
    _plots(results, out_dir, log)
    return results


def _plots(results: dict[str, dict[str, Any]], out_dir: Path, log) -> None:
    try:
        from ..analysis import plot_hessian_densities, plot_perturbation_curves
    except ImportError:  # pragma: no cover - the analysis package always exports them
        return
    try:
        if any(r.get("perturbation") for r in results.values()):
            plot_perturbation_curves(results, path=str(out_dir / "perturbation.png"))
        if any((r.get("hessian") or {}).get("density") for r in results.values()):
            plot_hessian_densities(results, path=str(out_dir / "hessian_density.png"))
    except ImportError as error:  # matplotlib missing: the JSON is the result, the plots are extra
        if log:
            log(f"no plots: {error}")
