"""Flatness and robustness of trained models: Hessian spectra, and scores under input and weight noise.

The paper's claim to test (REFERENCE.md §6): the Lipschitz RNN sits in flatter minima
(smaller top Hessian eigenvalue and trace) and degrades least under perturbations, versus
other continuous-time RNNs.

* ``hessian``: parameter Hessian of the training loss (Lanczos extreme eigenvalues,
  Hutchinson trace, stochastic Lanczos quadrature density, condition number), and the
  per-sample Hessian w.r.t. the input sequence. Every routine runs the model on the
  twice-differentiable ``"reference"`` backend in eval mode (``hessian_mode``).
* ``perturbation``: test score under white Gaussian and salt-and-pepper input noise and
  relative Gaussian weight noise, over seeded draws.
* ``plots``: figures comparing models (matplotlib, optional).
* ``run_analysis``: all of it for one model and task, as a JSON-able dict.

Example:
    >>> import torch, lipschitz_rnn as lr
    >>> from lipschitz_rnn.analysis import hessian_eigenvalues, perturbation_curve
    >>> model = lr.SequenceClassifier(lr.build_model("lipschitz", 1, 4), num_classes=3)
    >>> batch = (torch.rand(32, 10, 1), torch.randint(0, 3, (32,)))
    >>> float(hessian_eigenvalues(model, None, batch).eigenvalues[0]) > 0
    True
    >>> curve = perturbation_curve(model, batch, "gaussian", levels=[0.0, 0.1], draws=2)
    >>> curve.mean[0] == curve.clean
    True
"""

from ._common import batch_first_forward, default_loss, fixed_batches
from .hessian import (
    ConditionNumber,
    DensityResult,
    EigenResult,
    InputHessian,
    ParameterHessian,
    TraceResult,
    condition_number,
    condition_number_from,
    density_from_quadrature,
    hessian_density,
    hessian_eigenvalues,
    hessian_extreme_eigenvalues,
    hessian_mode,
    hessian_trace,
    input_hessian_eigenvalues,
    input_hessian_trace,
    reference_backend,
    ritz_value_resolved,
)
from .lanczos import LanczosRun, gaussian_density, lanczos
from .perturbation import (
    DEFAULT_LEVELS,
    GAUSSIAN_SIGMAS,
    PARAMETER_SIGMAS,
    SALT_PEPPER_FRACTIONS,
    PerturbationCurve,
    clean_input_range,
    evaluate,
    gaussian_noise,
    parameter_noise,
    perturbation_curve,
    perturbation_curves,
    salt_and_pepper,
)
from .plots import plot_hessian_densities, plot_perturbation_curves
from .report import run_analysis

__all__ = [
    "DEFAULT_LEVELS",
    "GAUSSIAN_SIGMAS",
    "PARAMETER_SIGMAS",
    "SALT_PEPPER_FRACTIONS",
    "ConditionNumber",
    "DensityResult",
    "EigenResult",
    "InputHessian",
    "LanczosRun",
    "ParameterHessian",
    "PerturbationCurve",
    "TraceResult",
    "batch_first_forward",
    "clean_input_range",
    "condition_number",
    "condition_number_from",
    "default_loss",
    "density_from_quadrature",
    "evaluate",
    "fixed_batches",
    "gaussian_density",
    "gaussian_noise",
    "hessian_density",
    "hessian_eigenvalues",
    "hessian_extreme_eigenvalues",
    "hessian_mode",
    "hessian_trace",
    "input_hessian_eigenvalues",
    "input_hessian_trace",
    "lanczos",
    "parameter_noise",
    "perturbation_curve",
    "perturbation_curves",
    "plot_hessian_densities",
    "plot_perturbation_curves",
    "reference_backend",
    "ritz_value_resolved",
    "run_analysis",
    "salt_and_pepper",
]
