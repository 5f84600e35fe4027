"""Compile every fused-kernel variant for Hopper (sm_90) without a GPU; print one JSON line per kernel.

Run by tests/test_backend_triton_compile.py in a subprocess with TRITON_INTERPRET unset (the
test session itself runs Triton's interpreter, whose kernels cannot be compiled).
"""

import json
import re
import sys

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from lipschitz_rnn.backends import fused_triton

FORWARD_POINTERS = ["u_ptr", "h0_ptr", "A_ptr", "W_ptr", "scale_ptr", "len_ptr", "out_ptr", "s1_ptr", "s2_ptr",
                    "mid_ptr", "hlast_ptr"]  # fmt: skip
BACKWARD_POINTERS = ["gout_ptr", "ghlast_ptr", "A_ptr", "W_ptr", "scale_ptr", "len_ptr", "s1_ptr", "s2_ptr", "du_ptr",
                     "pa_ptr", "pam_ptr", "pwm_ptr", "gh0_ptr"]  # fmt: skip
VARIANTS = [(0, True, False), (1, True, False), (2, True, False), (0, False, False), (0, False, True)]


def compile_kernel(kernel, pointers, constexprs, num_warps=4):
    types = {name: ("*i32" if name == "len_ptr" else "*fp32") for name in pointers}
    types.update({"T": "i32", "B": "i32", "eps": "fp32", "alpha": "fp32"})
    types.update({name: "constexpr" for name in constexprs})
    names = kernel.arg_names  # the signature must follow the kernel's parameter order
    assert set(names) == set(types), set(names) ^ set(types)
    signature = {name: types[name] for name in names}
    source = ASTSource(fn=kernel, signature=signature, constexprs={(names.index(k),): v for k, v in constexprs.items()})
    return triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps, "num_stages": 1})


def report(name, kernel):
    ptx = kernel.asm["ptx"]
    print(json.dumps({"kernel": name, "wgmma": len(re.findall(r"wgmma\.mma_async", ptx)),
                      "mma": len(re.findall(r"\bmma\.sync", ptx)), "tf32": "tf32" in ptx}), flush=True)  # fmt: skip


def main():
    for method, has_a, gated in VARIANTS:
        for extras in (False, True):
            common = dict(N=64, BM=16, METHOD=method, HAS_A=has_a, GATED=gated, G=2 if gated else 1,
                          HAS_SCALE=extras, HAS_LEN=extras, PRECISION="tf32")  # fmt: skip
            tag = f"method={method},A={has_a},gated={gated},dt_lengths={extras}"
            forward = compile_kernel(fused_triton._scan_forward, FORWARD_POINTERS, {**common, "SAVE": True})
            report("forward " + tag, forward)
            report("backward " + tag, compile_kernel(fused_triton._scan_backward, BACKWARD_POINTERS, common))
    ieee = dict(N=32, BM=16, METHOD=0, HAS_A=True, GATED=False, G=1, HAS_SCALE=False, HAS_LEN=False, SAVE=False)
    report("forward ieee", compile_kernel(fused_triton._scan_forward, FORWARD_POINTERS, {**ieee, "PRECISION": "ieee"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
