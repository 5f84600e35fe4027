"""Fused GPU recurrence in Triton: one persistent kernel walks all T steps forward, one walks back.

Each program owns ``BM`` sequences for the whole time loop, so a time step costs two
(N × N)·(N × BM) tensor-core products plus pointwise work, with no launch, no autograd node
and no trip through device memory for the state. The state block is held transposed
(N × BM) so the matrices are the left operand: at N >= 64 Triton then emits Hopper's
warpgroup MMA (wgmma) even for 16-sequence tiles. Two regimes for A and W:

* N <= ``ON_CHIP_HIDDEN`` (128): both are loaded once into shared memory and held there for
  the whole loop (2 N² fp32 = 128 KB at N = 128);
* N = 256, 512: they no longer fit (512 KB at N = 256; H100/H200 give a block 227 KB), so
  they stay in global memory, where L2 keeps them, and every product streams them through a
  software-pipelined loop over column blocks (``STREAM_BLOCKS``) against the matching row
  blocks of the state, which is passed through a small per-program scratch for that. Each
  step then re-reads 2 N² fp32 from L2 per program: bandwidth per SM, not shared memory,
  bounds a step (see benchmarks/NOTES-triton.md).

The input projection ``u = U x + b`` is one GEMM before the kernel (autograd carries its
gradient to U, b and x), and the weight gradients are a few large GEMMs after the backward
kernel:

    Euler:  h⁺ = h + ε f(h),  f(h) = α A h + tanh(W h + u)       (AntisymmetricRNN: α = 0)
    backward, with λ = ∂L/∂h⁺ and d = λ ⊙ (1 − s²), s = tanh(W h + u):
            ∂L/∂h = λ + ε (α Aᵀ λ + Wᵀ d),   ∂L/∂u = ε d,
            ∂L/∂W = Σ_t ε d hᵀ,   ∂L/∂A = α Σ_t ε λ hᵀ            (one GEMM each, over all t)

Midpoint and Heun are the same with two stages (derivations at ``_scan_backward``); the gated
AntisymmetricRNN multiplies by ``g = sigmoid(W h + u_g)``. The forward saves the tanh (and gate)
activations and the stage point, so the backward needs no recomputation.

Precision: storage is float32. The recurrent products (and the weight-gradient GEMMs) run at one
of three precisions, each registered as its own backend name:

* ``"triton"``: TF32 tensor cores (10 mantissa bits per product), the default, like cuDNN's RNN
  in PyTorch;
* ``"triton-tf32x3"``: three TF32 products per product (Triton's ``tf32x3``), accurate to about
  fp32 on the tensor cores, for results that should match a strict-fp32 run;
* ``"triton-ieee"``: strict fp32 on the CUDA cores (several times slower).

The test suite states the tolerances against the reference backend for each.

Triton's interpreter (``TRITON_INTERPRET=1`` before import) runs the same kernels on CPU
tensors, which is how CI tests them without a GPU.
"""

from __future__ import annotations

import contextlib
import os
from typing import Optional

import torch
from torch import Tensor

from . import AUTO_ORDER, BACKENDS, first_order_backward

try:  # Triton ships with PyTorch's CUDA builds; without it this backend reports itself unsupported.
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the installation
    triton = None

__all__ = ["TritonBackend"]

METHOD_CODES = {"euler": 0, "midpoint": 1, "heun": 2}
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


#: (rows per program, warps, software-pipeline stages) by kernel and hidden size; chosen by the
#: sweep in benchmarks/triton_tune.py (which overrides entries to measure alternatives). The
#: stages pipeline the streamed products' block loop (N > ON_CHIP_HIDDEN). The sweeps on an H200
#: (benchmarks/results/triton-tuning/v4-streamed-n{256,512}.json) put 3 stages of 16-column blocks
#: first for midpoint at N = 256 and for both cells at N = 512, and within 6 % of first (3 stages of
#: 32) for Euler at N = 256; against the earlier 2 stages of 32 (N = 256) and of 16 (N = 512) that
#: is -8 to -12 % on forward + backward.
LAUNCH_CONFIGS: dict[tuple[str, int], tuple[int, int, int]] = {
    **{(kernel, n): (16, 4 if n <= 64 else 8, 1) for kernel in ("forward", "backward") for n in (16, 32, 64, 128)},
    **{(kernel, n): (16, 8, 3) for kernel in ("forward", "backward") for n in (256, 512)},
}
#: Up to this N, A and W live in shared memory for the whole loop (2 N² fp32 next to the state tiles).
ON_CHIP_HIDDEN = 128
#: Beyond ON_CHIP_HIDDEN: columns of A and W per block of the streamed products, which read the
#: matrices from global memory (L2) every step. Blocks of A and W (2 × N × block fp32) per
#: pipeline stage share the 227 KB of shared memory; smaller blocks spill less.
STREAM_BLOCKS: dict[int, int] = {128: 32, 256: 16, 512: 16}
#: tf32x3 splits each on-chip operand into high and low TF32 parts, which roughly doubles the
#: shared memory of the on-chip regime: A and W at N = 128 then need 278,528 bytes, more than an
#: H200's 232,448, so with both matrices tf32x3 holds them on chip only up to N = 64 and streams
#: N = 128 in blocks of STREAM_BLOCKS[128] (one matrix, the AntisymmetricRNN's, still fits).
ON_CHIP_HIDDEN_TF32X3_TWO_MATRICES = 64
#: Largest N compiled: the state tiles (N × 16 fp32 each) must still fit in registers (N = 512
#: already spills 1-2 KB per thread).
MAX_HIDDEN = 512
#: the compiled kernels of the latest launches (register and spill counts for the tuning script)
LAST_COMPILED: dict[str, object] = {}


def _launch_config(kernel: str, hidden: int) -> tuple[int, int, int]:
    return LAUNCH_CONFIGS[(kernel, hidden)]


def _matrix_block(hidden: int, precision: str = "tf32", two_matrices: bool = True) -> int:
    """Columns of A and W per block of the recurrent products: ``hidden`` means held on chip."""
    on_chip = ON_CHIP_HIDDEN_TF32X3_TWO_MATRICES if precision == "tf32x3" and two_matrices else ON_CHIP_HIDDEN
    return hidden if hidden <= on_chip else STREAM_BLOCKS[hidden]


if triton is not None:

    @triton.jit
    def _tanh(x):
        # tanh via exp of a non-positive argument: no overflow, accurate to fp32 rounding.
        e = tl.exp(-2.0 * tl.abs(x))
        t = (1.0 - e) / (1.0 + e)
        return tl.where(x >= 0, t, -t)

    @triton.jit
    def _streamed(M1_ptr, y1, M2_ptr, y2, scratch_ptr, TWO: tl.constexpr, SAME: tl.constexpr, N: tl.constexpr,
                  BK: tl.constexpr, BM: tl.constexpr, PRECISION: tl.constexpr):  # fmt: skip
        """(M1 @ y1, M2 @ y2) for column states y (N × BM), the row-major matrices in global memory.

        For N too large to hold A and W on chip: a GEMM loop over column blocks of M (N × BK),
        which stays in L2 and is re-read every step. The loop picks the matching row blocks of y
        by index, which a register tensor does not allow, so the states go through the program's
        scratch (2, N, BM) first. Only M1 without TWO; SAME: y2 is y1 (stored and loaded once).
        """
        at = tl.arange(0, N)[:, None] * BM + tl.arange(0, BM)[None, :]
        tl.debug_barrier()  # every thread has finished reading the previous product's states
        tl.store(scratch_ptr + at, y1)
        if TWO and not SAME:
            tl.store(scratch_ptr + N * BM + at, y2)
        tl.debug_barrier()  # the states are visible to the whole program
        rows = tl.arange(0, N)
        ks = tl.arange(0, BK)
        acc1 = tl.zeros((N, BM), tl.float32)
        acc2 = acc1
        for k0 in range(0, N, BK):  # software-pipelined by the launch's num_stages
            m_at = rows[:, None] * N + (k0 + ks)[None, :]
            y_at = (k0 + ks)[:, None] * BM + tl.arange(0, BM)[None, :]
            y1_k = tl.load(scratch_ptr + y_at)
            m1 = tl.load(M1_ptr + m_at, eviction_policy="evict_last")
            acc1 = tl.dot(m1, y1_k, acc1, input_precision=PRECISION)
            if TWO:
                y2_k = y1_k
                if not SAME:
                    y2_k = tl.load(scratch_ptr + N * BM + y_at)
                m2 = tl.load(M2_ptr + m_at, eviction_policy="evict_last")
                acc2 = tl.dot(m2, y2_k, acc2, input_precision=PRECISION)
        return acc1, acc2

    @triton.jit
    def _field(y, u, ug, A, W, alpha, scratch_ptr, N: tl.constexpr, BM: tl.constexpr, BK: tl.constexpr,
               HAS_A: tl.constexpr, GATED: tl.constexpr, PRECISION: tl.constexpr):  # fmt: skip
        """f(y) = α A y + tanh(W y + u) [⊙ sigmoid(W y + u_g)] for a block of column states y (N × BM).

        Returns (f, s, g). The matrices are the left operand (M = N rows), so at N >= 64 the
        products map onto Hopper's warpgroup MMA even for a 16-sequence tile. A and W are the
        matrices held on chip (BK == N) or pointers to them in global memory (BK < N: streamed).
        """
        if BK == N:
            z = tl.dot(W, y, input_precision=PRECISION)
        else:
            z, Ay = _streamed(W, y, A, y, scratch_ptr, HAS_A, True, N, BK, BM, PRECISION)
        s = _tanh(z + u)
        f = s
        g = s
        if GATED:
            g = tl.sigmoid(z + ug)
            f = g * s
        if HAS_A:
            if BK == N:
                Ay = tl.dot(A, y, input_precision=PRECISION)
            f = f + alpha * Ay
        return f, s, g

    @triton.jit
    def _back(Wt, d, At, lam, alpha, scratch_ptr, N: tl.constexpr, BM: tl.constexpr, BK: tl.constexpr,
              HAS_A: tl.constexpr, PRECISION: tl.constexpr):  # fmt: skip
        """Wᵀ d + α Aᵀ λ (without HAS_A, Wᵀ d): Wt, At are Wᵀ, Aᵀ on chip or pointers to row-major copies."""
        if BK == N:
            back = tl.dot(Wt, d, input_precision=PRECISION)
            if HAS_A:
                back = back + alpha * tl.dot(At, lam, input_precision=PRECISION)
        else:
            back, back_a = _streamed(Wt, d, At, lam, scratch_ptr, HAS_A, False, N, BK, BM, PRECISION)
            if HAS_A:
                back = back + alpha * back_a
        return back

    @triton.jit(do_not_specialize=["T", "B"])
    def _scan_forward(
        u_ptr,  # (T, B, G*N) projected input; G = 2 for gated cells ([u, u_g])
        h0_ptr,  # (B, N)
        A_ptr,  # (N, N) row-major A (column-convention matrix); unused without HAS_A
        W_ptr,  # (N, N) row-major W
        scale_ptr,  # (T, B) step multipliers (dt), if HAS_SCALE
        len_ptr,  # (B,) int32 lengths, if HAS_LEN
        out_ptr,  # (T, B, N) outputs h_{t+1}, zero past each length
        s1_ptr,  # (T, B, N) tanh at stage 1, if SAVE
        s2_ptr,  # (T, B, N) tanh at stage 2 (two-stage methods) or the gate (gated Euler), if SAVE
        mid_ptr,  # (T, B, N) the stage-2 point (two-stage methods), if SAVE
        hlast_ptr,  # (B, N) state after each sequence's last step
        T,
        B,
        eps,
        alpha,
        scratch_ptr,  # (programs, 2, N, BM) the states multiplied by streamed matrices; unused on chip
        N: tl.constexpr,
        BM: tl.constexpr,
        BK: tl.constexpr,  # columns of A, W per block: N holds them on chip, less streams them (L2)
        METHOD: tl.constexpr,
        HAS_A: tl.constexpr,
        GATED: tl.constexpr,
        G: tl.constexpr,  # 2 if GATED else 1: width of u in units of N
        HAS_SCALE: tl.constexpr,
        HAS_LEN: tl.constexpr,
        SAVE: tl.constexpr,
        PRECISION: tl.constexpr,  # "tf32" or "ieee" for the recurrent products
    ):
        # The state block is held transposed, h (N × BM): column j is sequence pid*BM + j.
        seqs = tl.program_id(0) * BM + tl.arange(0, BM)
        units = tl.arange(0, N)
        seq_ok = seqs < B
        mask = seq_ok[None, :]
        state = seqs[None, :] * N + units[:, None]  # element (unit, seq) of a (B, N) array
        u_at = seqs[None, :] * (G * N) + units[:, None]
        if BK == N:  # A and W on chip for the whole loop
            square = units[:, None] * N + units[None, :]
            W = tl.load(W_ptr + square)
            A = W
            if HAS_A:
                A = tl.load(A_ptr + square)
            scratch = scratch_ptr
        else:  # streamed: the products read them from global memory (L2) every step
            W = W_ptr
            A = A_ptr
            scratch = scratch_ptr + tl.program_id(0) * (2 * N * BM)
        h = tl.load(h0_ptr + state, mask=mask, other=0.0)
        length = tl.zeros([BM], dtype=tl.int32)
        if HAS_LEN:
            length = tl.load(len_ptr + seqs, mask=seq_ok, other=0)
        # int64 offsets of step t in (T, B, N) and (T, B), carried through the loop: no overflow
        tbn = (tl.program_id(0) * 0).to(tl.int64)
        tb = tbn
        # Step t+1's inputs are loaded at the top of step t: the recurrence is latency-bound,
        # and this hides the global-memory latency behind step t's products.
        u_next = tl.load(u_ptr + u_at, mask=mask, other=0.0)
        ug_next = u_next
        if GATED:
            ug_next = tl.load(u_ptr + N + u_at, mask=mask, other=0.0)
        scale_next = tl.full([BM], 1.0, tl.float32)
        if HAS_SCALE:
            scale_next = tl.load(scale_ptr + seqs, mask=seq_ok, other=0.0)
        for t in range(0, T):
            u = u_next
            ug = ug_next
            step = eps * scale_next[None, :]
            more = seq_ok & ((tl.zeros([BM], dtype=tl.int32) + t + 1) < T)  # sequences with a step t+1
            u_next = tl.load(u_ptr + G * (tbn + B * N) + u_at, mask=more[None, :], other=0.0)
            if GATED:
                ug_next = tl.load(u_ptr + G * (tbn + B * N) + N + u_at, mask=more[None, :], other=0.0)
            if HAS_SCALE:
                scale_next = tl.load(scale_ptr + tb + B + seqs, mask=more, other=0.0)
            f1, s1, g1 = _field(h, u, ug, A, W, alpha, scratch, N, BM, BK, HAS_A, GATED, PRECISION)
            if METHOD == 0:
                h_new = h + step * f1
                s2 = g1
                mid = h
            elif METHOD == 1:
                mid = h + (0.5 * step) * f1
                f2, s2, _ = _field(mid, u, ug, A, W, alpha, scratch, N, BM, BK, HAS_A, GATED, PRECISION)
                h_new = h + step * f2
            else:
                mid = h + step * f1
                f2, s2, _ = _field(mid, u, ug, A, W, alpha, scratch, N, BM, BK, HAS_A, GATED, PRECISION)
                h_new = h + (0.5 * step) * (f1 + f2)
            out = h_new
            if HAS_LEN:
                alive = (t < length)[None, :]
                h_new = tl.where(alive, h_new, h)
                out = tl.where(alive, h_new, 0.0)
            at_t = tbn + state
            tl.store(out_ptr + at_t, out, mask=mask)
            if SAVE:
                tl.store(s1_ptr + at_t, s1, mask=mask)
                if METHOD != 0 or GATED:
                    tl.store(s2_ptr + at_t, s2, mask=mask)
                if METHOD != 0:
                    tl.store(mid_ptr + at_t, mid, mask=mask)
            h = h_new
            tbn += B * N
            tb += B
        tl.store(hlast_ptr + state, h, mask=mask)

    @triton.jit(do_not_specialize=["T", "B"])
    def _scan_backward(
        gout_ptr,  # (T, B, N) ∂L/∂output
        ghlast_ptr,  # (B, N) ∂L/∂h_last
        A_ptr,  # (N, N) row-major A and W, read transposed, on chip; streamed, row-major Aᵀ and Wᵀ
        W_ptr,
        scale_ptr,
        len_ptr,
        s1_ptr,
        s2_ptr,
        du_ptr,  # (T, B, G*N) ∂L/∂u
        pa_ptr,  # (T, B, N) coefficient of hᵀ in ∂L/∂A (÷α), stage at h
        pam_ptr,  # (T, B, N) coefficient of midᵀ in ∂L/∂A (÷α), two-stage methods
        pwm_ptr,  # (T, B, N) coefficient of midᵀ in ∂L/∂W, two-stage methods
        gh0_ptr,  # (B, N) ∂L/∂h0
        T,
        B,
        eps,
        alpha,
        scratch_ptr,
        N: tl.constexpr,
        BM: tl.constexpr,
        BK: tl.constexpr,
        METHOD: tl.constexpr,
        HAS_A: tl.constexpr,
        GATED: tl.constexpr,
        G: tl.constexpr,
        HAS_SCALE: tl.constexpr,
        HAS_LEN: tl.constexpr,
        PRECISION: tl.constexpr,
    ):
        # Column form, λ = ∂L/∂h⁺ (N × BM), D = diag(1 − s²):
        #   Euler     λ_t = λ + ε(α Aᵀλ + Wᵀd),                 d = D λ
        #   midpoint  μ = ε(α Aᵀλ + Wᵀd₂) [∂L/∂mid],  λ_t = λ + μ + ε/2 (α Aᵀμ + Wᵀd₁),  d₂ = D₂λ, d₁ = D₁μ
        #   Heun      μ = ε/2 (α Aᵀλ + Wᵀd₂) [∂L/∂mid],  ν = ε/2 λ + ε μ [∂L/∂k₁],
        #             λ_t = λ + μ + α Aᵀν + Wᵀd₁,  d₂ = D₂λ, d₁ = D₁ν
        #   gated     f = g ⊙ s:  d_s = λ g (1 − s²),  d_g = λ s g (1 − g),  λ_t = λ + ε Wᵀ(d_s + d_g)
        seqs = tl.program_id(0) * BM + tl.arange(0, BM)
        units = tl.arange(0, N)
        seq_ok = seqs < B
        mask = seq_ok[None, :]
        state = seqs[None, :] * N + units[:, None]
        u_at = seqs[None, :] * (G * N) + units[:, None]
        if BK == N:  # Aᵀ and Wᵀ on chip
            transposed = units[None, :] * N + units[:, None]  # element [i, k] = X[k, i]: Xᵀ
            Wt = tl.load(W_ptr + transposed)
            At = Wt
            if HAS_A:
                At = tl.load(A_ptr + transposed)
            scratch = scratch_ptr
        else:  # streamed from the transposed copies
            Wt = W_ptr
            At = A_ptr
            scratch = scratch_ptr + tl.program_id(0) * (2 * N * BM)
        length = tl.zeros([BM], dtype=tl.int32)
        if HAS_LEN:
            length = tl.load(len_ptr + seqs, mask=seq_ok, other=0)
        tb = (tl.program_id(0) * 0).to(tl.int64) + (T - 1) * B  # int64 offsets of step t, walking back
        tbn = tb * N
        lam = tl.load(ghlast_ptr + state, mask=mask, other=0.0)
        g_last = tl.load(gout_ptr + tbn + state, mask=mask, other=0.0)
        if HAS_LEN:
            g_last = tl.where(((T - 1) < length)[None, :], g_last, 0.0)
        lam = lam + g_last
        # Prefetch one step ahead (the backward walk is latency-bound like the forward).
        s1_next = tl.load(s1_ptr + tbn + state, mask=mask, other=0.0)
        s2_next = s1_next
        if METHOD != 0 or GATED:
            s2_next = tl.load(s2_ptr + tbn + state, mask=mask, other=0.0)
        scale_next = tl.full([BM], 1.0, tl.float32)
        if HAS_SCALE:
            scale_next = tl.load(scale_ptr + tb + seqs, mask=seq_ok, other=0.0)
        for i in range(0, T):
            t = T - 1 - i
            at_t = tbn + state
            du_at = G * tbn + u_at
            s1 = s1_next
            s2 = s2_next
            step = eps * scale_next[None, :]
            more = seq_ok & ((tl.zeros([BM], dtype=tl.int32) + t) > 0)  # sequences with a step t-1
            s1_next = tl.load(s1_ptr + at_t - B * N, mask=more[None, :], other=0.0)
            if METHOD != 0 or GATED:
                s2_next = tl.load(s2_ptr + at_t - B * N, mask=more[None, :], other=0.0)
            if HAS_SCALE:
                scale_next = tl.load(scale_ptr + tb - B + seqs, mask=more, other=0.0)
            g_prev = tl.load(gout_ptr + at_t - B * N, mask=more[None, :], other=0.0)  # used last
            alive = tl.full([1, BM], 1, tl.int1)
            if HAS_LEN:
                alive = (t < length)[None, :]
                g_prev = tl.where(((t - 1) < length)[None, :], g_prev, 0.0)
            if METHOD == 0:
                if GATED:
                    g = s2
                    d_s = lam * g * (1.0 - s1 * s1)
                    d_g = lam * s1 * g * (1.0 - g)
                    d = d_s + d_g
                    tl.store(du_ptr + du_at, tl.where(alive, step * d_s, 0.0), mask=mask)
                    tl.store(du_ptr + du_at + N, tl.where(alive, step * d_g, 0.0), mask=mask)
                else:
                    d = lam * (1.0 - s1 * s1)
                    tl.store(du_ptr + du_at, tl.where(alive, step * d, 0.0), mask=mask)
                back = _back(Wt, d, At, lam, alpha, scratch, N, BM, BK, HAS_A, PRECISION)
                if HAS_A:
                    tl.store(pa_ptr + at_t, tl.where(alive, step * lam, 0.0), mask=mask)
                lam_prev = lam + step * back
            else:
                d2 = lam * (1.0 - s2 * s2)
                back2 = _back(Wt, d2, At, lam, alpha, scratch, N, BM, BK, HAS_A, PRECISION)
                if METHOD == 1:
                    mu = step * back2
                    d1 = mu * (1.0 - s1 * s1)
                    back1 = _back(Wt, d1, At, mu, alpha, scratch, N, BM, BK, HAS_A, PRECISION)
                    lam_prev = lam + mu + (0.5 * step) * back1
                    du = step * d2 + (0.5 * step) * d1
                    pwm = step * d2
                    pam = step * lam
                    pa = (0.5 * step) * mu
                else:
                    mu = (0.5 * step) * back2
                    nu = (0.5 * step) * lam + step * mu
                    d1 = nu * (1.0 - s1 * s1)
                    back1 = _back(Wt, d1, At, nu, alpha, scratch, N, BM, BK, HAS_A, PRECISION)
                    lam_prev = lam + mu + back1
                    du = (0.5 * step) * d2 + d1
                    pwm = (0.5 * step) * d2
                    pam = (0.5 * step) * lam
                    pa = nu
                tl.store(du_ptr + du_at, tl.where(alive, du, 0.0), mask=mask)
                tl.store(pwm_ptr + at_t, tl.where(alive, pwm, 0.0), mask=mask)
                if HAS_A:
                    tl.store(pam_ptr + at_t, tl.where(alive, pam, 0.0), mask=mask)
                    tl.store(pa_ptr + at_t, tl.where(alive, pa, 0.0), mask=mask)
            lam = tl.where(alive, lam_prev, lam) + g_prev
            tbn -= B * N
            tb -= B
        tl.store(gh0_ptr + state, lam, mask=mask)


@contextlib.contextmanager
def _matmul_tf32(enabled: bool):
    """Let torch's matmuls use TF32 exactly when the kernels do (restored afterwards)."""
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


def _scratch(B: int, N: int, BM: int, BK: int, like: Tensor) -> Tensor:
    """Per-program room for the states of a streamed product (``like``, unused, when held on chip)."""
    if BK == N:
        return like
    return torch.empty(triton.cdiv(B, BM), 2, N, BM, device=like.device, dtype=like.dtype)


def _sum_outer(P: Tensor, first: Tensor, rest: Tensor) -> Tensor:
    """``Σ_t P_tᵀ Y_t`` with ``Y_0 = first`` and ``Y_t = rest[t-1]``: two GEMMs over all steps."""
    N = P.shape[-1]
    total = P[0].T @ first
    if P.shape[0] > 1:
        total = total.addmm(P[1:].reshape(-1, N).T, rest[:-1].reshape(-1, N))
    return total


def _sum_outer_aligned(P: Tensor, Y: Tensor) -> Tensor:
    """``Σ_t P_tᵀ Y_t`` for aligned stacks: one GEMM."""
    N = P.shape[-1]
    return P.reshape(-1, N).T @ Y.reshape(-1, Y.shape[-1])


class _FusedScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, h0, A, W, scale, lengths, eps, alpha, method, gated, precision):
        T, B, _ = u.shape
        N = W.shape[0]
        has_a = A is not None and alpha != 0.0
        save = any(ctx.needs_input_grad[:4])  # inference skips writing the activations
        u = u.contiguous()
        out = torch.empty(T, B, N, device=u.device, dtype=u.dtype)
        h_last = torch.empty(B, N, device=u.device, dtype=u.dtype)
        need_s2 = method != 0 or gated
        s1 = torch.empty_like(out) if save else out
        s2 = torch.empty_like(out) if save and need_s2 else out
        mid = torch.empty_like(out) if save and method != 0 else out
        BM, warps, stages = _launch_config("forward", N)
        BK = _matrix_block(N, precision, has_a)
        LAST_COMPILED["forward"] = _scan_forward[(triton.cdiv(B, BM),)](
            u, h0.contiguous(), A.contiguous() if has_a else W, W.contiguous(),
            scale if scale is not None else out, lengths if lengths is not None else out,
            out, s1, s2, mid, h_last,
            T, B, float(eps), float(alpha), _scratch(B, N, BM, BK, out),
            N=N, BM=BM, BK=BK, METHOD=method, HAS_A=has_a, GATED=gated, G=2 if gated else 1,
            HAS_SCALE=scale is not None, HAS_LEN=lengths is not None, SAVE=save,
            PRECISION=precision, num_warps=warps, num_stages=stages,
        )  # fmt: skip
        ctx.save_for_backward(h0, A if has_a else None, W, scale, lengths, out, s1, s2, mid)
        ctx.config = (eps, alpha, method, gated, precision, has_a)
        return out, h_last

    @staticmethod
    @first_order_backward("backend 'triton'")
    def backward(ctx, g_out, g_hlast):
        h0, A, W, scale, lengths, out, s1, s2, mid = ctx.saved_tensors
        eps, alpha, method, gated, precision, has_a = ctx.config
        T, B, N = out.shape
        G = 2 if gated else 1
        g_out = torch.zeros_like(out) if g_out is None else g_out.contiguous()
        g_hlast = torch.zeros_like(h0) if g_hlast is None else g_hlast.contiguous()
        du = torch.empty(T, B, G * N, device=out.device, dtype=out.dtype)
        pa = torch.empty_like(out) if has_a else out
        two_stage = method != 0
        pam = torch.empty_like(out) if has_a and two_stage else out
        pwm = torch.empty_like(out) if two_stage else out
        gh0 = torch.empty_like(h0)
        BM, warps, stages = _launch_config("backward", N)
        BK = _matrix_block(N, precision, has_a)
        Wt = W.T.contiguous() if BK < N else W  # streamed: row-major Wᵀ, Aᵀ (tf32 MMA needs K-major tiles)
        At = (A.T.contiguous() if BK < N else A) if has_a else Wt  # without A, one copy serves both
        LAST_COMPILED["backward"] = _scan_backward[(triton.cdiv(B, BM),)](
            g_out, g_hlast, At, Wt, scale if scale is not None else out,
            lengths if lengths is not None else out, s1, s2, du, pa, pam, pwm, gh0,
            T, B, float(eps), float(alpha), _scratch(B, N, BM, BK, out),
            N=N, BM=BM, BK=BK, METHOD=method, HAS_A=has_a, GATED=gated, G=G,
            HAS_SCALE=scale is not None, HAS_LEN=lengths is not None,
            PRECISION=precision, num_warps=warps, num_stages=stages,
        )  # fmt: skip
        with _matmul_tf32(precision == "tf32"):  # tf32x3 and ieee: strict fp32 GEMMs
            dz = du[..., :N] + du[..., N:] if gated else du  # ∂L/∂(ε-scaled pre-activation)
            if two_stage:
                dW = _sum_outer(dz - pwm, h0, out) + _sum_outer_aligned(pwm, mid)
            else:
                dW = _sum_outer(dz, h0, out)
            dA = None
            if has_a and ctx.needs_input_grad[2]:
                dA = _sum_outer(pa, h0, out)
                if two_stage:
                    dA = dA + _sum_outer_aligned(pam, mid)
                dA = alpha * dA
        return du, gh0, dA, dW, None, None, None, None, None, None, None


#: precisions of the recurrent products, as Triton's ``tl.dot(input_precision=...)`` names them
#: (what each means: the module docstring)
PRECISIONS = ("tf32", "tf32x3", "ieee")


class TritonBackend:
    """``backend="triton"``: the fused recurrence on a CUDA device (or Triton's CPU interpreter).

    ``precision`` picks the recurrent products' arithmetic (``PRECISIONS``); the registered names
    are ``"triton"`` (TF32), ``"triton-tf32x3"`` and ``"triton-ieee"``. Only ``"triton"`` is
    in ``backend="auto"``'s order.
    """

    device_type = "cuda"

    def __init__(self, name: str = "triton", precision: str = "tf32") -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.name = name
        self.precision = precision

    @property
    def allow_tf32(self) -> bool:
        """Whether the products use single TF32 tensor-core products (setting False means ``ieee``)."""
        return self.precision == "tf32"

    @allow_tf32.setter
    def allow_tf32(self, enabled: bool) -> None:
        self.precision = "tf32" if enabled else "ieee"

    def handles(self, cell) -> bool:
        from ..cells.antisymmetric import AntisymmetricRNNCell
        from ..cells.lipschitz import LipschitzRNNCell
        from ..cells.vanilla import ResidualRNNCell

        return isinstance(cell, (LipschitzRNNCell, AntisymmetricRNNCell, ResidualRNNCell))

    def unsupported_reason(self, cell, x: Tensor, step_scale: Optional[Tensor], lengths) -> Optional[str]:
        from ..cells.antisymmetric import AntisymmetricRNNCell
        from ..cells.lipschitz import LipschitzRNNCell
        from ..cells.vanilla import ResidualRNNCell

        if triton is None:
            return "triton is not installed"
        if x.device.type != "cuda" and not INTERPRET:
            return "inputs are not on a CUDA device"
        if isinstance(cell, LipschitzRNNCell):
            if cell.gated:
                return "the gated Lipschitz cell has no fused kernel"
            if cell.nonlinearity != "tanh":
                return f"nonlinearity {cell.nonlinearity!r} has no fused kernel (tanh has)"
        elif isinstance(cell, AntisymmetricRNNCell):
            if cell.gated and cell.method.name != "euler":
                return "the gated AntisymmetricRNN is fused for euler only"
        elif not isinstance(cell, ResidualRNNCell):  # ResidualRNNCell: the ungated ASR field, W free
            return f"{type(cell).__name__} has no fused kernel"
        if cell.method.name not in METHOD_CODES:
            return f"method {cell.method.name!r} has no fused kernel (euler, midpoint, heun have)"
        N = cell.hidden_size
        if N < 16 or N & (N - 1):
            return f"hidden_size {N} is not a power of two >= 16 (the fused kernels' tiles are)"
        if N > MAX_HIDDEN:
            return (
                f"hidden_size {N} > {MAX_HIDDEN}: the fused kernel holds A and W in shared memory up to "
                f"N = {ON_CHIP_HIDDEN} and streams them from L2 up to N = {MAX_HIDDEN}; wider states do not "
                "fit in registers"
            )
        if x.dtype != torch.float32:
            return f"the fused kernels run float32, got {x.dtype}"
        if step_scale is not None and step_scale.requires_grad:
            return "no gradient with respect to dt"
        return None

    def scan(self, cell, x: Tensor, h0: Tensor, step_scale: Optional[Tensor], lengths: Optional[Tensor]):
        weights = cell.recurrent_weights()
        A, W = weights if len(weights) == 2 else (None, weights[0])
        alpha = getattr(cell, "alpha", 0.0)
        u = cell.project_input(x)
        scale = None if step_scale is None else step_scale[..., 0].contiguous()
        lens = None if lengths is None else lengths.to(device=x.device, dtype=torch.int32)
        return _FusedScan.apply(
            u,
            h0,
            A,
            W,
            scale,
            lens,
            cell.eps,
            alpha,
            METHOD_CODES[cell.method.name],
            getattr(cell, "gated", False),
            self.precision,
        )


BACKENDS.add("triton", TritonBackend())
BACKENDS.add("triton-tf32x3", TritonBackend("triton-tf32x3", "tf32x3"))
BACKENDS.add("triton-ieee", TritonBackend("triton-ieee", "ieee"))
AUTO_ORDER.insert(0, "triton")
