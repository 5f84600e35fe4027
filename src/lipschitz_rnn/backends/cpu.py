"""The ``cpu`` and ``cuda-bptt`` backends: an ODE cell's whole recurrence as one autograd Function
with a hand-written backward (the same code on CPU and on CUDA tensors).

The reference loop records several autograd nodes per time step, and autograd then does
one small weight-gradient product per step. Here one :class:`torch.autograd.Function` runs
the recurrence of one layer call:

* the input projection ``u = U x + b`` (one GEMM over all T steps) and the matrices
  ``A = S(M_A)``, ``W = S(M_W)`` are built *outside* the Function by ordinary autograd,
  so their gradients flow to ``U``, ``b``, ``x``, ``M_A`` and ``M_W`` without extra code;
* the forward runs with no graph; each Runge–Kutta stage computes both recurrent products
  with ONE GEMM against the concatenated ``(N, 2N)`` matrix, ``y [αA | 2W]ᵀ``;
* it saves the states ``h_0 … h_T``, the intermediate stage inputs and the activations
  (and, for gated cells, the gate and the pre-gate field); saving costs nothing extra in
  the forward, recomputing would cost one more GEMM over all steps;
* the backward walks time in reverse with one GEMM ``[dc | dz] [αA; W]`` per stage and
  step, and builds ``dA`` and ``dW`` from a few large products ``[dc | dz]ᵀ Y`` over
  blocks of ``≈ 2048`` stacked ``(step, sequence)`` rows, not from T small ones. The
  blocks keep the backward's workspace small and in cache (a workspace the size of the
  whole sequence measured slower: page faults on every call).

``tanh`` is evaluated as ``tanh(z) = 2 sigmoid(2z) − 1``: PyTorch's CPU ``sigmoid`` measured
two to three times faster than its ``tanh`` (AVX2, float32), and the factor 2 is folded into
the GEMM (scaling by 2 is exact in floating point). The result is accurate to an absolute
``≈ 1 ulp of 1``, which is what enters ``h + ε·(…)``; float32 trajectories stay as close to
a float64 solution as the reference loop's (tested). Derivative: ``1 − tanh² = 4σ(1 − σ)``.

Supported: :class:`~lipschitz_rnn.LipschitzRNNCell` (tanh, any ``alpha``, gated or not) and
:class:`~lipschitz_rnn.AntisymmetricRNNCell` (plain and gated), every explicit Runge–Kutta
method of :mod:`lipschitz_rnn.integrators` (euler, midpoint, heun, rk4), ``dt`` and
``lengths``, float32 and float64, CPU tensors (``cpu``) or CUDA tensors (``cuda-bptt``);
and the exponential Euler step of the ungated Lipschitz cell (``method="exp_euler"``, with
``lengths``, without ``dt``: its step matrices are fixed per sequence). Everything else is
refused by :meth:`CPUBackend.unsupported_reason`, so ``backend="auto"`` falls back to ``reference``.

Equations (row convention, ``h`` is ``(B, N)``; one field covers both cells):

    f(y) = (α A y + tanh(W y + u)) ⊙ g,        g = sigmoid(W y + u_g) for gated cells, else 1
    AntisymmetricRNN: α = 0 (its W is M − Mᵀ − γI)

    stage i:  y_i = h + ε Σ_{j<i} a_ij k_j,   k_i = f(y_i)
    step:     h⁺  = h + ε Σ_i b_i k_i

Backward of one step, given ``Ḡ = ∂L/∂h⁺``, stages in reverse order (``s_i = tanh(W y_i + u)``,
``c_i = α A y_i + s_i``):

    r_i  = b_i Ḡ + Σ_{m>i} a_mi ∂L/∂y_m             (so ∂L/∂k_i = ε r_i)
    dc_i = ε r_i ⊙ g_i                              (gradient w.r.t. c_i)
    dz_i = dc_i ⊙ (1 − s_i²) + ε r_i ⊙ c_i ⊙ g_i (1 − g_i)     (w.r.t. W y_i; the second
                                                     term only for gated cells)
    ∂L/∂y_i = [dc_i | dz_i] [αA; W]                 (one GEMM: α dc_i A + dz_i W)
    ∂L/∂h   = Ḡ + Σ_i ∂L/∂y_i  (+ the output gradient at h)

    dA = α Σ dc_iᵀ y_i,   dW = Σ dz_iᵀ y_i           (summed over steps and stages)
    du_t = Σ_i dc_i ⊙ (1 − s_i²),   du_g,t = Σ_i ε r_i ⊙ c_i ⊙ g_i (1 − g_i)

Forward Euler, ungated (the issue's case), reads

    h_{t+1} = h_t + ε (α A h_t + s_t),               s_t = tanh(W h_t + u_t)
    dh_t    = dh_{t+1} + ε (α Aᵀ dh_{t+1} + Wᵀ (dh_{t+1} ⊙ (1 − s_t²))) + (output gradient at h_t)
    dA = εα Σ_t dh_{t+1} h_tᵀ,   dW = Σ_t δ_t h_tᵀ,   du_t = δ_t = ε dh_{t+1} ⊙ (1 − s_t²)

(column form; the code is the row form above with one stage). Sums ``h + ε·(…)`` are formed
as the reference forms them (the small increment first, added to the state once), so that
float32 results agree with the reference loop as closely as two float32 loops can.

Exponential Euler (its own Function, :class:`_ExpEulerScan`). The step matrices
``E = e^{εαA}`` and ``P = εφ₁(εαA)`` come from the cell's ``recurrent_weights`` outside the
Function (ordinary autograd carries their gradients through the matrix exponential to ``M_A``),
stacked with ``W`` as ``K = [E; W]`` (2N × N). Row form, ``s_t = tanh(z_t)``:

    [a_t | z_t] = h_t Kᵀ + [0 | u_t],      h_{t+1} = a_t + s_t Pᵀ           (two GEMMs per step)
    dz_t = (Ḡ_t P) ⊙ (1 − s_t²),           Ḡ_t = ∂L/∂h_{t+1}
    ∂L/∂h_t = [Ḡ_t | dz_t] K  (+ the output gradient at h_t)                   (two GEMMs per step)
    dK = Σ_t [Ḡ_t | dz_t]ᵀ h_t,   dP = Σ_t Ḡ_tᵀ s_t,   du_t = dz_t          (per block of steps)

Past a sequence's end the state is carried (``h⁺ = h``) and ``Ḡ`` passes straight through.

``lengths`` become a zero step size past each sequence's end: ``h⁺ = h + 0·k = h``
exactly, and the same zero removes those steps from every gradient. ``dt`` multiplies
``ε`` per step and sequence; a ``dt`` equal for all steps and sequences is folded into ``ε``.

Limitations: no gradient with respect to ``dt`` (a ``dt`` that requires grad is refused);
the backward is not differentiable (double backward, e.g. Hessian-vector products,
raises; use ``backend="reference"`` for those); ``torch.func`` transforms (``vmap``,
``grad``) are not supported by this Function.

Example:
    >>> import torch
    >>> from lipschitz_rnn import LipschitzRNN
    >>> rnn = LipschitzRNN(1, 32, method="midpoint", backend="cpu")
    >>> x = torch.randn(100, 4, 1)
    >>> out, h_n = rnn(x)
    >>> out.sum().backward()
    >>> rnn.backend = "reference"
    >>> torch.allclose(rnn(x)[0], out, atol=1e-5)
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Optional, Union

import torch
from torch import Tensor

from . import AUTO_ORDER, BACKENDS, first_order_backward
from .reference import alive_mask

__all__ = ["CPUBackend"]

#: a Python float (one step size for every step and sequence) or a ``(T, B, 1)`` tensor
StepSizes = Union[float, Tensor]

#: rows (step × sequence) per block of the backward: weight-gradient GEMMs of this depth
#: run near peak, and the block's workspace stays in cache
_BLOCK_ROWS = 2048

# The methods a cell class must not override for this backend's equations to be its equations.
_CELL_METHODS = ("project_input", "recurrent_weights", "vector_field", "step", "exponential_step", "output")


@dataclass(frozen=True)
class _Field:
    """What the Function needs to know about the cell, beyond its tensors."""

    alpha: float  # factor on A y; 0 means there is no A at all
    gated: bool
    a: tuple[tuple[float, ...], ...]  # Butcher tableau, strictly lower
    b: tuple[float, ...]

    @property
    def stages(self) -> int:
        return len(self.b)


def _supported_cells() -> tuple[type, ...]:
    # imported here: the cells import the layer, which imports the backends
    from ..cells.antisymmetric import AntisymmetricRNNCell
    from ..cells.lipschitz import LipschitzRNNCell
    from ..cells.vanilla import ResidualRNNCell

    return LipschitzRNNCell, AntisymmetricRNNCell, ResidualRNNCell


def _field_of(cell) -> _Field:
    """LipschitzRNNCell has ``alpha``; AntisymmetricRNNCell is the field with ``alpha = 0``.

    ResidualRNNCell is the ungated AntisymmetricRNN field ``tanh(W h + u)`` with a free W.
    """
    alpha = float(getattr(cell, "alpha", 0.0))
    return _Field(alpha=alpha, gated=getattr(cell, "gated", False), a=cell.method.a, b=cell.method.b)


def _blocks(steps: int, batch: int) -> list[tuple[int, int]]:
    """``[(t0, t1), ...]`` covering ``range(steps)`` in reverse, about ``_BLOCK_ROWS`` rows each."""
    size = max(1, min(steps, -(-_BLOCK_ROWS // max(batch, 1))))  # an empty batch: any block size
    return [(max(0, t1 - size), t1) for t1 in range(steps, 0, -size)]


def _add_scaled(out: Tensor, base: Tensor, terms: list[tuple[float, Tensor]], eps: StepSizes) -> Tensor:
    """``out = base + eps · Σ c·X`` over ``terms = [(c, X), ...]`` (eps a float or a ``(B, 1)`` tensor).

    The small increment ``Σ c·X`` is summed first and added to ``base`` once, as the
    reference does: adding each term to the (larger) state separately would round more.
    """
    if not terms:
        return out.copy_(base)
    if len(terms) == 1:
        coef, increment = terms[0]
    else:
        coef, increment = 1.0, terms[0][1] * terms[0][0]
        for c, term in terms[1:]:
            increment = increment.add_(term, alpha=c)
    if isinstance(eps, Tensor):
        return torch.addcmul(base, eps, increment, value=coef, out=out)
    return torch.add(base, increment, alpha=eps * coef, out=out)


class _Saved(NamedTuple):
    """What the forward keeps for the backward."""

    h0: Tensor  # (B, N): the initial state, as given
    outputs: Tensor  # (T, B, N): h_1 … h_T, also the Function's output (no copy; see _ODEScan)
    stage_inputs: Tensor  # (S − 1, T, B, N): y_i for stages i ≥ 1 (y_0 is the state)
    sig: Tensor  # (S, T, B, N): σ = sigmoid(2(W y + u)), so tanh(W y + u) = 2σ − 1
    gate: Optional[Tensor]  # (S, T, B, N): g, gated cells
    pre_gate: Optional[Tensor]  # (S, T, B, N): c = α A y + tanh(...), gated cells with A


# -- forward ---------------------------------------------------------------------------------------


def _forward(u: Tensor, h0: Tensor, A: Optional[Tensor], W: Tensor, eps: StepSizes, field: _Field) -> _Saved:
    """The recurrence without a graph, for any explicit Runge–Kutta method."""
    steps, batch, N = u.shape[0], u.shape[1], W.shape[0]
    linear, gated, stages = A is not None, field.gated, field.stages
    # y @ forward_matrix + offset = [α A y − 1 | 2 W y]; with σ = sigmoid(2(W y + u)),
    # c = α A y + tanh(W y + u) = (α A y − 1) + 2σ
    if linear:
        forward_matrix = torch.cat([field.alpha * A, 2.0 * W]).t().contiguous()
        offset = torch.cat([W.new_full((N,), -1.0), W.new_zeros(N)])
    else:
        forward_matrix = (2.0 * W).t().contiguous()
        minus_one = W.new_full((N,), -1.0)

    new = h0.new_empty
    saved = _Saved(
        h0=h0,
        outputs=new(steps, batch, N),
        stage_inputs=new(stages - 1, steps, batch, N),
        sig=new(stages, steps, batch, N),
        gate=new(stages, steps, batch, N) if gated else None,
        pre_gate=new(stages, steps, batch, N) if gated and linear else None,
    )
    # per-step views, made once (indexing in the loop costs as much as a small op)
    states = (h0, *saved.outputs.unbind(0))
    stage_inputs = [None, *(y.unbind(0) for y in saved.stage_inputs)]
    sigs = [s.unbind(0) for s in saved.sig]
    gates = [g.unbind(0) for g in saved.gate] if gated else None
    pre_gates = [c.unbind(0) for c in saved.pre_gate] if saved.pre_gate is not None else None
    u_tanh, u_gate = u.split(N, dim=-1) if gated else (u, None)
    u_tanh = u_tanh.unbind(0)
    u_gate = u_gate.unbind(0) if gated else None
    step_sizes = eps.unbind(0) if isinstance(eps, Tensor) else [eps] * steps

    for t in range(steps):
        h, eps_t = states[t], step_sizes[t]
        ks: list[Tensor] = []
        for i, row in enumerate(field.a):
            if i == 0:
                y = h
            else:
                terms = [(a_ij, k_j) for a_ij, k_j in zip(row, ks) if a_ij]
                y = _add_scaled(stage_inputs[i][t], h, terms, eps_t)
            products = torch.addmm(offset, y, forward_matrix) if linear else torch.mm(y, forward_matrix)
            z2 = products[:, N:] if linear else products  # 2 W y
            if gated:  # g = sigmoid(W y + u_g), before z2 gets the input added
                g = torch.sigmoid(torch.add(u_gate[t], z2, alpha=0.5), out=gates[i][t])
            sig = torch.sigmoid(z2.add_(u_tanh[t], alpha=2.0), out=sigs[i][t])
            c_out = pre_gates[i][t] if pre_gates is not None else None
            c = torch.add(products[:, :N] if linear else minus_one, sig, alpha=2.0, out=c_out)
            ks.append(c * g if gated else c)
        terms = [(b_i, k_i) for b_i, k_i in zip(field.b, ks) if b_i]
        _add_scaled(states[t + 1], h, terms, eps_t)
    return saved


# -- backward --------------------------------------------------------------------------------------


def _states(h0: Tensor, outputs: Tensor, t0: int, t1: int) -> Tensor:
    """``h_{t0} … h_{t1 − 1}`` (the states the steps of a block start from) as one ``(t1 − t0, B, N)`` tensor."""
    if t0 > 0:
        return outputs[t0 - 1 : t1 - 1]
    return torch.cat([h0.unsqueeze(0), outputs[: t1 - 1]])  # the first block only: one block-sized copy


def _backward(
    grad_outputs: Tensor,
    grad_last: Tensor,
    A: Optional[Tensor],
    W: Tensor,
    eps: StepSizes,
    field: _Field,
    saved: _Saved,
) -> tuple[Tensor, Tensor, Optional[Tensor], Tensor]:
    """``(du, dh0, dA, dW)`` given ``∂L/∂(h_1 … h_T)`` and ``∂L/∂h_T``; equations in the module docstring."""
    steps, batch, N = grad_outputs.shape[0], grad_outputs.shape[1], W.shape[0]
    stages, gated, linear = field.stages, field.gated, A is not None
    backward_matrix = torch.cat([field.alpha * A, W]) if linear else W.contiguous()  # (kN, N)
    width = backward_matrix.shape[0]
    blocks = _blocks(steps, batch)
    block = blocks[0][1] - blocks[0][0]

    # Workspace for one block of steps: the [dc | dz] rows (for the per-step GEMM and then
    # the block's weight-gradient GEMM) and the factors that turn r into them.
    new = grad_outputs.new_empty
    dcz = new(stages, block, batch, width)
    tanh_factor = new(stages, block, batch, N)  # ε g (1 − s²)  (g = 1 ungated)
    if gated:
        dc_factor = new(stages, block, batch, N)  # ε g
        gate_factor = new(stages, block, batch, N)  # ε c g (1 − g)
        d_pre_tanh = new(stages, block, batch, N)  # dc (1 − s²)
        d_pre_gate = new(stages, block, batch, N)  # ε r c g (1 − g)
    # per-step views of the workspace, made once
    dc_rows = [d[..., :N].unbind(0) for d in dcz]
    dz_rows = [d[..., -N:].unbind(0) for d in dcz]
    rows = [d.unbind(0) for d in dcz]
    tanh_factors = [f.unbind(0) for f in tanh_factor]
    if gated:
        dc_factors = [f.unbind(0) for f in dc_factor]
        gate_factors = [f.unbind(0) for f in gate_factor]
        d_pre_tanhs = [d.unbind(0) for d in d_pre_tanh]
        d_pre_gates = [d.unbind(0) for d in d_pre_gate]
    output_grads = grad_outputs.unbind(0)
    step_sizes = eps.unbind(0) if isinstance(eps, Tensor) else [W.new_tensor(eps)] * steps

    # r_i = Σ coef · (Ḡ if source is None else ∂L/∂y_source) over the nonzero tableau entries
    r_terms = [
        [(c, m) for c, m in [(field.b[i], None), *((field.a[m][i], m) for m in range(i + 1, stages))] if c]
        for i in range(stages)
    ]

    grad_u = new(steps, batch, 2 * N if gated else N)
    grad_matrix = W.new_zeros(width, N)
    grad_h = grad_last + output_grads[steps - 1]  # ∂L/∂h_T
    for t0, t1 in blocks:
        n = t1 - t0
        eps_block = eps[t0:t1] if isinstance(eps, Tensor) else eps
        _block_factors(saved.sig[:, t0:t1], eps_block, out=tanh_factor[:, :n])
        if gated:
            sig, g = saved.sig[:, t0:t1], saved.gate[:, t0:t1]
            c = saved.pre_gate[:, t0:t1] if linear else 2.0 * sig - 1.0
            torch.mul(g, eps_block, out=dc_factor[:, :n])
            torch.mul(dc_factor[:, :n], c, out=gate_factor[:, :n]).mul_(1.0 - g)
            tanh_factor[:, :n].mul_(g)
        for t in reversed(range(t0, t1)):
            j = t - t0
            # ∂L/∂h_t: the identity path of h⁺ = h + …, the output gradient at h_t, then Σ_i ∂L/∂y_i
            grad_prev = grad_h + output_grads[t - 1] if t > 0 else grad_h.clone()
            grad_y: list[Optional[Tensor]] = [None] * stages
            for i in reversed(range(stages)):
                terms = [(coef, grad_h if source is None else grad_y[source]) for coef, source in r_terms[i]]
                if not terms:  # a stage nothing depends on
                    rows[i][j].zero_()
                    if gated:
                        d_pre_tanhs[i][j].zero_()
                        d_pre_gates[i][j].zero_()
                    continue
                r = terms[0][1] if terms[0][0] == 1.0 else terms[0][0] * terms[0][1]
                for coef, term in terms[1:]:
                    r = r.add(term, alpha=coef)
                if linear:
                    torch.mul(r, dc_factors[i][j] if gated else step_sizes[t], out=dc_rows[i][j])
                if gated:
                    torch.mul(r, tanh_factors[i][j], out=d_pre_tanhs[i][j])
                    torch.mul(r, gate_factors[i][j], out=d_pre_gates[i][j])
                    torch.add(d_pre_tanhs[i][j], d_pre_gates[i][j], out=dz_rows[i][j])
                else:
                    torch.mul(r, tanh_factors[i][j], out=dz_rows[i][j])
                if i == 0:
                    grad_prev.addmm_(rows[i][j], backward_matrix)
                else:
                    grad_y[i] = torch.mm(rows[i][j], backward_matrix)  # α dc A + dz W
                    grad_prev.add_(grad_y[i])
            grad_h = grad_prev
        # after the block: its share of dA, dW (one GEMM per stage) and of du
        inputs = [_states(saved.h0, saved.outputs, t0, t1), *saved.stage_inputs[:, t0:t1]]
        for i in range(stages):
            grad_matrix.addmm_(dcz[i, :n].reshape(n * batch, width).t(), inputs[i].reshape(n * batch, N))
        if gated:
            torch.sum(d_pre_tanh[:, :n], 0, out=grad_u[t0:t1, :, :N])
            torch.sum(d_pre_gate[:, :n], 0, out=grad_u[t0:t1, :, N:])
        else:
            torch.sum(dcz[:, :n, :, -N:], 0, out=grad_u[t0:t1])
    grad_A = grad_matrix[:N] * field.alpha if linear else None
    return grad_u, grad_h, grad_A, grad_matrix[-N:]


def _block_factors(sig: Tensor, eps: StepSizes, out: Tensor) -> Tensor:
    """``ε (1 − s²) = 4ε σ (1 − σ)`` (``s = 2σ − 1``) for a block of steps of every stage, into ``out``."""
    torch.addcmul(sig, sig, sig, value=-1.0, out=out)  # σ − σ²
    return out.mul_(4.0 * eps)


# -- exponential Euler -----------------------------------------------------------------------------


class _ExpSaved(NamedTuple):
    """What the exponential Euler forward keeps for the backward."""

    h0: Tensor  # (B, N): the initial state, as given
    outputs: Tensor  # (T, B, N): h_1 … h_T, also the Function's output
    activations: Tensor  # (T, B, N): s_t = tanh(W h_t + u_t)


def _exp_forward(u: Tensor, h0: Tensor, stacked: Tensor, P: Tensor, alive: Optional[Tensor]) -> _ExpSaved:
    """``h_{t+1} = h_t Eᵀ + tanh(h_t Wᵀ + u_t) Pᵀ`` without a graph (``stacked = [E; W]``)."""
    steps, batch, N = u.shape[0], u.shape[1], P.shape[0]
    saved = _ExpSaved(h0=h0, outputs=h0.new_empty(steps, batch, N), activations=h0.new_empty(steps, batch, N))
    states, activations, inputs = (h0, *saved.outputs.unbind(0)), saved.activations.unbind(0), u.unbind(0)
    # [h Eᵀ | 2 h Wᵀ]: tanh(z) = 2 sigmoid(2z) − 1, as in the Runge–Kutta forward (CPU sigmoid is the faster;
    # module docstring)
    forward_matrix = torch.cat([stacked[:N], 2.0 * stacked[N:]]).t().contiguous()
    P_t = P.t().contiguous()
    for t in range(steps):
        h = states[t]
        products = torch.mm(h, forward_matrix)
        sig = torch.sigmoid(products[:, N:].add_(inputs[t], alpha=2.0), out=activations[t])
        s = sig.mul_(2.0).sub_(1.0)
        if alive is None:
            torch.addmm(products[:, :N], s, P_t, out=states[t + 1])
        else:
            torch.where(alive[t], torch.addmm(products[:, :N], s, P_t), h, out=states[t + 1])
    return saved


def _exp_backward(
    grad_outputs: Tensor, grad_last: Tensor, stacked: Tensor, P: Tensor, alive: Optional[Tensor], saved: _ExpSaved
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(du, dh0, d[E; W], dP)``; equations in the module docstring."""
    steps, batch, N = grad_outputs.shape[0], grad_outputs.shape[1], P.shape[0]
    blocks = _blocks(steps, batch)
    block = blocks[0][1] - blocks[0][0]
    # per block: the rows [Ḡ | dz] of every step (the per-step GEMM's left side, then the weight GEMMs')
    rows = grad_outputs.new_empty(block, batch, 2 * N)
    derivative = grad_outputs.new_empty(block, batch, N)  # 1 − s²
    step_rows = rows.unbind(0)
    step_derivative = derivative.unbind(0)
    output_grads = grad_outputs.unbind(0)
    grad_u = grad_outputs.new_empty(steps, batch, N)
    grad_stacked = stacked.new_zeros(2 * N, N)
    grad_P = P.new_zeros(N, N)
    grad_h = grad_last + output_grads[steps - 1]  # ∂L/∂h_T
    for t0, t1 in blocks:
        n = t1 - t0
        activations = saved.activations[t0:t1]
        torch.mul(activations, activations, out=derivative[:n]).neg_().add_(1.0)
        for t in reversed(range(t0, t1)):
            j = t - t0
            row = step_rows[j]
            live, dz = row[:, :N], row[:, N:]
            if alive is None:
                live.copy_(grad_h)
            else:  # steps past the end did not happen: no gradient into them
                torch.mul(grad_h, alive[t], out=live)
            torch.mm(live, P, out=dz).mul_(step_derivative[j])
            grad_prev = torch.mm(row, stacked)  # Ḡ E + dz W
            if alive is not None:  # the carried state h⁺ = h passes Ḡ straight through
                grad_prev = torch.where(alive[t], grad_prev, grad_h)
            if t > 0:
                grad_prev.add_(output_grads[t - 1])
            grad_h = grad_prev
        flat = rows[:n].reshape(n * batch, 2 * N)
        grad_stacked.addmm_(flat.t(), _states(saved.h0, saved.outputs, t0, t1).reshape(n * batch, N))
        grad_P.addmm_(flat[:, :N].t(), activations.reshape(n * batch, N))
        grad_u[t0:t1] = rows[:n, :, N:]
    return grad_u, grad_h, grad_stacked, grad_P


class _ExpEulerScan(torch.autograd.Function):
    """``outputs, h_last = _ExpEulerScan.apply(u, h0, [E; W], P, alive)``: states ``h_1 … h_T`` and ``h_T``."""

    @staticmethod
    def forward(ctx, u: Tensor, h0: Tensor, stacked: Tensor, P: Tensor, alive: Optional[Tensor]):
        saved = _exp_forward(u, h0, stacked, P, alive)
        ctx.save_for_backward(stacked, P, alive, *saved)
        return saved.outputs, saved.outputs[-1].clone()  # as _ODEScan

    @staticmethod
    @first_order_backward("backend 'cpu' (or 'cuda-bptt')")
    def backward(ctx, grad_outputs: Tensor, grad_last: Tensor):
        stacked, P, alive, *saved = ctx.saved_tensors
        grads = _exp_backward(grad_outputs.contiguous(), grad_last, stacked, P, alive, _ExpSaved(*saved))
        return (*(grad if need else None for grad, need in zip(grads, ctx.needs_input_grad)), None)


# -- the Function and the backend ------------------------------------------------------------------


class _ODEScan(torch.autograd.Function):
    """``outputs, h_last = _ODEScan.apply(u, h0, A, W, eps, field)``: states ``h_1 … h_T`` and ``h_T``."""

    @staticmethod
    def forward(ctx, u: Tensor, h0: Tensor, A: Optional[Tensor], W: Tensor, eps: StepSizes, field: _Field):
        saved = _forward(u, h0, A, W, eps, field)
        ctx.field = field
        ctx.eps = None if isinstance(eps, Tensor) else eps
        ctx.save_for_backward(A, W, eps if isinstance(eps, Tensor) else None, *saved)
        # The outputs are the saved states h_1 … h_T themselves, not a copy of T·B·N values: editing them in
        # place before backward raises autograd's "modified by an inplace operation", as with cuDNN's RNN and
        # the triton backend, rather than giving wrong gradients. h_T is returned on its own (a copy), so that
        # its gradient arrives on its own.
        return saved.outputs, saved.outputs[-1].clone()

    @staticmethod
    @first_order_backward("backend 'cpu' (or 'cuda-bptt')")
    def backward(ctx, grad_outputs: Tensor, grad_last: Tensor):
        A, W, eps_tensor, *saved = ctx.saved_tensors
        eps = ctx.eps if eps_tensor is None else eps_tensor
        grads = _backward(grad_outputs.contiguous(), grad_last, A, W, eps, ctx.field, _Saved(*saved))
        needs = ctx.needs_input_grad
        return (*(grad if need else None for grad, need in zip(grads, needs)), None, None)


def _step_sizes(
    eps: float, step_scale: Optional[Tensor], lengths: Optional[Tensor], steps: int, x: Tensor
) -> StepSizes:
    """``ε``, or ``ε · dt`` with zeros past each sequence's end, as ``(T, B, 1)``.

    A ``dt`` that is the same for every step and sequence is folded into the float ``ε``: the
    fast Euler loop then runs, and ``dt = 1`` gives bitwise the result without ``dt``.
    """
    if step_scale is not None and lengths is None:
        first = step_scale.reshape(-1)[:1]
        if bool((step_scale == first).all()):
            return eps * float(first)
    if step_scale is None and lengths is None:
        return eps
    scale = x.new_full((steps, x.shape[1], 1), eps) if step_scale is None else eps * step_scale.detach()
    if lengths is not None:
        scale = scale.masked_fill(~alive_mask(lengths, steps, x.device), 0.0)
    return scale.contiguous()


class CPUBackend:
    """Lipschitz and AntisymmetricRNN recurrences with a fused, hand-written backward.

    See the module docstring for the equations and the limitations. Registered twice: as
    ``cpu`` for CPU tensors and as ``cuda-bptt`` for CUDA tensors, where it serves the
    sizes and cells the Triton kernels refuse (N > 512, the gated Lipschitz cell, RK4):
    a few kernels per step instead of the reference loop's autograd graph.
    """

    def __init__(self, name: str = "cpu", device_type: str = "cpu") -> None:
        self.name = name
        self.device_type = device_type

    def handles(self, cell) -> bool:
        return isinstance(cell, _supported_cells())

    def unsupported_reason(
        self, cell, x: Tensor, step_scale: Optional[Tensor], lengths: Optional[Tensor]
    ) -> Optional[str]:
        kind = next((k for k in _supported_cells() if isinstance(cell, k)), None)
        if kind is None:
            return "only LipschitzRNNCell, AntisymmetricRNNCell and ResidualRNNCell are implemented"
        overridden = [m for m in _CELL_METHODS if getattr(type(cell), m) is not getattr(kind, m)]
        if overridden:
            return f"{type(cell).__name__} overrides {', '.join(overridden)}"
        # an exponential method reaches here only on the ungated Lipschitz cell: ODECell and LipschitzRNNCell
        # refuse it at construction for every other cell (no fixed linear part L)
        if cell.method.exponential and step_scale is not None:
            return f"method {cell.method.name!r} runs the cell's fixed step: dt is not supported"
        if x.device.type != self.device_type:
            return f"the input is on {x.device.type}; this backend runs on {self.device_type} tensors"
        if x.dtype not in (torch.float32, torch.float64):
            return f"dtype {x.dtype} (float32 and float64 only)"
        if getattr(cell, "nonlinearity", "tanh") != "tanh":
            return f"nonlinearity {cell.nonlinearity!r} (tanh only)"
        if step_scale is not None and step_scale.requires_grad:
            return "dt requires grad (no gradient with respect to dt is implemented)"
        return None

    def scan(
        self, cell, x: Tensor, h0: Tensor, step_scale: Optional[Tensor], lengths: Optional[Tensor]
    ) -> tuple[Tensor, Tensor]:
        u = cell.project_input(x)
        weights = cell.recurrent_weights()
        if cell.method.exponential:  # (A, W, [E; W], P)
            alive = alive_mask(lengths, x.shape[0], x.device)
            outputs, h_last = _ExpEulerScan.apply(u, h0, weights[2], weights[3], alive)
            return (outputs if alive is None else outputs.masked_fill(~alive, 0.0)), h_last
        field = _field_of(cell)
        W = weights[-1]
        A = weights[0] if field.alpha else None
        steps = x.shape[0]
        eps = _step_sizes(cell.eps, step_scale, lengths, steps, x)
        outputs, h_last = _ODEScan.apply(u, h0, A, W, eps, field)
        if lengths is not None:
            outputs = outputs.masked_fill(~alive_mask(lengths, steps, x.device), 0.0)
        return outputs, h_last


# "cuda-bptt": the same Function on CUDA tensors, after "triton" in the auto order (fused_triton inserts itself first).
for _backend in (CPUBackend("cpu", "cpu"), CPUBackend("cuda-bptt", "cuda")):
    BACKENDS.add(_backend.name, _backend)
    AUTO_ORDER.append(_backend.name)
