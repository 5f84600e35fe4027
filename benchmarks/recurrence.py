"""Time one training step of the Lipschitz recurrences against PyTorch's own RNNs, on one device.

One training step = forward + backward + Adam step of a ``SequenceClassifier`` (readout on
the last step, 10 classes, input_size 1, cross-entropy on random labels, random inputs).
Implementations (``impl``):

* ``reference``: the library's plain PyTorch loop (``backend="reference"``);
* every other registered backend whose ``device_type`` matches the device (or is ``None``):
  ``cpu`` on CPU, ``triton`` and ``cuda-bptt`` on CUDA when they are registered. The fp32-accurate
  variants of ``triton`` (``triton-tf32x3``, ``triton-ieee``: the same kernels, other arithmetic)
  are timed only when ``--impls`` names them; ``--no-tf32`` switches ``triton`` itself to strict
  fp32, so it is not listed beside ``triton-ieee``;
* ``cudnn_rnn_tanh``, ``cudnn_lstm``, ``cudnn_gru``: ``nn.RNN(tanh)``, ``nn.LSTM``, ``nn.GRU`` of
  the same size. The names are kept on CPU too; the ``engine`` field says what really ran
  (``"cuDNN"`` or ``"PyTorch CPU"``).

All implementations of one (B, N, T) are warmed up, then timed round-robin (one step of
each in turn, ``--repeats`` rounds) so that a noisy or shared machine slows them alike;
the median is reported. CUDA steps are timed with CUDA events after a synchronize, CPU
steps with ``time.perf_counter``. Peak memory is measured on one extra step per impl:
CUDA ``max_memory_allocated`` above what was allocated before the step; CPU the peak of
live tensor bytes allocated by PyTorch during the step, from ``torch.profiler`` with
``profile_memory=True`` (RSS-based measures are useless here: the allocator keeps freed
memory).

Example (the committed CPU results):

    PYTHONPATH=src python benchmarks/recurrence.py --sizes 64x98 128x98 256x98 128x784 --reference-max-steps 784

Writes ``benchmarks/results/recurrence-<device>.json`` (``--output`` to change) and prints a
table with each impl's time relative to ``cudnn_rnn_tanh`` and to ``reference``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

import lipschitz_rnn as lr
from lipschitz_rnn.backends import BACKENDS

NUM_CLASSES = 10
INPUT_SIZE = 1

#: our models: name -> (registered model, constructor kwargs, integration method)
MODELS: dict[str, tuple[str, dict[str, Any], str]] = {
    "lipschitz_euler": ("lipschitz", {"method": "euler"}, "euler"),
    "lipschitz_midpoint": ("lipschitz", {"method": "midpoint"}, "midpoint"),
    # the step matrices' cost grows with ‖εA‖ (one more squaring per doubling): timed at the initial A
    "lipschitz_exp_euler": ("lipschitz", {"method": "exp_euler"}, "exp_euler"),
    "antisymmetric": ("antisymmetric", {"method": "euler"}, "euler"),
}

#: PyTorch's RNNs: impl -> (model label, constructor)
BASELINES: dict[str, tuple[str, Callable[[int], nn.Module]]] = {
    "cudnn_rnn_tanh": ("nn.RNN(tanh)", lambda n: nn.RNN(INPUT_SIZE, n, nonlinearity="tanh")),
    "cudnn_lstm": ("nn.LSTM", lambda n: nn.LSTM(INPUT_SIZE, n)),
    "cudnn_gru": ("nn.GRU", lambda n: nn.GRU(INPUT_SIZE, n)),
}


class TorchRNNClassifier(nn.Module):
    """``nn.RNN``/``nn.LSTM``/``nn.GRU`` with a linear readout on the last step."""

    def __init__(self, rnn: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.rnn = rnn
        self.D = nn.Linear(rnn.hidden_size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.D(self.rnn(x)[0][-1])


def our_backends(device: torch.device) -> list[str]:
    """Registered backends for this device, ``reference`` excluded (it is timed on its own)."""
    names = []
    for name in BACKENDS.names():
        backend = BACKENDS.get(name)
        if name != "reference" and backend.device_type in (None, device.type):
            names.append(name)
    return names


def default_backends(device: torch.device) -> list[str]:
    """Our backends timed by default: each kernel once, in its default arithmetic (TF32 for
    ``triton``); its precision variants only on request."""
    return [name for name in our_backends(device) if getattr(BACKENDS.get(name), "precision", "tf32") == "tf32"]


def baseline_engine(device: torch.device) -> str:
    if device.type == "cuda" and torch.backends.cudnn.is_available() and torch.backends.cudnn.enabled:
        return "cuDNN"
    return "PyTorch CPU" if device.type == "cpu" else f"PyTorch {device.type}"


def our_engine(impl: str) -> str:
    return {"reference": "PyTorch eager loop", "cpu": "lipschitz_rnn cpu backend"}.get(
        impl, f"lipschitz_rnn {impl} backend"
    )


class Entry:
    """One implementation of one model at one size: a model, its optimiser and a data batch."""

    def __init__(self, impl: str, model_name: str, method: Optional[str], engine: str, module: nn.Module, x, y):
        self.impl, self.model, self.method, self.engine = impl, model_name, method, engine
        self.module, self.x, self.y = module, x, y
        self.optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
        self.times_ms: list[float] = []
        self.peak_mem_mb: Optional[float] = None
        self.repeats = 0

    def step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(self.module(self.x), self.y)
        loss.backward()
        self.optimizer.step()


def timed(entry: Entry, device: torch.device) -> float:
    """Milliseconds of one training step."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        entry.step()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end)
    start_s = time.perf_counter()
    entry.step()
    return (time.perf_counter() - start_s) * 1e3


def peak_memory_mb(entry: Entry, device: torch.device) -> float:
    """Peak memory of one training step above what was allocated before it, in MiB."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        entry.step()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        entry.step()
    changes = []
    for event in prof.events():
        # allocations are charged to the op that made them, frees appear as "[memory]" events
        delta = event.cpu_memory_usage if event.name == "[memory]" else event.self_cpu_memory_usage
        if delta:
            changes.append((event.time_range.start, delta))
    live = peak = 0
    for _, delta in sorted(changes):
        live += delta
        peak = max(peak, live)
    return peak / 2**20


def build_entries(args, device: torch.device, hidden: int, steps: int) -> tuple[list[Entry], list[dict]]:
    batch = args.batch
    gen = torch.Generator().manual_seed(SEED)
    x = torch.randn(steps, batch, INPUT_SIZE, generator=gen).to(device)
    y = torch.randint(0, NUM_CLASSES, (batch,), generator=gen).to(device)
    entries, skipped = [], []
    run_reference = args.reference_max_steps is None or steps <= args.reference_max_steps
    for model_name in args.models:
        registered, kwargs, method = MODELS[model_name]
        impls = (["reference"] if run_reference and "reference" in args.impls else []) + [
            name for name in our_backends(device) if name in args.impls
        ]
        if not run_reference and "reference" in args.impls:
            skipped.append(
                {
                    "impl": "reference",
                    "model": model_name,
                    "N": hidden,
                    "T": steps,
                    "reason": "T > --reference-max-steps",
                }
            )
        for impl in impls:
            torch.manual_seed(SEED)
            rnn = lr.build_model(registered, INPUT_SIZE, hidden, backend=impl, device=device, **kwargs)
            module = lr.SequenceClassifier(rnn, NUM_CLASSES).to(device)
            try:
                with torch.no_grad():
                    module(x[:2])  # an explicit backend that cannot run this model raises here
            except ValueError as error:
                skipped.append({"impl": impl, "model": model_name, "N": hidden, "T": steps, "reason": str(error)})
                continue
            entries.append(Entry(impl, model_name, method, our_engine(impl), module, x, y))
    for impl, (label, make) in BASELINES.items():
        if impl in args.impls:
            torch.manual_seed(SEED)
            module = TorchRNNClassifier(make(hidden), NUM_CLASSES).to(device)
            entries.append(Entry(impl, label, None, baseline_engine(device), module, x, y))
    return entries, skipped


def run_size(args, device: torch.device, hidden: int, steps: int) -> tuple[list[dict], list[dict]]:
    entries, skipped = build_entries(args, device, hidden, steps)
    for entry in entries:
        entry.repeats = args.reference_repeats if entry.impl == "reference" else args.repeats
        for _ in range(args.reference_warmup if entry.impl == "reference" else args.warmup):
            entry.step()
    for round_index in range(max(entry.repeats for entry in entries)):
        for entry in entries:  # round-robin: noise on a shared machine hits every impl alike
            if round_index < entry.repeats:
                entry.times_ms.append(timed(entry, device))
    for entry in entries:
        entry.peak_mem_mb = peak_memory_mb(entry, device)
    records = []
    for entry in entries:
        records.append(
            {
                "impl": entry.impl,
                "model": entry.model,
                "method": entry.method,
                "B": args.batch,
                "N": hidden,
                "T": steps,
                "device": device_name(device),
                "engine": entry.engine,
                "ms_per_step": statistics.median(entry.times_ms),
                "ms_min": min(entry.times_ms),
                "ms_max": max(entry.times_ms),
                "repeats": len(entry.times_ms),
                "peak_mem_mb": round(entry.peak_mem_mb, 2),
            }
        )
    add_ratios(records)
    return records, skipped


def add_ratios(records: list[dict]) -> None:
    """``x_cudnn_rnn_tanh`` and ``x_reference``: time over the same-size baseline's time."""
    for record in records:
        same_size = [r for r in records if (r["B"], r["N"], r["T"]) == (record["B"], record["N"], record["T"])]
        rnn = [r for r in same_size if r["impl"] == "cudnn_rnn_tanh"]
        ref = [r for r in same_size if r["impl"] == "reference" and r["model"] == record["model"]]
        record["x_cudnn_rnn_tanh"] = round(record["ms_per_step"] / rnn[0]["ms_per_step"], 3) if rnn else None
        record["x_reference"] = round(record["ms_per_step"] / ref[0]["ms_per_step"], 4) if ref else None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_slug(device: torch.device) -> str:
    """``cpu-2cores`` (threads PyTorch uses) or the GPU model, e.g. ``h100``."""
    if device.type == "cpu":
        return f"cpu-{torch.get_num_threads()}cores"
    name = torch.cuda.get_device_name(device)
    match = re.search(r"\b([A-Z]{1,2}\d{2,4})\b", name)
    return (match.group(1) if match else re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")).lower()


#: Every benchmark draws its inputs and initial weights after seeding torch with this (recorded in the JSON).
SEED = 0


def git_commit() -> Optional[str]:
    exported = os.environ.get("LIPSCHITZ_RNN_GIT_COMMIT", "").strip()
    if exported:  # as in the harness: a stale .git copied with an exported tree would mislead
        return exported
    try:
        root = Path(__file__).resolve().parent.parent
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, check=True)
        return commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def provenance(device: torch.device, argv: Optional[list[str]], timing: str) -> dict:
    """What every benchmark's JSON records: commit, date, torch, device, threads, CPUs, seed, command line, timing."""
    return {
        "git_commit": git_commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch_version": torch.__version__,
        "device": device_name(device),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "seed": SEED,
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "timing": timing,
    }


def write_records(output: Path, meta: dict, records: list[dict]) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"metadata": meta, "records": records}, indent=1) + "\n")
    print(f"wrote {output}")


def metadata(args, device: torch.device) -> dict:
    timing = "median of round-robin repeats after warm-up; " + (
        "CUDA events after synchronize" if device.type == "cuda" else "time.perf_counter"
    )
    meta = {
        **provenance(device, None, timing),
        "python_version": platform.python_version(),
        "device_type": device.type,
        "step": "forward + backward + Adam step of SequenceClassifier (last-step readout, 10 classes, input_size 1)",
        "peak_mem_method": (
            "torch.cuda.max_memory_allocated minus memory_allocated before the step"
            if device.type == "cuda"
            else "torch.profiler profile_memory: peak live bytes allocated by PyTorch during one step"
        ),
        "dtype": "float32",
        "sizes_NxT": [f"{n}x{t}" for n, t in args.sizes],
        "warmup": args.warmup,
        "repeats": args.repeats,
        "reference_warmup": args.reference_warmup,
        "reference_repeats": args.reference_repeats,
        "reference_max_steps": args.reference_max_steps,
    }
    if device.type == "cuda":
        meta["tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
        meta["tf32_cudnn"] = torch.backends.cudnn.allow_tf32
        meta["tf32_triton"] = getattr(BACKENDS.get("triton"), "allow_tf32", None) if "triton" in BACKENDS else None
        meta["cudnn_version"] = torch.backends.cudnn.version()
    else:
        meta["tf32"] = None
        if hasattr(os, "getloadavg"):
            meta["loadavg_at_start"] = list(os.getloadavg())
    return meta


def print_table(records: list[dict]) -> None:
    header = (
        f"{'model':20s} {'impl':16s} {'engine':28s} {'N':>4s} {'T':>5s} "
        f"{'ms/step':>10s} {'x rnn_tanh':>10s} {'x ref':>8s} {'peak MB':>8s}"
    )
    print(header)
    print("-" * len(header))
    for r in records:
        x_rnn = f"{r['x_cudnn_rnn_tanh']:.2f}" if r.get("x_cudnn_rnn_tanh") is not None else "-"
        x_ref = f"{r['x_reference']:.3f}" if r.get("x_reference") is not None else "-"
        print(
            f"{r['model']:20s} {r['impl']:16s} {r['engine']:28s} {r['N']:4d} {r['T']:5d} "
            f"{r['ms_per_step']:10.2f} {x_rnn:>10s} {x_ref:>8s} {r['peak_mem_mb']:8.1f}"
        )


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=128, help="B (default 128)")
    parser.add_argument("--hidden", type=int, nargs="+", default=[64, 128, 256], help="N values")
    parser.add_argument("--steps", type=int, nargs="+", default=[98, 784, 1024], help="T values")
    parser.add_argument(
        "--sizes", nargs="+", default=None, help="NxT pairs, e.g. 128x98 128x784 (instead of --hidden x --steps)"
    )
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument(
        "--impls",
        nargs="+",
        default=None,
        help="subset of impls (default: reference, our backends in their default arithmetic, the baselines)",
    )
    parser.add_argument("--repeats", type=int, default=15, help="timed steps per impl (median reported)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--reference-repeats", type=int, default=3, help="timed steps of the (slow) reference")
    parser.add_argument("--reference-warmup", type=int, default=1)
    parser.add_argument(
        "--reference-max-steps",
        type=int,
        default=-1,
        help="time the reference only for T <= this (default: 98 on CPU, every T on CUDA; 0 skips it)",
    )
    parser.add_argument("--tf32", action=argparse.BooleanOptionalAction, default=None, help="CUDA: allow TF32")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--output", type=Path, default=None, help="JSON path (default benchmarks/results/...)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.sizes is None:
        args.sizes = [(n, t) for t in args.steps for n in args.hidden]
    else:
        try:
            args.sizes = [tuple(int(v) for v in size.lower().split("x")) for size in args.sizes]
        except ValueError:
            parser.error(f"--sizes takes NxT pairs like 128x784, got {args.sizes}")
    if args.reference_max_steps == -1:
        args.reference_max_steps = 98 if device.type == "cpu" else None
    every_impl = ["reference", *our_backends(device), *BASELINES]
    if args.impls is None:
        args.impls = ["reference", *default_backends(device), *BASELINES]
    unknown = sorted(set(args.impls) - set(every_impl))
    if unknown:
        parser.error(f"unknown impl(s) {unknown}; on {device.type}: {every_impl}")
    if args.tf32 is False and {"triton", "triton-ieee"} <= set(args.impls):
        parser.error("--no-tf32 makes 'triton' strict fp32, the same kernels as 'triton-ieee': list one of them")
    return args, device


def main(argv=None) -> None:
    args, device = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if device.type == "cuda" and args.tf32 is not None:
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        torch.backends.cudnn.allow_tf32 = args.tf32
        if "triton" in BACKENDS:  # our fused kernels follow the same switch
            BACKENDS.get("triton").allow_tf32 = args.tf32
    output = args.output or Path(__file__).parent / "results" / f"recurrence-{device_slug(device)}.json"
    records, skipped = [], []
    meta = metadata(args, device)
    started = time.perf_counter()
    for hidden, steps in args.sizes:
        size_records, size_skipped = run_size(args, device, hidden, steps)
        print_table(size_records)
        print(flush=True)
        records += size_records
        skipped += size_skipped
    meta["wall_s"] = round(time.perf_counter() - started, 1)
    if device.type == "cpu" and hasattr(os, "getloadavg"):
        meta["loadavg_at_end"] = list(os.getloadavg())
    result = {"metadata": meta, "records": records, "skipped": skipped}
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
