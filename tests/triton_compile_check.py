"""Compile every fused-kernel variant for Hopper (sm_90) without a GPU; print one JSON line per kernel.

Run by tests/test_backend_triton_compile.py in a subprocess with TRITON_INTERPRET unset (the
test session itself runs Triton's interpreter, whose kernels cannot be compiled). Each kernel
is compiled with its launch configuration from ``fused_triton`` (warps, stages, streamed block)
at N = 64 (A and W on chip) and N = 256, 512 (streamed); its static shared memory must fit a
Hopper block, and registers and spills come from the bundled ptxas where it can be run.
"""

import json
import re
import subprocess
import sys
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from lipschitz_rnn.backends import fused_triton

FORWARD_POINTERS = ["u_ptr", "h0_ptr", "A_ptr", "W_ptr", "scale_ptr", "len_ptr", "out_ptr", "s1_ptr", "s2_ptr",
                    "mid_ptr", "hlast_ptr", "scratch_ptr"]  # fmt: skip
BACKWARD_POINTERS = ["gout_ptr", "ghlast_ptr", "A_ptr", "W_ptr", "scale_ptr", "len_ptr", "s1_ptr", "s2_ptr", "du_ptr",
                     "pa_ptr", "pam_ptr", "pwm_ptr", "gh0_ptr", "scratch_ptr"]  # fmt: skip
VARIANTS = [(0, True, False), (1, True, False), (2, True, False), (0, False, False), (0, False, True)]
#: shared memory a Hopper (H100/H200) block may use: 227 KB
MAX_SHARED = 232448


def compile_kernel(kernel, pointers, constexprs, num_warps=4, num_stages=1):
    types = {name: ("*i32" if name == "len_ptr" else "*fp32") for name in pointers}
    types.update({"T": "i32", "B": "i32", "eps": "fp32", "alpha": "fp32"})
    types.update({name: "constexpr" for name in constexprs})
    names = kernel.arg_names  # the signature must follow the kernel's parameter order
    assert set(names) == set(types), set(names) ^ set(types)
    signature = {name: types[name] for name in names}
    # pointers are 16-byte aligned, as Triton specializes them at launch for torch's allocations
    aligned = {(names.index(name),): [["tt.divisibility", 16]] for name in pointers}
    constants = {(names.index(k),): v for k, v in constexprs.items()}
    source = ASTSource(fn=kernel, signature=signature, constexprs=constants, attrs=aligned)
    return triton.compile(
        source, target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps, "num_stages": num_stages}
    )


def ptxas_usage(kernel):
    """Registers and spill bytes from ``ptxas -v`` on the kernel's PTX (None where ptxas cannot run)."""
    try:
        from triton.backends.nvidia.compiler import get_ptxas

        with tempfile.NamedTemporaryFile("w", suffix=".ptx") as f:
            f.write(kernel.asm["ptx"])
            f.flush()
            arch = "sm_90a" if "sm_90a" in kernel.asm["ptx"] else "sm_90"
            log = subprocess.run([get_ptxas(90).path, f"-arch={arch}", "-v", f.name, "-o", "/dev/null"],
                                 capture_output=True, text=True, timeout=300)  # fmt: skip
    except Exception:  # a report, not a check: another triton may lay its tools out differently
        return {}
    text = log.stdout + log.stderr
    registers = re.search(r"Used (\d+) registers", text)
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", text)
    usage = {"registers": int(registers.group(1)) if registers else None}
    if spills:
        usage.update(spill_stores=int(spills.group(1)), spill_loads=int(spills.group(2)))
    return usage


def report(name, kernel):
    ptx = kernel.asm["ptx"]
    shared = kernel.metadata.shared
    print(json.dumps({"kernel": name, "wgmma": len(re.findall(r"wgmma\.mma_async", ptx)),
                      "mma": len(re.findall(r"\bmma\.sync", ptx)), "tf32": "tf32" in ptx,
                      "cp_async": len(re.findall(r"\bcp\.async\.c[ag]\.", ptx)), "shared": shared,
                      **ptxas_usage(kernel)}), flush=True)  # fmt: skip
    assert shared <= MAX_SHARED, f"{name}: {shared} bytes of shared memory, a Hopper block has {MAX_SHARED}"


def compile_both(N, method, has_a, gated, extras, precision="tf32"):
    """Forward and backward kernels at hidden size N with their launch configurations."""
    common = dict(N=N, BK=fused_triton._matrix_block(N), METHOD=method, HAS_A=has_a, GATED=gated,
                  G=2 if gated else 1, HAS_SCALE=extras, HAS_LEN=extras, PRECISION=precision)  # fmt: skip
    tag = f"N={N},method={method},A={has_a},gated={gated},dt_lengths={extras}"
    for kernel, pointers, extra in (("forward", FORWARD_POINTERS, {"SAVE": True}), ("backward", BACKWARD_POINTERS, {})):
        rows, warps, stages = fused_triton._launch_config(kernel, N)
        fn = getattr(fused_triton, f"_scan_{kernel}")
        compiled = compile_kernel(fn, pointers, {**common, **extra, "BM": rows}, num_warps=warps, num_stages=stages)
        report(f"{kernel} {tag}" + ("" if precision == "tf32" else f" {precision}"), compiled)


def main():
    for N in (64, 256):
        for method, has_a, gated in VARIANTS:
            for extras in (False, True):
                compile_both(N, method, has_a, gated, extras)
    for method, has_a, gated in VARIANTS:  # N = 512: the widest, with every option
        compile_both(512, method, has_a, gated, True)
    ieee = dict(N=32, BK=32, BM=16, METHOD=0, HAS_A=True, GATED=False, G=1, HAS_SCALE=False, HAS_LEN=False, SAVE=False)
    report("forward ieee", compile_kernel(fused_triton._scan_forward, FORWARD_POINTERS, {**ieee, "PRECISION": "ieee"}))
    compile_both(256, 0, True, False, False, precision="ieee")
    return 0


if __name__ == "__main__":
    sys.exit(main())
