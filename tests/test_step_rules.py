"""scripts/step_rules.py: each step rule's amplification of a trained run's linear part."""

import json

import pytest
import torch

from lipschitz_rnn.cli import main
from lipschitz_rnn.train.loop import load_run
from scripts_loader import load_script
from test_train_toytasks import write_config

step_rules = load_script("scripts/step_rules.py", "step_rules")


def test_every_rule_is_reported_at_the_runs_weights_and_step_size(tmp_path):
    run = tmp_path / "run"
    overrides = ["train.epochs=1", "model.eps=0.2", "log.plots=false"]
    assert main(["train", str(write_config(tmp_path)), *overrides, "--out", str(run)]) == 0
    before = {str(p): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}
    output = tmp_path / "rules.json"
    assert step_rules.main([str(run), "--output", str(output)]) == 0
    result = json.loads(output.read_text())
    layer = result["layers"]["layer0"]
    assert layer["trained_with"] == "euler" and layer["eps"] == 0.2
    assert sorted(layer["rules"]) == ["euler", "exp_euler", "heun", "midpoint", "rk4"]
    assert result["checkpoint"] == {"kind": "best", "epochs_trained": 1}
    # the oracle: R(z) = 1 + z for Euler and e^z for exp_euler over the eigenvalues of the loaded A
    cell = load_run(run, "best", "cpu")["model"].rnn.cells[0]
    z = 0.2 * torch.linalg.eigvals(cell.alpha * cell.A.detach().double())
    assert layer["rules"]["euler"]["max_abs_R_D0"] == pytest.approx(float((1 + z).abs().max()), rel=1e-12)
    assert layer["rules"]["exp_euler"]["max_abs_R_D0"] == pytest.approx(float(z.real.exp().max()), rel=1e-12)
    for rule in layer["rules"].values():
        assert rule["linear_part_stable"] == (rule["max_abs_R_D0"] <= 1.0)
    assert {str(p): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()} == before  # writes nothing there


def test_a_model_without_certified_layers_is_refused(tmp_path):
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                str(write_config(tmp_path)),
                "model.name=lstm",
                "train.epochs=1",
                "log.plots=false",
                "--out",
                str(run),
            ]
        )
        == 0
    )
    with pytest.raises(SystemExit, match="no Lipschitz or AntisymmetricRNN layer"):
        step_rules.step_rules(run, ["euler"])
