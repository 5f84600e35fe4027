"""Results across runs: find run directories, group them by experiment, compare with the paper.

The reported test number of a run is the test metric **at its best-validation epoch** (the
``best`` checkpoint); the test metric at the last epoch is reported beside it. Runs without
a validation split report the last epoch in both. Mean ± sample standard deviation over the
seeds of completed runs; diverged and unfinished runs are counted, not averaged.

Example:
    >>> records = summarize([])          # no run directories: no experiments
    >>> records, markdown_table(records).splitlines()[0].startswith("| experiment")
    ([], True)
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any, Iterable, Optional, Union

from ..paper import PAPER
from .checkpoint import RunDirError, check_run_dir, read_json
from .config import load_config

__all__ = ["find_runs", "markdown_table", "summarize"]

#: the keys every record of ``summary.json`` has (more may follow)
RECORD_KEYS = (
    "experiment",
    "task",
    "model",
    "method",
    "hidden_size",
    "params",
    "seeds",
    "metric",
    "test_mean",
    "test_std",
    "paper",
    "data_source",
)


def find_runs(paths: Iterable[Union[str, Path]]) -> tuple[list[Path], list[str]]:
    """Run directories under ``paths`` (recursively), and notes on directories skipped."""
    runs, notes = [], []
    for root in paths:
        root = Path(root)
        if not root.exists():
            notes.append(f"{root}: does not exist")
            continue
        candidates = [root / "meta.json"] if (root / "meta.json").is_file() else sorted(root.rglob("meta.json"))
        for meta_path in candidates:
            try:
                check_run_dir(meta_path.parent)
            except RunDirError as exc:
                notes.append(f"skipped: {exc}")
                continue
            if meta_path.parent not in runs:
                runs.append(meta_path.parent)
    return runs, notes


def _mean_std(values: list[float]) -> tuple[Optional[float], Optional[float]]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def _reported_test(summary: dict[str, Any]) -> Optional[float]:
    """The best-validation epoch's test metric; the last epoch's where there is no validation split."""
    best = summary.get("test_best_val")
    return summary.get("test_last") if best is None else best


def _load(run: Path) -> dict[str, Any]:
    meta = read_json(run / "meta.json")
    cfg = load_config(run / "config.toml")
    summary = read_json(run / "summary.json") if (run / "summary.json").is_file() else {"status": "incomplete"}
    return {"dir": run, "meta": meta, "cfg": cfg, "summary": summary}


def summarize(paths: Iterable[Union[str, Path]], notes: Optional[list[str]] = None) -> list[dict[str, Any]]:
    """One record per experiment (keys :data:`RECORD_KEYS` first), sorted by experiment name.

    Directories skipped (not runs of this format) are described in ``notes`` when a list is given.
    """
    runs, skipped = find_runs(paths)
    if notes is not None:
        notes.extend(skipped)
    groups: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        loaded = _load(run)
        groups.setdefault(loaded["cfg"].experiment.name, []).append(loaded)

    records = []
    for name in sorted(groups):
        group = groups[name]
        done = [r for r in group if r["summary"].get("status") == "completed"]
        first = (done or group)[0]
        cfg, meta = first["cfg"], first["meta"]
        reported = [
            r["summary"]["test_best_val"]
            if r["summary"].get("test_best_val") is not None
            else r["summary"]["test_last"]
            for r in done
        ]
        test_mean, test_std = _mean_std(reported)
        last_mean, last_std = _mean_std([r["summary"].get("test_last") for r in done])
        paper = PAPER.get(cfg.experiment.paper)
        record = {
            "experiment": name,
            "task": cfg.task.name,
            "model": cfg.model.name,
            "method": meta.get("model", {}).get("method"),
            "hidden_size": cfg.model.hidden_size,
            "params": meta.get("model", {}).get("params"),
            "seeds": sorted(r["cfg"].train.seed for r in done),
            "metric": meta.get("data", {}).get("metric"),
            "test_mean": test_mean,
            "test_std": test_std,
            "paper": paper.value if paper else None,
            "data_source": meta.get("data", {}).get("source"),
            "test_reported": "test metric at the best-validation epoch (last epoch where there is no validation split)",
            "test_last_mean": last_mean,
            "test_last_std": last_std,
            "n_runs": len(group),
            "n_completed": len(done),
            "n_diverged": sum(r["summary"].get("status") == "diverged" for r in group),
            "n_incomplete": sum(r["summary"].get("status") == "incomplete" for r in group),
            "epochs": [r["summary"].get("epochs") for r in done],
            "time_per_epoch_s": _mean_std([r["summary"].get("time_per_epoch_s") for r in done])[0],
            "paper_key": cfg.experiment.paper or None,
            "paper_source": paper.source if paper else None,
            "paper_note": paper.note if paper else None,
            "run_dirs": [str(r["dir"]) for r in group],
        }
        if len({(r["cfg"].task.name, r["meta"].get("model", {}).get("params")) for r in group}) > 1:
            record["warning"] = "runs of this experiment differ in task or parameter count"
        records.append(record)
    return records


def _fmt(value: Optional[float], std: Optional[float], metric: Optional[str]) -> str:
    if value is None:
        return "n/a"
    digits = 2 if metric == "accuracy" else 4
    text = f"{value:.{digits}f}"
    return text + (f" ± {std:.{digits}f}" if std is not None else "")


def markdown_table(records: list[dict[str, Any]]) -> str:
    """The records as a Markdown table beside the paper's numbers."""
    header = (
        "| experiment | task | model | N | params | metric | test (best val) | test (last epoch) | seeds "
        "| paper | data source | epochs | s/epoch |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in records:
        metric = r["metric"]
        unit = " (%)" if metric == "accuracy" else ""
        model = r["model"] + (f" ({r['method']})" if r.get("method") else "")
        epochs = sorted({e for e in r["epochs"] if e is not None})
        flags = []
        if r["n_diverged"]:
            flags.append(f"{r['n_diverged']} diverged")
        if r["n_incomplete"]:
            flags.append(f"{r['n_incomplete']} unfinished")
        seeds = f"{len(r['seeds'])}" + (f" ({', '.join(flags)})" if flags else "")
        paper = "—" if r["paper"] is None else f"{r['paper']}" + ("*" if r.get("paper_note") else "")
        lines.append(
            f"| {r['experiment']} | {r['task']} | {model} | {r['hidden_size']} | {r['params'] or 'n/a'} "
            f"| {metric}{unit} | {_fmt(r['test_mean'], r['test_std'], metric)} "
            f"| {_fmt(r['test_last_mean'], r['test_last_std'], metric)} | {seeds} | {paper} "
            f"| {r['data_source'] or 'n/a'} | {', '.join(map(str, epochs)) or 'n/a'} "
            f"| {'n/a' if r['time_per_epoch_s'] is None else format(r['time_per_epoch_s'], '.1f')} |"
        )
    lines.append("")
    lines.append(
        "test (best val): test metric of the best-validation checkpoint; test (last epoch): at the end of training. "
        "Mean ± sample std over seeds of completed runs. * paper number whose row or N is unverified."
    )
    return "\n".join(lines) + "\n"
