"""The benchmark's choice of implementations: each kernel once by default, precision variants on request."""

import json

import pytest

from scripts_loader import load_script

recurrence = load_script("benchmarks/recurrence.py", "recurrence_benchmark")

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


def test_the_step_matrices_benchmark_writes_both_timings_and_their_agreement(tmp_path):
    benchmark = load_script("benchmarks/step_matrices.py", "step_matrices_benchmark")
    out = tmp_path / "step.json"
    benchmark.main(["--hidden", "8", "16", "--repeats", "2", "--output", str(out)])
    written = json.loads(out.read_text())
    assert [r["N"] for r in written["records"]] == [8, 16]
    for record in written["records"]:
        assert set(record["ms_forward_backward"]) == {"taylor_squaring", "matrix_exp_augmented"}
        assert all(ms > 0 for ms in record["ms_forward_backward"].values())
        assert record["max_abs_difference_float64"] < 1e-10  # the two routes compute the same matrices
    assert written["metadata"]["command"].endswith("--output " + str(out))


def test_the_stability_numbers_benchmark_times_both_routes_and_they_agree(tmp_path):
    benchmark = load_script("benchmarks/stability_numbers.py", "stability_numbers_benchmark")
    out = tmp_path / "numbers.json"
    benchmark.main(["--hidden", "8", "--methods", "euler", "exp_euler", "--repeats", "1", "--output", str(out)])
    written = json.loads(out.read_text())
    assert [(r["N"], r["method"]) for r in written["records"]] == [(8, "euler"), (8, "exp_euler")]
    for record in written["records"]:
        assert set(record["seconds"]) == {"spectral_numbers", "stability_report"}
        assert all(s > 0 for s in record["seconds"].values())
        assert record["max_abs_difference"] < 1e-12  # the same numbers by both routes
    assert written["metadata"]["command"].endswith("--output " + str(out))


def test_every_benchmark_json_records_commit_date_device_cpus_seed_and_command():
    meta = recurrence.provenance(recurrence.torch.device("cpu"), ["--sizes", "128x98"], "perf_counter")
    assert {
        "git_commit",
        "date",
        "torch_version",
        "device",
        "threads",
        "cpu_count",
        "seed",
        "command",
        "timing",
    } <= set(meta)
    assert meta["seed"] == recurrence.SEED and meta["command"].endswith("--sizes 128x98")
