"""Time the per-epoch stability numbers: ``spectral_numbers`` against the whole ``stability_report``.

Training records a few numbers of each recurrent layer every epoch (``log.stability``):
``lipschitz_rnn.stability.spectral_numbers`` computes just those (two eigenvalue problems,
one symmetric one, two 2-norms); before, they were read off a whole ``stability_report``
without sampled diagonals, which also solves the spectrum of ``A + LW``, the linearised
exponential step and the Bendixson boxes. Both run on the CPU in float64 (the device's
weights are copied there). Timed at a cell's A and W moved away from the initialisation
(M entries N(0, (init_std/N)²), ``--init-std`` default N), round-robin, median of
``--repeats``; the numbers of the two routes are compared as well. Writes JSON with the
device, torch version, thread count and git commit.

    PYTHONPATH=src python benchmarks/stability_numbers.py --hidden 128 1024 --threads 1 \
        --output benchmarks/results/stability-numbers-cpu-1thread.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

import lipschitz_rnn as lr
from lipschitz_rnn.stability import spectral_numbers, stability_report

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recurrence import SEED, provenance, write_records


def from_report(cell: torch.nn.Module) -> dict[str, float]:
    """The per-epoch numbers read off a whole report, as training did before ``spectral_numbers``."""
    report = stability_report(cell, num_diagonal_samples=0)
    return {
        "max_re_eig_A": report.spectral_abscissa_A,
        "max_re_eig_W": report.spectral_abscissa_W,
        "lambda_max_A_sym": report.lambda_max_A_sym,
        "norm_A": report.norm_A,
        "norm_W": report.norm_W,
        "c1_margin": report.c1["margin"],
        "max_abs_R_eps_lambda_D0": report.discrete["D=0"]["max_abs_R"],
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, nargs="+", default=[128, 1024])
    parser.add_argument("--methods", nargs="+", default=["euler", "exp_euler"])
    parser.add_argument("--eps", type=float, default=0.3)
    parser.add_argument("--init-std", type=float, default=None, help="M entries N(0, (init_std/N)²); default N")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    impls = {"spectral_numbers": spectral_numbers, "stability_report": from_report}
    records = []
    for n in args.hidden:
        for method in args.methods:
            torch.manual_seed(SEED)
            init_std = args.init_std or float(n)
            with warnings.catch_warnings():  # large weights on purpose, as after training: Euler warns of them
                warnings.simplefilter("ignore", lr.StepSizeWarning)
                cell = lr.LipschitzRNNCell(1, n, method=method, eps=args.eps, beta=0.75, gamma=1.0, init_std=init_std)
            times = {name: [] for name in impls}
            for _ in range(args.repeats):
                for name, fn in impls.items():
                    start = time.perf_counter()
                    fn(cell)
                    times[name].append(time.perf_counter() - start)
            lean, full = spectral_numbers(cell), from_report(cell)
            record = {
                "N": n,
                "method": method,
                "eps": args.eps,
                "init_std": init_std,
                "seconds": {name: statistics.median(t) for name, t in times.items()},
                "max_abs_difference": max(abs(lean[key] - full[key]) for key in full),
                "numbers": lean,
            }
            s = record["seconds"]
            record["report_over_numbers"] = s["stability_report"] / s["spectral_numbers"]
            records.append(record)
            print(
                f"N={n:5d} {method:10s} spectral_numbers {s['spectral_numbers']:.3f} s  stability_report "
                f"{s['stability_report']:.3f} s  ratio {record['report_over_numbers']:.2f}"
                f"  difference {record['max_abs_difference']:.1e}"
            )
    timing = "one layer's per-epoch numbers, float64 on the CPU, median of round-robin repeats"
    write_records(args.output, provenance(torch.device("cpu"), argv, timing), records)


if __name__ == "__main__":
    main()
