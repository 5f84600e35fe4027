"""How much the reported number depends on which epoch is reported.

    python scripts/epoch_selection.py results/pmnist_lipschitz_euler_n128 [more run directories ...]

For each seed of each experiment directory (``<dir>/seed*/metrics.jsonl`` and ``summary.json``),
prints the test metric at three epochs: the best-validation epoch (what ``RESULTS.md`` reports),
the last epoch, and the epoch with the best *test* metric. The last is an oracle, never a result:
it bounds what any epoch-selection rule could have reported, so a gap to the paper that survives
it is not a matter of which epoch was reported. Then the mean over seeds of each. A run without a
validation split (``task.val_split = "none"``) has no best-validation epoch: ``n/a``.
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
    records = [r for r in read_metrics(seed_dir / "metrics.jsonl") if "test" in r]
    with_val = [r for r in records if "val" in r]
    if not records:
        raise ValueError(f"{seed_dir}: no epoch with test metrics")
    if with_val and len(with_val) != len(records):
        raise ValueError(f"{seed_dir}: validation in only some epochs ({len(with_val)} of {len(records)})")

    def pick(split: str, among: list[dict]) -> dict:
        # the first epoch among equals, as the training loop keeps its first best checkpoint
        best = max if higher else min
        return best(among, key=lambda r: r[split][metric])

    chosen = {
        "best_val": pick("val", with_val) if with_val else None,
        "last": records[-1],
        "best_test": pick("test", records),
    }
    return {
        "seed": seed_dir.name,
        "metric": metric,
        **{name: (None, None) if r is None else (r["test"][metric], r["epoch"]) for name, r in chosen.items()},
    }


def _cell(value: float | None, epoch: int | None) -> str:
    return f"{'n/a':>18}" if value is None else f"{value:>10.4g} (ep {epoch:>3})"


def main(directories: list[str]) -> None:
    for directory in map(Path, directories):
        seeds = sorted(p for p in directory.glob("seed*") if (p / "summary.json").is_file())
        if not seeds:
            raise SystemExit(f"{directory}: no seed*/summary.json")
        rows = [seed_row(seed) for seed in seeds]
        print(f"{directory.name} (test {rows[0]['metric']} at the epoch chosen by ...)")
        print("  seed    " + "".join(f"{name:>18}" for name in COLUMNS))
        for row in rows:
            print(f"  {row['seed']:<8}" + "".join(_cell(*row[name]) for name in COLUMNS))
        if len(rows) > 1:
            columns = ([r[name][0] for r in rows] for name in COLUMNS)
            means = "".join(f"{'n/a':>18}" if None in v else f"{statistics.mean(v):>18.4g}" for v in columns)
            print(f"  {'mean':<8}{means}")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    main(sys.argv[1:])
