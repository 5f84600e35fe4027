"""The benchmark's choice of implementations: each kernel once by default, precision variants on request."""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("recurrence_benchmark", ROOT / "benchmarks" / "recurrence.py")
recurrence = importlib.util.module_from_spec(spec)
sys.modules["recurrence_benchmark"] = recurrence
spec.loader.exec_module(recurrence)

needs_triton = pytest.mark.skipif(
    "triton" not in recurrence.BACKENDS, reason="the triton backend is not registered (no triton package)"
)


@needs_triton
def test_cuda_default_times_each_kernel_once_in_its_default_arithmetic():
    args, device = recurrence.parse_args(["--device", "cuda"])
    assert device.type == "cuda"
    assert {"reference", "triton", "cudnn_rnn_tanh"} <= set(args.impls)
    assert not {"triton-tf32x3", "triton-ieee"} & set(args.impls)


@needs_triton
def test_precision_variants_are_timed_when_named():
    args, _ = recurrence.parse_args(["--device", "cuda", "--impls", "triton", "triton-tf32x3", "triton-ieee"])
    assert args.impls == ["triton", "triton-tf32x3", "triton-ieee"]


@needs_triton
def test_no_tf32_refuses_triton_beside_its_strict_fp32_twin(capsys):
    with pytest.raises(SystemExit):
        recurrence.parse_args(["--device", "cuda", "--no-tf32", "--impls", "triton", "triton-ieee"])
    assert "same kernels as 'triton-ieee'" in capsys.readouterr().err
    args, _ = recurrence.parse_args(["--device", "cuda", "--no-tf32", "--impls", "triton", "cudnn_rnn_tanh"])
    assert args.impls == ["triton", "cudnn_rnn_tanh"]


def test_cpu_default_has_no_cuda_backends():
    args, _ = recurrence.parse_args(["--device", "cpu"])
    assert "cpu" in args.impls and "reference" in args.impls
    assert not [name for name in args.impls if name.startswith(("triton", "cuda"))]
