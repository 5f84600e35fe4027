"""The ``lipschitz-rnn`` command line: a thin layer over :mod:`lipschitz_rnn.train`.

    lipschitz-rnn train CONFIG [section.key=value ...] [--out RUN_DIR] [--device DEV]
    lipschitz-rnn train --resume RUN_DIR [train.epochs=N ...] [--device DEV]
    lipschitz-rnn eval RUN_DIR [--checkpoint best|last] [--split test|val] [--device DEV] [--json]
    lipschitz-rnn report DIRS... [--rows ROWS.toml] [--markdown PATH] [--json PATH]
    lipschitz-rnn report DIRS... --against REFERENCE_DIR [--json PATH]      # a re-run beside the run it repeats
    lipschitz-rnn analyze RUN_DIR... [--out DIR] [--samples N] [--parts hessian,input_hessian,perturbation,stability]
    torchrun --nproc_per_node=K -m lipschitz_rnn train CONFIG ...      # DistributedDataParallel

Exit status: 0 done; 2 bad arguments, config, run directory or checkpoint (nothing was
written); 3 training diverged (the last good checkpoint is kept); 128 + N stopped by signal N
(143 SIGTERM, 130 SIGINT/Ctrl-C) after the current optimizer step, with a checkpoint that
``--resume`` continues exactly (a second signal stops at once).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

__all__ = ["main"]

EXIT_USAGE = 2
EXIT_DIVERGED = 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lipschitz-rnn", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train one experiment from a TOML config")
    train.add_argument(
        "items", nargs="*", metavar="CONFIG | section.key=value", help="a config file and overrides (TOML values)"
    )
    train.add_argument("--out", metavar="RUN_DIR", help="new run directory (default runs/<name>/seed<seed>-<time>)")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue this run from its last checkpoint")
    train.add_argument("--device", help="auto, cpu, cuda or cuda:K (same as train.device=...)")

    evaluate = commands.add_parser("eval", help="evaluate a run's checkpoint")
    evaluate.add_argument("run_dir", metavar="RUN_DIR")
    evaluate.add_argument("--checkpoint", choices=("best", "last"), default="best")
    evaluate.add_argument("--split", choices=("test", "val", "train"), default="test")
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--json", action="store_true", help="print the result as JSON")

    report = commands.add_parser("report", help="tabulate runs by experiment beside the paper's numbers")
    report.add_argument("dirs", nargs="+", metavar="DIR", help="run directories, or folders searched recursively")
    report.add_argument(
        "--markdown", metavar="PATH", help="also write the tables here (between markers; other text is kept)"
    )
    report.add_argument("--json", metavar="PATH", help="write the records here (e.g. summary.json)")
    report.add_argument(
        "--rows",
        metavar="TOML",
        help="which experiment stands for each row of the reproduced table ([[row]] label, experiment): "
        "a table of those rows first, and each record's 'row' in the JSON",
    )

    report.add_argument(
        "--against",
        metavar="DIR",
        help="instead: each run under DIRS beside the run of the same experiment and seed under DIR "
        "(e.g. a re-run of a committed row against results/); --json writes these records",
    )

    analyze = commands.add_parser("analyze", help="Hessian spectra and perturbation robustness of trained runs")
    analyze.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    analyze.add_argument("--out", metavar="DIR", help="results folder (default RUN_DIR/analysis for one run)")
    analyze.add_argument("--checkpoint", choices=("best", "last"), default="best")
    analyze.add_argument("--device", default="auto")
    analyze.add_argument("--samples", type=int, default=4096, help="training samples of the Hessian (4096)")
    analyze.add_argument("--seed", type=int, default=0, help="Hessian subset, probes and noise draws (0)")
    analyze.add_argument(
        "--parts",
        default="hessian,input_hessian,perturbation,stability",
        help="comma-separated subset of hessian, input_hessian, perturbation, stability (all)",
    )
    analyze.add_argument("--draws", type=int, default=5, help="noise draws per perturbation level (5)")
    analyze.add_argument("--eval-samples", type=int, default=None, help="test samples for the curves (all)")
    analyze.add_argument("--lanczos-steps", type=int, default=100, help="Lanczos budget for the extremes (100)")
    analyze.add_argument("--num-probes", type=int, default=32, help="Hutchinson probes for the traces (32)")
    analyze.add_argument("--density-runs", type=int, default=3, help="stochastic Lanczos quadrature runs (3)")
    analyze.add_argument("--density-steps", type=int, default=48, help="Lanczos steps per density run (48)")
    analyze.add_argument("--input-samples", type=int, default=128, help="samples for the input Hessian (128)")
    analyze.add_argument("--batch-size", type=int, default=256, help="batch size of every pass over data (256)")
    analyze.add_argument(
        "--overwrite", action="store_true", help="replace an existing <experiment>-seed<seed>.json in the output"
    )
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    from .data.sources import MissingDataError
    from .train import CheckpointError, ConfigError, RunDirError, TrainingDiverged, TrainingInterrupted
    from .train.distributed import env_rank

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    # `train CONFIG --out DIR key=value`: positionals after an option land in `extra`
    if extra and (args.command == "eval" or any(item.startswith("-") for item in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        positional = "items" if args.command == "train" else "dirs"
        setattr(args, positional, getattr(args, positional) + extra)
    args.command_line = ["lipschitz-rnn", *argv]
    try:
        if args.command == "train":
            return _train(args)
        if args.command == "eval":
            return _eval(args)
        if args.command == "analyze":
            return _analyze(args)
        return _report(args)
    except (ConfigError, RunDirError, CheckpointError, ValueError, MissingDataError) as exc:
        print(f"lipschitz-rnn {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except TrainingDiverged as exc:
        print(f"lipschitz-rnn train: {exc}", file=sys.stderr)
        return EXIT_DIVERGED
    except TrainingInterrupted as exc:  # logged; 128 + the signal's number, as a shell reports a signalled process
        # under torchrun every process stops at the same step with the same message: process 0 prints it
        if env_rank() == 0:
            print(f"lipschitz-rnn train: {exc}", file=sys.stderr)
        return exc.code


def _train(args) -> int:
    from .train import ConfigError, load_config, resume_config, train
    from .train.config import split_train_items

    configs, overrides = split_train_items(args.items)
    if args.device:
        overrides.append(f"train.device={args.device}")
    if args.resume:
        if configs or args.out:
            raise ConfigError("--resume RUN_DIR takes the run's own config.toml; pass no CONFIG and no --out")
        cfg = resume_config(args.resume, overrides)
        train(cfg, args.resume, resume=True, command=args.command_line)
        return 0
    if len(configs) != 1:
        raise ConfigError(
            f"train needs exactly one CONFIG file (got {len(configs)}: {configs}); overrides use key=value"
        )
    train(load_config(configs[0], overrides), args.out, command=args.command_line)
    return 0


def _eval(args) -> int:
    from .train import evaluate_run

    result = evaluate_run(args.run_dir, args.checkpoint, args.split, args.device)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    metric = result["metric"]
    value = result[metric]
    shown = f"{value:.2f}%" if metric == "accuracy" else f"{value:.4f}"
    print(
        f"{result['experiment']}: {result['split']} {metric} {shown} (loss {result['loss']:.4f}), "
        f"checkpoint '{result['checkpoint']}' after epoch {result['epoch']} of {result['run_dir']}"
    )
    return 0


def _report(args) -> int:
    from .train.checkpoint import atomic_write_json, atomic_write_text
    from .train.report import (
        find_analyses,
        find_searches,
        load_rows,
        markdown_table,
        robustness_table,
        rows_table,
        search_table,
        summarize,
        update_markdown,
    )

    missing_dirs = [d for d in [*args.dirs, *([args.against] if args.against else [])] if not Path(d).is_dir()]
    if missing_dirs:  # a typo would otherwise print an empty table and succeed
        raise ValueError(f"no such directory: {', '.join(map(str, missing_dirs))}")
    if args.against:
        return _compare(args)
    rows = load_rows(args.rows) if args.rows else []  # a bad rows file stops the report before any work
    notes: list[str] = []
    records = summarize(args.dirs, notes)
    notes.extend(f"{r['experiment']}: {r['warning']}" for r in records if r.get("warning"))
    if rows:
        labels = {row["experiment"]: row["label"] for row in rows}
        for record in records:
            record["row"] = labels.get(record["experiment"])
        missing = [row for row in rows if row["experiment"] not in {r["experiment"] for r in records}]
        notes.extend(f"row {row['label']!r}: no runs of {row['experiment']}" for row in missing)
    table = markdown_table(records)
    table_of_rows = rows_table(records, rows) if rows else ""
    robustness = robustness_table(find_analyses(args.dirs))
    searches = search_table(find_searches(args.dirs))
    if table_of_rows:
        print(table_of_rows)
    print(table, end="")
    for extra in (robustness, searches):
        if extra:
            print("\n" + extra, end="")
    for note in notes:
        print(note, file=sys.stderr)
    if not records:
        print("no run directories found under: " + ", ".join(args.dirs), file=sys.stderr)
    if args.markdown:  # the tables between their markers; the prose around them is kept
        tables = {"rows": table_of_rows, "results": table, "robustness": robustness, "searches": searches}
        atomic_write_text(args.markdown, update_markdown(args.markdown, tables))
    if args.json:
        atomic_write_json(args.json, records)
    return 0


def _compare(args) -> int:
    from .train.checkpoint import atomic_write_json
    from .train.report import compare_runs, comparison_table

    if args.markdown or args.rows:
        raise ValueError("--against prints a comparison of runs; it takes no --markdown or --rows")
    notes: list[str] = []
    records = compare_runs(args.dirs, [args.against], notes)
    for note in notes:
        print(note, file=sys.stderr)
    if not records:
        print("no run directories found under: " + ", ".join(args.dirs), file=sys.stderr)
        return 0
    print(comparison_table(records), end="")
    if args.json:
        atomic_write_json(args.json, records)
    return 0


def _analyze(args) -> int:
    from .train.analyze import analyze_runs

    parts = tuple(part.strip() for part in args.parts.split(",") if part.strip())
    analyze_runs(
        args.run_dirs,
        args.out,
        checkpoint=args.checkpoint,
        device=args.device,
        samples=args.samples,
        seed=args.seed,
        parts=parts,
        draws=args.draws,
        eval_samples=args.eval_samples,
        lanczos_steps=args.lanczos_steps,
        num_probes=args.num_probes,
        density_runs=args.density_runs,
        density_steps=args.density_steps,
        input_samples=args.input_samples,
        batch_size=args.batch_size,
        overwrite=args.overwrite,
    )
    return 0
