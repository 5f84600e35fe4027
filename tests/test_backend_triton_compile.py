"""Every fused-kernel variant compiles for Hopper (sm_90) on a machine without a GPU.

Triton's interpreter checks the kernels' arithmetic but not what the compiler accepts (code
after a `return` in a compile-time branch is still compiled, for one). The helper script builds
the real PTX for each variant with the ptxas bundled in the triton wheel; this test checks that
each one compiles and that the recurrent products map onto Hopper's tensor-core instructions.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch

from lipschitz_rnn.backends import fused_triton

pytestmark = [
    pytest.mark.skipif(fused_triton.triton is None, reason="triton is not installed"),
    pytest.mark.skipif(torch.cuda.is_available(), reason="compiled and run for real by the gpu tests"),
]


@pytest.fixture(scope="module")
def compiled():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    script = pathlib.Path(__file__).with_name("triton_compile_check.py")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return {r["kernel"]: r for r in map(json.loads, result.stdout.splitlines())}


def test_every_tf32_variant_compiles_to_warpgroup_mma(compiled):
    tf32 = {name: r for name, r in compiled.items() if "ieee" not in name}
    assert len(tf32) == 20  # 5 cell variants x (plain, dt+lengths) x (forward, backward)
    for name, r in tf32.items():
        assert r["wgmma"] > 0 and r["tf32"], name


def test_strict_fp32_uses_no_tensor_cores(compiled):
    r = compiled["forward ieee"]
    assert r["wgmma"] == 0 and r["mma"] == 0
