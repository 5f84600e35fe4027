"""Time exp_euler's step matrices: the scaled-and-squared Taylor series against ``matrix_exp``.

``ExponentialEuler.step_matrices(L, ε)`` returns ``(e^{εL}, εφ₁(εL))`` from N × N products;
the alternative is ``torch.linalg.matrix_exp`` of the augmented ``[[εL, εI], [0, 0]]`` (2N × 2N),
whose top blocks are the same two matrices. Both are timed forward and backward (a loss on both
matrices, as in training), round-robin, median of ``--repeats``, at the A of a Lipschitz cell
with the given ``init_std`` (its norm sets the number of squarings), and the float64 difference
of the two results is reported. Writes JSON with the device, torch version and git commit.

    PYTHONPATH=src python benchmarks/step_matrices.py --hidden 128 256 --threads 2 \
        --output benchmarks/results/step-matrices-cpu-2cores.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

import lipschitz_rnn as lr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recurrence import SEED, provenance, write_records


def augmented(L: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(e^{εL}, εφ₁(εL))`` as the top blocks of ``matrix_exp([[εL, εI], [0, 0]])``."""
    n = L.shape[-1]
    top = torch.cat([eps * L, eps * torch.eye(n, dtype=L.dtype, device=L.device)], dim=1)
    expm = torch.linalg.matrix_exp(torch.cat([top, L.new_zeros(n, 2 * n)]))
    return expm[:n, :n], expm[:n, n:]


def time_once(fn, L: torch.Tensor, eps: float) -> float:
    L = L.detach().clone().requires_grad_()
    if L.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    E, P = fn(L, eps)
    (E.sum() + P.square().sum()).backward()
    if L.is_cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1e3


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--eps", type=float, default=0.3)
    parser.add_argument("--init-std", type=float, default=None, help="M entries N(0, (init_std/N)²); default N")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    method = lr.get_method("exp_euler")
    records = []
    for n in args.hidden:
        torch.manual_seed(SEED)
        cell = lr.LipschitzRNNCell(1, n, method="exp_euler", eps=args.eps, init_std=args.init_std or float(n))
        L = cell.A.detach().to(device)
        impls = {"taylor_squaring": method.step_matrices, "matrix_exp_augmented": augmented}
        times = {name: [] for name in impls}
        for fn in impls.values():  # warm-up
            time_once(fn, L, args.eps)
        for _ in range(args.repeats):
            for name, fn in impls.items():
                times[name].append(time_once(fn, L, args.eps))
        with torch.no_grad():
            ours, theirs = method.step_matrices(L.double(), args.eps), augmented(L.double(), args.eps)
        record = {
            "N": n,
            "eps": args.eps,
            "norm2_eps_A": float(torch.linalg.matrix_norm(args.eps * L.double(), 2)),
            "norm1_eps_A": float(torch.linalg.matrix_norm(args.eps * L.double(), 1)),
            "ms_forward_backward": {name: statistics.median(t) for name, t in times.items()},
            "max_abs_difference_float64": max(float((a - b).abs().max()) for a, b in zip(ours, theirs)),
        }
        record["matrix_exp_over_taylor"] = (
            record["ms_forward_backward"]["matrix_exp_augmented"] / record["ms_forward_backward"]["taylor_squaring"]
        )
        records.append(record)
        ms = record["ms_forward_backward"]
        print(
            f"N={n:5d} |eps A|_2={record['norm2_eps_A']:.2f}  taylor {ms['taylor_squaring']:.2f} ms"
            f"  matrix_exp {ms['matrix_exp_augmented']:.2f} ms  ratio {record['matrix_exp_over_taylor']:.1f}"
            f"  float64 difference {record['max_abs_difference_float64']:.1e}"
        )
    timing = "forward + backward of a loss on both matrices, float32, median of round-robin repeats"
    write_records(args.output, provenance(device, argv, timing), records)


if __name__ == "__main__":
    main()
