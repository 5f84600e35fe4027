"""Figures comparing models: score versus noise level, and Hessian eigenvalue densities.

Both functions take ``{model name: results}`` where results may be the objects the analyses
return, their ``to_dict()`` form, or a whole ``run_analysis`` result (read back from JSON),
and need matplotlib (``pip install "lipschitz-rnn[plot]"``), imported only when called.

Example:
    >>> results = {"lipschitz": json.load(open("lipschitz/analysis.json")),      # doctest: +SKIP
    ...            "antisymmetric": json.load(open("asr/analysis.json"))}
    >>> plot_perturbation_curves(results, path="robustness.png")                  # doctest: +SKIP
    >>> plot_hessian_densities(results, path="density.png")                       # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

__all__ = ["plot_hessian_densities", "plot_perturbation_curves"]

TITLES = {
    "gaussian": "white Gaussian input noise (σ)",
    "salt_pepper": "salt-and-pepper input noise (fraction p)",
    "parameter": "relative parameter noise (σ)",
}


def plot_perturbation_curves(
    results: Mapping[str, Any],
    *,
    kinds: Optional[Sequence[str]] = None,
    path: Optional[str] = None,
    title: Optional[str] = None,
):
    """One panel per perturbation kind; per model, mean score versus level with ±1 std error bars.

    ``results[name]``: ``{kind: PerturbationCurve or its dict}`` or a ``run_analysis`` result.
    Returns the figure; saves it when ``path`` is given.
    """
    plt = _pyplot("plot_perturbation_curves", path)
    curves = {name: _curves_of(name, value) for name, value in _nonempty(results).items()}
    if kinds is None:
        kinds = list(dict.fromkeys(kind for by_kind in curves.values() for kind in by_kind))
    if not kinds:
        raise ValueError("results hold no perturbation curves")
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.5 * len(kinds), 3.6), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        metric = None
        for name, by_kind in curves.items():
            if kind not in by_kind:
                continue
            curve = by_kind[kind]
            metric = curve["metric"]
            ax.errorbar(curve["levels"], curve["mean"], yerr=curve["std"], marker="o", ms=3, capsize=3, label=name)
        ax.set_title(TITLES.get(kind, kind), fontsize=10)
        ax.set_xlabel("noise level")
        ax.set_ylabel(f"test {metric or 'score'}")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=150)
    return fig


def plot_hessian_densities(
    results: Mapping[str, Any],
    *,
    log_scale: bool = True,
    path: Optional[str] = None,
    title: Optional[str] = None,
):
    """Every model's SLQ eigenvalue density on one axis (log density by default: outliers stay visible).

    ``results[name]``: a ``DensityResult``, its dict, or a ``run_analysis`` result.
    """
    plt = _pyplot("plot_hessian_densities", path)
    fig, ax = plt.subplots(figsize=(6, 4))
    peak = 0.0
    for name, value in _nonempty(results).items():
        density = _density_of(name, value)
        ax.plot(density["grid"], density["density"], label=name, lw=1.2)
        peak = max(peak, max(density["density"]))
    if log_scale and peak > 0:
        ax.set_yscale("log")
        ax.set_ylim(peak * 1e-8, peak * 3)  # eight decades: the bulk and the outliers
    ax.set_xlabel("Hessian eigenvalue")
    ax.set_ylabel("density")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=150)
    return fig


def _pyplot(caller: str, path: Optional[str]):
    try:
        import matplotlib

        if path is not None:
            matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError(f'{caller} needs matplotlib: pip install "lipschitz-rnn[plot]"') from None
    return plt


def _nonempty(results: Mapping[str, Any]) -> Mapping[str, Any]:
    if not isinstance(results, Mapping) or not results:
        raise ValueError("results must be a non-empty mapping {model name: results}")
    return results


def _as_dict(value: Any) -> Any:
    return value.to_dict() if hasattr(value, "to_dict") else value


def _curves_of(name: str, value: Any) -> dict[str, dict]:
    if isinstance(value, Mapping) and "perturbation" in value:  # a run_analysis result
        value = value["perturbation"]["curves"]
    if not isinstance(value, Mapping):
        raise TypeError(f"results[{name!r}] must map perturbation kind -> curve, got {type(value).__name__}")
    return {kind: _as_dict(curve) for kind, curve in value.items()}


def _density_of(name: str, value: Any) -> dict:
    value = _as_dict(value)
    if isinstance(value, Mapping) and "hessian" in value:  # a run_analysis result
        value = value["hessian"].get("density")
    if not isinstance(value, Mapping) or "grid" not in value:
        raise TypeError(f"results[{name!r}] holds no eigenvalue density (grid, density)")
    return value
