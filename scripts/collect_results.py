"""Copy the small text files of runs into ``results/`` (no checkpoints, no plots).

    python scripts/collect_results.py runs results
    python scripts/collect_results.py runs results --unfinished   # also runs still training (no summary.json)
    lipschitz-rnn report results --rows results/rows.toml --markdown RESULTS-table.md --json results/summary.json

Per run: ``config.toml`` (resolved), ``meta.json``, ``metrics.jsonl``, ``summary.json``,
``train.log``, ``stability_{start,end}.json``, the output of ``lipschitz-rnn eval --json`` saved
beside them as ``eval-*.json``, and the GPU queue's log of its attempts (``queue.jsonl``: GPU,
jobs sharing it, wall time). A run is finished when it wrote ``summary.json``; with ``--unfinished``
a run that has only started (``meta.json``) is copied too, and the report counts it as unfinished
(a long run that spans several GPU calls is recorded after each). Trials of a validation search
(``runs/search-*``) go to ``results/search/trials/`` beside the search records
(``runs/search-records/*.json``, written by ``scripts/val_search.py select``), and the report
lists them in its searches table, not as rows. Analysis JSON and logs under ``runs/analysis-*``
are copied as they are.
"""

import argparse
import shutil
from pathlib import Path

from lipschitz_rnn.train.report import SEARCH_PREFIX

RUN_FILES = ("config.toml", "meta.json", "metrics.jsonl", "summary.json", "train.log",
             "stability_start.json", "stability_end.json")  # fmt: skip


def main(source: str, target: str, unfinished: bool = False) -> None:
    source_dir, target_dir = Path(source), Path(target)
    marker = "meta.json" if unfinished else "summary.json"
    finished = started = 0
    for found in sorted(source_dir.glob(f"*/seed*/{marker}")):
        run = found.parent
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
        if (run / "summary.json").is_file():
            finished += 1
        else:
            started += 1
    for record in sorted(source_dir.glob("search-records/*.json")):
        (target_dir / "search").mkdir(parents=True, exist_ok=True)
        shutil.copy2(record, target_dir / "search" / record.name)
    for path in sorted(source_dir.glob("analysis-*/**/*")):
        if path.is_file() and path.suffix in (".json", ".log"):
            out = target_dir / path.relative_to(source_dir)
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, out)
    unfinished_part = f" and {started} unfinished" if unfinished else ""
    print(f"{finished} finished runs{unfinished_part} copied from {source_dir} to {target_dir}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs_dir")
    parser.add_argument("results_dir")
    parser.add_argument("--unfinished", action="store_true", help="also copy runs without summary.json")
    args = parser.parse_args()
    main(args.runs_dir, args.results_dir, unfinished=args.unfinished)
