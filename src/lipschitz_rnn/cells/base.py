"""The cell interface every recurrent unit implements, and the ODE-cell base.

A cell splits one recurrence step into the pieces a fast backend needs:

* ``project_input(x)``: the input-dependent part ``U x + b`` for all time steps in one GEMM;
* ``recurrent_weights()``: the constructed hidden-to-hidden matrices, built once per
  sequence (never per time step);
* ``step(u_t, h, weights, eps)``: the update ``h -> h⁺`` given the projected input.

``cell(x_t, h)`` runs the three for a single step, for custom loops.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, ClassVar, Optional, Union

import torch
from torch import Tensor, nn

from .._autocast import autocast_active, from_autocast
from .._validation import check_bool, check_dtype_matches, check_eps, check_finite, check_floating, check_int
from ..integrators import Method, get_method
from ..registry import Registry

__all__ = ["ACTIVATIONS", "ODECell", "RecurrentCell", "StepSizeWarning", "joined", "register_bias"]

StepSize = Union[float, Tensor]

ACTIVATIONS: Registry[Callable[[Tensor], Tensor]] = Registry("nonlinearity")
ACTIVATIONS.add("tanh", torch.tanh)
ACTIVATIONS.add("relu", torch.relu)


def _identity(z: Tensor) -> Tensor:
    """``σ(z) = z`` (a named function, not a lambda, so that a model using it pickles)."""
    return z


ACTIVATIONS.add("identity", _identity, "linear")


class StepSizeWarning(UserWarning):
    """The step size puts a stable mode of the linear part outside the method's stability region."""


class RecurrentCell(nn.Module):
    """One step of a recurrence. Subclasses implement the three methods below."""

    #: whether ``dt`` (a per-step time increment scaling the step size) is meaningful
    continuous_time: ClassVar[bool] = False

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input_size = check_int("input_size", input_size)
        self.hidden_size = check_int("hidden_size", hidden_size)

    @property
    def state_size(self) -> int:
        """Size of the carried state (``2 * hidden_size`` for second-order cells like coRNN)."""
        return self.hidden_size

    def project_input(self, x: Tensor) -> Tensor:
        """``(..., input_size) -> (..., k * hidden_size)``: every input-dependent term at once."""
        raise NotImplementedError

    def recurrent_weights(self) -> tuple[Tensor, ...]:
        """The hidden-to-hidden matrices, constructed from the free parameters."""
        raise NotImplementedError

    def parametrized_matrices(self) -> list[tuple[nn.Parameter, nn.Module]]:
        """Each square parameter that reaches the recurrence only through a parametrisation, with
        that parametrisation (one with ``free_parameters(n)``); none unless a cell says so."""
        return []

    def step(self, u: Tensor, h: Tensor, weights: tuple[Tensor, ...], eps: Optional[StepSize] = None) -> Tensor:
        """``h -> h⁺`` for projected input ``u``; ``eps`` overrides the step size (continuous cells)."""
        raise NotImplementedError

    def output(self, state: Tensor) -> Tensor:
        """The per-step output read from the state (the state itself unless overridden)."""
        return state

    def forward(self, x: Tensor, h: Optional[Tensor] = None, dt: Optional[Union[float, Tensor]] = None) -> Tensor:
        """One step: ``h_next = cell(x_t, h)``.

        Args:
            x: input at one time step, ``(B, input_size)`` or ``(input_size,)``.
            h: state ``(B, state_size)`` or ``(state_size,)``; zeros when omitted.
            dt: time increment scaling the step size (a float or a ``(B,)`` tensor).
        """
        x = check_floating("x", x)
        if autocast_active(x.device.type):  # the step runs in the parameters' dtype: see _autocast.py
            dtype = self._param_dtype()
            with torch.autocast(x.device.type, enabled=False):
                return self.forward(from_autocast(x, dtype), from_autocast(h, dtype), from_autocast(dt, dtype))
        unbatched = x.dim() == 1
        if x.dim() not in (1, 2):
            raise ValueError(f"x must have shape (batch, input_size) or (input_size,), got {tuple(x.shape)}")
        if x.shape[-1] != self.input_size:
            raise ValueError(f"x must have {self.input_size} features (input_size), got {x.shape[-1]}")
        check_dtype_matches("x", x, self._param_dtype(), "the cell's parameters")
        check_finite("x", x)
        if unbatched:
            x = x.unsqueeze(0)
        if h is None:
            h = x.new_zeros(x.shape[0], self.state_size)
        else:
            h = check_floating("h", h)
            check_dtype_matches("h", h, x.dtype, "x")
            expected = (self.state_size,) if unbatched else (x.shape[0], self.state_size)
            if tuple(h.shape) != expected:
                raise ValueError(f"h must have shape {expected}, got {tuple(h.shape)}")
            check_finite("h", h)
            if unbatched:
                h = h.unsqueeze(0)
        eps = None
        if dt is not None:
            if not self.continuous_time:
                raise ValueError(f"{type(self).__name__} is a discrete-time cell; dt is not supported")
            dt = torch.as_tensor(dt, dtype=x.dtype, device=x.device)
            if dt.dim() > 1 or (dt.dim() == 1 and dt.numel() != x.shape[0]):
                raise ValueError(f"dt must be a scalar or have shape ({x.shape[0]},), got {tuple(dt.shape)}")
            check_finite("dt", dt)
            if bool((dt < 0).any()):
                raise ValueError("dt must be >= 0")
            eps = self.eps * (dt.reshape(-1, 1) if dt.dim() == 1 else dt)
        h_next = self.step(self.project_input(x), h, self.recurrent_weights(), eps)
        return h_next.squeeze(0) if unbatched else h_next

    def _param_dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype


class ODECell(RecurrentCell):
    """A cell that integrates ``dh/dt = f(h, u)`` with an explicit Runge–Kutta ``method``.

    Subclasses implement :meth:`vector_field`; the step is ``method.step`` applied to it,
    so every integrator works for every ODE cell.
    """

    continuous_time: ClassVar[bool] = True

    #: whether the field splits as ``L h + g(h, u)`` with ``L`` fixed over a sequence, as an exponential
    #: method needs (the cell then implements ``exponential_step`` and puts ``e^{εL}``, ``εφ₁(εL)`` in its weights)
    semilinear: ClassVar[bool] = False

    def __init__(self, input_size: int, hidden_size: int, *, eps: float, method: Union[str, Method]) -> None:
        super().__init__(input_size, hidden_size)
        self.eps = check_eps("eps", eps)
        self.method = get_method(method)
        if self.method.exponential and not self.semilinear:
            raise ValueError(
                f"method {self.method.name!r} integrates dh/dt = L h + g(h) with a fixed linear part L; "
                f"{type(self).__name__} has none (use euler, midpoint, heun or rk4)"
            )

    def vector_field(self, h: Tensor, u: Tensor, weights: tuple[Tensor, ...]) -> Tensor:
        """``f(h, u)`` with the input held fixed over the step."""
        raise NotImplementedError

    def step(self, u: Tensor, h: Tensor, weights: tuple[Tensor, ...], eps: Optional[StepSize] = None) -> Tensor:
        if self.method.exponential:
            if eps is not None:
                raise ValueError(
                    f"method {self.method.name!r} runs the cell's fixed step eps={self.eps}: dt is not supported"
                )
            return self.exponential_step(u, h, weights)
        return self.method.step(lambda y: self.vector_field(y, u, weights), h, self.eps if eps is None else eps)

    def exponential_step(self, u: Tensor, h: Tensor, weights: tuple[Tensor, ...]) -> Tensor:
        """The step of an exponential method (semilinear cells only)."""
        raise NotImplementedError

    def warn_if_step_unstable(self, linear_part: Tensor, name: str) -> None:
        """Warn when ``eps`` puts a stable eigenvalue of ``linear_part`` outside the method's region.

        Eigenvalues with ``Re λ > 0`` are unstable in continuous time already, so only modes
        with ``Re λ <= 0`` whose discrete amplification ``|R(ε λ)|`` exceeds 1 are reported.
        """
        if linear_part.is_meta:  # a model built on the meta device has no values to check yet
            return
        with torch.no_grad():
            lam = torch.linalg.eigvals(linear_part.detach().to("cpu", torch.float64))
        amplification = self.method.stability_function(self.eps * lam).abs()
        bad = (lam.real <= 0) & (amplification > 1.0 + 1e-9)
        if bool(bad.any()):
            worst = float(amplification[bad].max())
            warnings.warn(
                f"{type(self).__name__}: eps={self.eps} is outside the {self.method.name} stability "
                f"region for {int(bad.sum())} stable eigenvalue(s) of the initial {name} "
                f"(max |R(eps*lambda)| = {worst:.9g} > 1); use a smaller eps, a larger gamma, or a "
                f"higher-order method",
                StepSizeWarning,
                stacklevel=3,
            )

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, eps={self.eps}, method={self.method.name!r}"


def init_param(*shape: int, factory: dict[str, Any]) -> nn.Parameter:
    """An uninitialised parameter on the requested device/dtype (filled by the caller)."""
    return nn.Parameter(torch.empty(*shape, **factory))


def register_bias(cell: nn.Module, name: str, size: int, enabled: object, factory: dict[str, Any]) -> bool:
    """``cell.<name>``: an uninitialised bias of ``size`` entries, or ``None`` when not ``enabled``
    (``bias=False``, as ``nn.RNN`` and ``nn.Linear`` take it: the input map is then ``U x`` alone).
    Returns ``enabled``, checked to be a bool (the cell keeps it as ``cell.bias``)."""
    enabled = check_bool("bias", enabled)
    cell.register_parameter(name, init_param(size, factory=factory) if enabled else None)
    return enabled


def joined(*biases: Optional[Tensor]) -> Optional[Tensor]:
    """The biases of several input maps side by side, or ``None`` for a cell without biases."""
    return None if biases[0] is None else torch.cat(biases)


def linear_init_(weight: Tensor, bias: Optional[Tensor]) -> None:
    """PyTorch's ``nn.Linear`` default: uniform(±1/√fan_in) for weight and bias."""
    bound = weight.shape[1] ** -0.5
    nn.init.uniform_(weight, -bound, bound)
    if bias is not None:
        nn.init.uniform_(bias, -bound, bound)
