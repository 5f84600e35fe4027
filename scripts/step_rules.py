"""Would another step rule keep a trained run's linear part stable? Each rule's amplification at its weights.

    python scripts/step_rules.py runs/ptb_char_.../seed1 --output step-rules.json

Takes a run's ``best`` (or ``last``) checkpoint and, for each Lipschitz or AntisymmetricRNN layer and
each step rule in ``--methods`` (all of :mod:`lipschitz_rnn.integrators` by default), at the run's ε:
the step's amplification of the linear part alone, ``max |R(ελ(αA))|`` (``D=0``: above 1, some
mode the ODE may damp grows at every step), and of the step linearised with every unit at its
largest slope (``D=LI``; for exp_euler the spectral radius of ``e^{εA} + εφ₁(εA)W``), both from
:func:`lipschitz_rnn.stability.step_amplifications`: the numbers of ``stability_report`` with the method
overridden, from one eigendecomposition of A and of A + W per layer. The run trained with
one of them; the others say what its weights would do under another rule, not what training with it
would have reached. It writes nothing in the run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from lipschitz_rnn.integrators import METHODS
from lipschitz_rnn.stability import certified_cells, spectral_numbers, step_amplifications
from lipschitz_rnn.train.loop import load_run, run_provenance


def step_rules(run_dir: Path, methods: list[str], checkpoint: str = "best", device: str = "cpu") -> dict[str, Any]:
    """Per layer: the trained method, the spectral numbers and each rule's ``D=0`` and ``D=LI`` amplifications."""
    started = time.perf_counter()
    run = load_run(run_dir, checkpoint, device)
    cells = certified_cells(run["model"])
    if not cells:
        raise SystemExit(f"{run_dir}: the model has no Lipschitz or AntisymmetricRNN layer")
    layers = {}
    for name, cell in cells.items():
        rules = {
            method: {
                "max_abs_R_D0": numbers["D=0"],
                "max_abs_R_DLI": numbers["D=LI"],
                "linear_part_stable": numbers["D=0"] <= 1.0,
            }
            for method, numbers in step_amplifications(cell, methods).items()
        }
        layers[name] = {"trained_with": cell.method.name, "eps": cell.eps, **spectral_numbers(cell), "rules": rules}
    return {
        **run_provenance(run, run_dir),
        "seconds": round(time.perf_counter() - started, 3),
        "checkpoint": {"kind": checkpoint, "epochs_trained": run["state"]["epoch"]},
        "layers": layers,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--methods", nargs="+", default=sorted(METHODS), choices=sorted(METHODS))
    parser.add_argument("--checkpoint", choices=("best", "last"), default="best")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output", type=Path, help="write the JSON here as well as to stdout")
    args = parser.parse_args(argv)
    result = step_rules(args.run_dir, args.methods, args.checkpoint, args.device)
    text = json.dumps(result, indent=2)
    if args.output:
        args.output.write_text(text + "\n")
    print(text)
    for name, layer in result["layers"].items():
        for method, rule in layer["rules"].items():
            print(
                f"{name} ({layer['trained_with']}) under {method}: max|R(eps*lambda(A))| {rule['max_abs_R_D0']:.4g}, "
                f"linearised at D=L*I {rule['max_abs_R_DLI']:.4g}",
                file=sys.stderr,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
