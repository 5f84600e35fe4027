"""How much the reported number depends on which epoch is reported.

    python scripts/epoch_selection.py results/pmnist_lipschitz_euler_n128 [more run directories ...]

For each seed of each experiment directory (``<dir>/seed*/metrics.jsonl`` and ``summary.json``),
prints the test metric at three epochs: the best-validation epoch (what ``RESULTS.md`` reports),
the last epoch, and the epoch with the best *test* metric. The last is an oracle, never a result:
it bounds what any epoch-selection rule could have reported, so a gap to the paper that survives
it is not a matter of which epoch was reported. Then the mean over seeds of each.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from lipschitz_rnn.train.metrics import read_metrics

COLUMNS = ("best_val", "last", "best_test")


def seed_row(seed_dir: Path) -> dict:
    """Test metric at the best-validation, last and best-test epochs of one run, with those epochs."""
    summary = json.loads((seed_dir / "summary.json").read_text())
    higher = summary["higher_is_better"]
    metric = summary["metric"]
    records = [r for r in read_metrics(seed_dir / "metrics.jsonl") if "test" in r and "val" in r]
    if not records:
        raise ValueError(f"{seed_dir}: no epoch with validation and test metrics")

    def pick(split: str) -> dict:
        # the first epoch among equals, as the training loop keeps its first best checkpoint
        best = max if higher else min
        return best(records, key=lambda r: r[split][metric])

    chosen = {"best_val": pick("val"), "last": records[-1], "best_test": pick("test")}
    return {
        "seed": seed_dir.name,
        "metric": metric,
        **{name: (r["test"][metric], r["epoch"]) for name, r in chosen.items()},
    }


def main(directories: list[str]) -> None:
    for directory in map(Path, directories):
        seeds = sorted(p for p in directory.glob("seed*") if (p / "summary.json").is_file())
        if not seeds:
            raise SystemExit(f"{directory}: no seed*/summary.json")
        rows = [seed_row(seed) for seed in seeds]
        print(f"{directory.name} (test {rows[0]['metric']} at the epoch chosen by ...)")
        print("  seed    " + "".join(f"{name:>18}" for name in COLUMNS))
        for row in rows:
            cells = "".join(f"{row[name][0]:>10.4g} (ep {row[name][1]:>3})" for name in COLUMNS)
            print(f"  {row['seed']:<8}{cells}")
        if len(rows) > 1:
            means = "".join(f"{statistics.mean(r[name][0] for r in rows):>18.4g}" for name in COLUMNS)
            print(f"  {'mean':<8}{means}")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    main(sys.argv[1:])
