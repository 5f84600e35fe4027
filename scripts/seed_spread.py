"""The seed distribution of one training command, pooled over experiments that differ only in seed.

    python scripts/seed_spread.py results/pmnist_lipschitz_euler_n128 results/pmnist_lipschitz_euler_n128_seeds3to7 \
        --target 96.0 --paper 96.3 [--json out.json]

A row of RESULTS.md is three seeds of one command; more seeds of the same command, trained later under
another experiment name (so the row keeps its three), say how wide the spread of that command is and
where a target or the paper's number falls in it. Every ``<dir>/seed*/summary.json`` is read, and each
run's resolved ``config.toml`` is compared with the first run's: a run whose settings differ in
anything but ``train.seed``, ``experiment.name`` and the ``[log]`` section stops the script, so the
pool is one command's seeds and nothing else. Printed: each seed's test metric at its best-validation
epoch (what the tables report), its best validation and that epoch; then each directory's mean ± sample
std and the pooled mean ± std, minimum, maximum and how many seeds reach ``--target`` and ``--paper``
(at or above them for accuracy, at or below for a metric where lower is better, such as bits per character).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Optional

from lipschitz_rnn.train.config import load_config, overrides_between

#: settings that may differ between the pooled runs
ALLOWED = ("train.seed=", "experiment.name=")


def seed_runs(directory: Path) -> list[Path]:
    runs = [p for p in directory.glob("seed*") if (p / "summary.json").is_file()]
    runs.sort(key=lambda p: (len(p.name), p.name))  # seed2 before seed10
    if not runs:
        raise SystemExit(f"{directory}: no seed*/summary.json")
    return runs


def check_same_command(first: Path, run: Path) -> None:
    """Stop unless ``run`` was trained with ``first``'s settings but for its seed and experiment name."""
    differ = overrides_between(load_config(first / "config.toml"), load_config(run / "config.toml"))
    if differ is None:
        raise SystemExit(f"{run}: its config lacks options {first}'s has; not the same command")
    other = [item for item in differ if not item.startswith(ALLOWED)]
    if other:
        raise SystemExit(f"{run}: settings differ from {first}'s: {' '.join(other)}")


def _stats(values: list[float]) -> dict:
    return {
        "n": len(values),
        "mean": statistics.mean(values),
        "std": statistics.stdev(values) if len(values) > 1 else None,
        "min": min(values),
        "max": max(values),
    }


def _pm(stats: dict) -> str:
    std = "" if stats["std"] is None else f" ± {stats['std']:.2f}"
    return f"{stats['mean']:.2f}{std}"


def spread(directories: list[Path], target: Optional[float] = None, paper: Optional[float] = None) -> dict:
    """Per-seed results of every directory, each directory's statistics and the pooled ones."""
    runs = [(d, run) for d in directories for run in seed_runs(d)]
    first = runs[0][1]
    for _, run in runs[1:]:
        check_same_command(first, run)
    seeds, per_dir = [], {}
    for directory, run in runs:
        summary = json.loads((run / "summary.json").read_text())
        if summary.get("status") != "completed":
            raise SystemExit(f"{run}: status {summary.get('status')!r}, not a completed run")
        seeds.append(
            {
                "experiment": directory.name,
                "seed": summary["seed"],
                "test_best_val": summary["test_best_val"],
                "val_best": summary["val_best"],
                "best_epoch": summary["best_epoch"],
                "epochs": summary["epochs"],
            }
        )
        per_dir.setdefault(directory.name, []).append(summary["test_best_val"])
    if len({s["seed"] for s in seeds}) != len(seeds):
        raise SystemExit("the same seed appears twice: pool runs of different seeds only")
    values = [s["test_best_val"] for s in seeds]
    pooled = _stats(values)
    first_summary = json.loads((first / "summary.json").read_text())
    higher = first_summary["higher_is_better"]
    for name, bound in (("target", target), ("paper", paper)):
        if bound is not None:
            pooled[f"reaching_{name}"] = sum((v >= bound) if higher else (v <= bound) for v in values)
    return {
        "metric": first_summary["metric"],
        "higher_is_better": higher,
        "target": target,
        "paper": paper,
        "seeds": seeds,
        "experiments": {name: _stats(v) for name, v in per_dir.items()},
        "pooled": pooled,
    }


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="experiment directories (results/<experiment>)")
    parser.add_argument("--target", type=float, help="count the seeds that reach this")
    parser.add_argument("--paper", type=float, help="the paper's number: count the seeds that reach it")
    parser.add_argument("--json", type=Path, help="write the numbers here too")
    args = parser.parse_args(argv)
    result = spread(args.dirs, args.target, args.paper)
    print(f"test {result['metric']} at the best-validation epoch")
    print(f"  {'experiment':<44} {'seed':>4} {'test':>7} {'best val':>9} {'epoch':>6}")
    for s in result["seeds"]:
        numbers = f"{s['test_best_val']:>7.2f} {s['val_best']:>9.2f} {s['best_epoch']:>6}"
        print(f"  {s['experiment']:<44} {s['seed']:>4} {numbers}")
    for name, stats in result["experiments"].items():
        print(f"  {name}: {_pm(stats)} over {stats['n']} seeds")
    pooled = result["pooled"]
    print(f"  pooled: {_pm(pooled)} over {pooled['n']} seeds, min {pooled['min']:.2f}, max {pooled['max']:.2f}")
    side = "at or above" if result["higher_is_better"] else "at or below"
    for name in ("target", "paper"):
        if result[name] is not None:
            print(f"  seeds {side} the {name} {result[name]}: {pooled[f'reaching_{name}']} of {pooled['n']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
