"""Sweep the Triton kernels' launch configuration (rows per program, warps) on a GPU.

For each hidden size, times the forward kernel alone (inference) and forward + backward of
the fused scan (what a training step adds on top of the input projection and the readout),
against cuDNN's ``nn.RNN(tanh)`` of the same size, and records the compiled kernels'
register and spill counts. Prints a table and writes JSON.

    python benchmarks/triton_tune.py --out tune.json
    python benchmarks/triton_tune.py --sizes 256 --stages 1 2 3 --stream-blocks 16 32 --out tune256.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import statistics
import sys
import time
from pathlib import Path

import torch

import lipschitz_rnn as lr
from lipschitz_rnn.backends import fused_triton

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recurrence import git_commit  # the benchmark's own record of the commit


def bench(fn, warmup=3, repeats=15):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def scan_timings(N, B, T, method, name="lipschitz"):
    rnn = lr.build_model(name, 1, N, device="cuda", backend="triton", **({"method": method} if method else {}))
    x = torch.randn(T, B, 1, device="cuda")

    def forward():
        with torch.no_grad():
            rnn(x)

    def train():
        out, h = rnn(x.requires_grad_(False))
        (out[-1].sum() + h.sum()).backward()

    return bench(forward), bench(train)


def cudnn_timings(N, B, T):
    rnn = torch.nn.RNN(1, N, device="cuda")
    x = torch.randn(T, B, 1, device="cuda")

    def forward():
        with torch.no_grad():
            rnn(x)

    def train():
        out, h = rnn(x)
        (out[-1].sum() + h.sum()).backward()

    return bench(forward), bench(train)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--B", type=int, default=128)
    parser.add_argument("--T", type=int, default=784)
    parser.add_argument("--rows", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--warps", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--methods", nargs="+", default=["euler", "midpoint"])
    parser.add_argument("--stages", type=int, nargs="+", default=[1])
    parser.add_argument(
        "--stream-blocks", type=int, nargs="+", default=None,
        help="columns of A, W per streamed block, for N > fused_triton.ON_CHIP_HIDDEN (default: STREAM_BLOCKS)",
    )  # fmt: skip
    parser.add_argument("--asm-dir", default=None, help="save each compiled kernel's PTX here")
    parser.add_argument("--out", default="triton_tune.json")
    args = parser.parse_args()
    torch.backends.cudnn.allow_tf32 = True
    records = []
    for N in args.sizes:
        c_fwd, c_train = cudnn_timings(N, args.B, args.T)
        records.append({"impl": "cudnn_rnn_tanh", "N": N, "fwd_ms": c_fwd, "fwd_bwd_ms": c_train})
        print(f"N={N} cudnn rnn: fwd {c_fwd:.3f} ms  fwd+bwd {c_train:.3f} ms", flush=True)
        for method in args.methods:
            streamed = N > fused_triton.ON_CHIP_HIDDEN
            blocks = args.stream_blocks if streamed and args.stream_blocks else [fused_triton._matrix_block(N)]
            for rows, warps, stages, block in itertools.product(args.rows, args.warps, args.stages, blocks):
                if streamed:
                    fused_triton.STREAM_BLOCKS[N] = block
                for kernel in ("forward", "backward"):
                    fused_triton.LAUNCH_CONFIGS[(kernel, N)] = (rows, warps, stages)
                t0 = time.time()
                try:
                    fwd, train = scan_timings(N, args.B, args.T, method)
                except Exception as error:  # a config that does not compile is a result too
                    print(f"N={N} {method} BM={rows} warps={warps}: FAILED {type(error).__name__}: {error}"[:300])
                    records.append(
                        {
                            "impl": "triton",
                            "N": N,
                            "method": method,
                            "rows": rows,
                            "warps": warps,
                            "stages": stages,
                            "block": block,
                            "error": str(error)[:500],
                        }
                    )
                    continue
                kernels = {name: _kernel_stats(k) for name, k in fused_triton.LAST_COMPILED.items()}
                if args.asm_dir:
                    for name, k in fused_triton.LAST_COMPILED.items():
                        path = f"{args.asm_dir}/{name}-N{N}-{method}-bm{rows}-w{warps}-s{stages}-k{block}.ptx"
                        with open(path, "w") as f:
                            f.write(k.asm.get("ptx", ""))
                rec = {
                    "impl": "triton",
                    "N": N,
                    "method": method,
                    "rows": rows,
                    "warps": warps,
                    "stages": stages,
                    "block": block,
                    "fwd_ms": fwd,
                    "fwd_bwd_ms": train,
                    "ratio_fwd_bwd_to_cudnn": train / c_train,
                    "kernels": kernels,
                    "wall_s": time.time() - t0,
                }
                records.append(rec)
                print(
                    f"N={N} {method:8s} BM={rows:3d} warps={warps:2d} stages={stages} block={block}:"
                    f" fwd {fwd:.3f} ms  fwd+bwd {train:.3f} ms"
                    f"  x{train / c_train:.2f} of cuDNN  {kernels}",
                    flush=True,
                )
    meta = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "B": args.B, "T": args.T}
    meta["triton"] = fused_triton.triton.__version__
    meta["git_commit"] = git_commit()
    meta["command"] = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
    with open(args.out, "w") as f:
        json.dump({**meta, "records": records}, f, indent=1)


def _kernel_stats(kernel) -> dict:
    """Registers, spills and a count of the PTX instructions that decide the per-step latency."""
    ptx = getattr(kernel, "asm", {}).get("ptx", "")
    count = lambda pattern: len(re.findall(pattern, ptx))  # noqa: E731
    return {
        "n_regs": getattr(kernel, "n_regs", None),
        "n_spills": getattr(kernel, "n_spills", None),
        "mma": count(r"\bmma\.sync"),
        "wgmma": count(r"wgmma\.mma_async"),
        "ldmatrix": count(r"ldmatrix"),
        "ld_shared": count(r"ld\.shared"),
        "st_shared": count(r"st\.shared"),
        "bar_sync": count(r"bar\.sync|barrier\.sync"),
        "ld_global": count(r"ld\.global"),
        "fma_f32": count(r"fma\.rn\.f32"),
        "shared_bytes": getattr(getattr(kernel, "metadata", None), "shared", None),
    }


if __name__ == "__main__":
    main()
