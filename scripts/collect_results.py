"""Copy the small text files of finished runs into ``results/`` (no checkpoints, no plots).

    python scripts/collect_results.py runs results
    lipschitz-rnn report results --rows results/rows.toml --markdown RESULTS-table.md --json results/summary.json

Per run: ``config.toml`` (resolved), ``meta.json``, ``metrics.jsonl``, ``summary.json``,
``train.log``, ``stability_{start,end}.json``, the output of ``lipschitz-rnn eval --json`` saved
beside them as ``eval-*.json``, and the GPU queue's log of its attempts (``queue.jsonl``: GPU,
jobs sharing it, wall time). Trials of a validation search
(``runs/search-*``) go to ``results/search/trials/`` beside the search records
(``runs/search-records/*.json``, written by ``scripts/val_search.py select``), and the report
lists them in its searches table, not as rows. Analysis JSON and logs under ``runs/analysis-*``
are copied as they are.
"""

import shutil
import sys
from pathlib import Path

from lipschitz_rnn.train.report import SEARCH_PREFIX

RUN_FILES = ("config.toml", "meta.json", "metrics.jsonl", "summary.json", "train.log",
             "stability_start.json", "stability_end.json")  # fmt: skip


def main(source: str, target: str) -> None:
    source_dir, target_dir = Path(source), Path(target)
    copied = 0
    for summary in sorted(source_dir.glob("*/seed*/summary.json")):
        run = summary.parent
        if run.parent.name.startswith(SEARCH_PREFIX):  # a validation-search trial: beside its search's record
            out = target_dir / "search" / "trials" / run.relative_to(source_dir)
        else:
            out = target_dir / run.relative_to(source_dir)
        out.mkdir(parents=True, exist_ok=True)
        for path in [run / name for name in RUN_FILES] + sorted(run.glob("eval-*.json")):
            if path.is_file():
                shutil.copy2(path, out / path.name)
        queue_log = run.parent / f"{run.name}.queue.jsonl"
        if queue_log.is_file():
            shutil.copy2(queue_log, out / "queue.jsonl")
        copied += 1
    for record in sorted(source_dir.glob("search-records/*.json")):
        (target_dir / "search").mkdir(parents=True, exist_ok=True)
        shutil.copy2(record, target_dir / "search" / record.name)
    for path in sorted(source_dir.glob("analysis-*/**/*")):
        if path.is_file() and path.suffix in (".json", ".log"):
            out = target_dir / path.relative_to(source_dir)
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, out)
    print(f"{copied} finished runs copied from {source_dir} to {target_dir}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python scripts/collect_results.py RUNS_DIR RESULTS_DIR")
    main(*sys.argv[1:])
