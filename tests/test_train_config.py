"""Configs: TOML + overrides, validated against the schema before anything is written."""

import doctest
import importlib
import itertools

import pytest
import torch

from lipschitz_rnn.data import build_task
from lipschitz_rnn.train.config import (
    ConfigError,
    check_registries,
    load_config,
    parse_config,
    parse_overrides,
    to_toml,
)
from lipschitz_rnn.train.loop import build_model_for_task, learning_rate
from test_train_toytasks import write_config

MINIMAL = """
[experiment]
name = "demo"
[task]
name = "toy_sign"
seq_len = 12
[model]
name = "lipschitz"
hidden_size = 16
eps = 0.03
[train]
epochs = 3
batch_size = 32
"""


def test_minimal_config_gets_the_documented_defaults():
    cfg = parse_config(MINIMAL)
    assert cfg.task.options == {"seq_len": 12}
    assert cfg.model.options == {"eps": 0.03} and cfg.model.num_layers == 1
    t = cfg.train
    assert (t.optimizer, t.lr, t.eval_batch_size, t.clip_grad_norm, t.weight_decay) == ("adam", 1e-3, 1000, 0.0, 0.0)
    assert (t.device, t.backend, t.lr_milestones, t.lr_decay, t.seed) == ("auto", "auto", [], 0.1, 0)
    assert cfg.log.progress and cfg.log.tensorboard and cfg.log.plots


def test_overrides_are_toml_values_and_bare_words_are_strings():
    cfg = parse_config(
        MINIMAL,
        [
            "train.lr=3e-3",
            "train.lr_milestones=[90]",
            "train.device=cuda:1",
            "model.method=midpoint",
            "model.gated=true",
            "task.permutation='reference'",
            "log.progress=false",
        ],
    )
    assert cfg.train.lr == 0.003 and cfg.train.lr_milestones == [90] and cfg.train.device == "cuda:1"
    assert cfg.model.options == {"eps": 0.03, "method": "midpoint", "gated": True}
    assert cfg.task.options["permutation"] == "reference" and cfg.log.progress is False


def test_integers_are_accepted_where_numbers_are_expected():
    assert parse_config(MINIMAL, ["train.lr=1"]).train.lr == 1.0


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("train.lrr=0.1", "train.lrr: unknown key; did you mean 'lr'?"),
        ("log.colour=true", "log.colour: unknown key"),
        ("experiment.nmae=x", "experiment.nmae: unknown key; did you mean 'name'?"),
        ("optim.lr=1", "unknown section 'optim'"),
        ("train.lr=-1", "train.lr: must be > 0"),
        ("train.lr=nan", "train.lr: expected a finite number"),
        ("train.lr=fast", "train.lr: expected a number, got 'fast'"),
        ("train.epochs=2.5", "train.epochs: expected an integer"),
        ("train.epochs=true", "train.epochs: expected an integer"),
        ("train.epochs=0", "train.epochs: must be > 0"),
        ("train.optimizer=adamw", "train.optimizer: must be one of 'adam', 'sgd', 'adagrad', 'rmsprop'"),
        ("train.device=gpu", "train.device: must be 'auto', 'cpu'"),
        ("train.backend=turbo", "train.backend: must be one of auto"),
        ("train.lr_milestones=[90, 30]", "train.lr_milestones: must be increasing"),
        ("train.lr_milestones=90", "train.lr_milestones: expected a list of int"),
        ("train.lr_decay=2", "train.lr_decay: must be in (0, 1]"),
        ("train.lr_schedule=linear", "train.lr_schedule: must be one of 'step', 'cosine'"),
        ("train.lr_min=-0.1", "train.lr_min: must be >= 0"),
        ("train.lr_min=5", "train.lr_min: must be <= train.lr"),
        ("train.warmup_steps=-1", "train.warmup_steps: must be >= 0"),
        ("train.warmup_steps=2.5", "train.warmup_steps: expected an integer"),
        ("train.ema_decay=1.0", "train.ema_decay: must be in [0, 1)"),
        ("train.ema_decay=-0.5", "train.ema_decay: must be in [0, 1)"),
        ("model.readout_dropout=1.0", "model.readout_dropout: must be in [0, 1)"),
        ("model.readout_dropout=-0.1", "model.readout_dropout: must be in [0, 1)"),
        ("model.input_dropout=1.0", "model.input_dropout: must be in [0, 1)"),
        ("model.linear_init=he", "model.linear_init: must be one of 'default', 'xavier_normal'"),
        ("train.momentum=0.9", "train.momentum: only used with optimizer = 'sgd'"),
        ("log.plots=1", "log.plots: expected bool"),
        ("model.hidden_size=0", "model.hidden_size: expected an integer >= 1"),
        ("model.input_size=3", "model.input_size: set by the task"),
        ("model.backend=reference", "model.backend: set by train.backend"),
        ("experiment.name=a/b", "experiment.name: must be letters"),
        ("train.lr", "must look like section.key=value"),
        ("lr=0.1", "must look like section.key=value"),
    ],
)
def test_bad_keys_and_values_are_named(override, named):
    with pytest.raises(ConfigError) as info:
        parse_config(MINIMAL, [override])
    assert named in str(info.value)


def test_momentum_is_fine_with_sgd():
    assert parse_config(MINIMAL, ["train.optimizer=sgd", "train.momentum=0.9"]).train.momentum == 0.9


def test_momentum_is_refused_with_adagrad():
    with pytest.raises(ConfigError, match="train.momentum: only used with optimizer = 'sgd'"):
        parse_config(MINIMAL, ["train.optimizer=adagrad", "train.momentum=0.9"])


def test_every_optimizer_name_has_a_factory():
    from lipschitz_rnn.train.config import OPTIMIZER_NAMES
    from lipschitz_rnn.train.loop import OPTIMIZERS

    assert set(OPTIMIZER_NAMES) == set(OPTIMIZERS)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        (MINIMAL.replace("[train]", "[trian]"), "[trian]: unknown section; did you mean 'train'?"),
        (MINIMAL.replace("batch_size = 32", ""), "train.batch_size: missing (required)"),
        (MINIMAL.replace('name = "demo"', ""), "experiment.name: missing (required)"),
        (MINIMAL.replace("[model]", "[modle]"), "[modle]: unknown section"),
        (MINIMAL + "\n[task.sub]\nx = 1\n", "task.sub: options must be plain values"),
        ("[experiment\nname=1", "invalid TOML"),
    ],
)
def test_bad_files_are_named(text, named):
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert named in str(info.value)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "nope.toml")


def test_written_config_reads_back_equal():
    cfg = parse_config(
        MINIMAL,
        ["train.lr_milestones=[2, 5]", "model.method=rk4", "task.note='a \"quoted\" ünïcode'", "train.lr=3.5e-3"],
    )
    text = to_toml(cfg, header="resolved\nsecond line")
    assert text.startswith("# resolved\n# second line\n")
    assert parse_config(text) == cfg


def test_parse_overrides_splits_section_key_value():
    assert parse_overrides(["train.lr=0.5", "task.name=smnist", "train.lr_milestones = [1, 2]"]) == [
        ("train", "lr", 0.5),
        ("task", "name", "smnist"),
        ("train", "lr_milestones", [1, 2]),
    ]


def test_registries_check_model_and_task_options(tmp_path):
    path = write_config(tmp_path)
    check_registries(load_config(path))  # fine as written
    with pytest.raises(ConfigError, match="unknown model 'lipshitz'"):
        check_registries(load_config(path, ["model.name=lipshitz"]))
    with pytest.raises(ConfigError, match="epss"):
        check_registries(load_config(path, ["model.epss=0.1"]))
    with pytest.raises(ConfigError, match="beta"):
        check_registries(load_config(path, ["model.beta=1.5"]))
    with pytest.raises(ConfigError, match="unknown task 'toy_sing'"):
        check_registries(load_config(path, ["task.name=toy_sing"]))
    with pytest.raises(ConfigError, match="seqlen"):
        check_registries(load_config(path, ["task.seqlen=4"]))
    with pytest.raises(ConfigError, match="cannot import 'no_such_module'"):
        check_registries(load_config(path, ["experiment.imports=['no_such_module']"]))
    check_registries(load_config(path, ["task.name=smnist_not_yet"]), require_task=False)


def test_lstm_takes_no_backend_but_the_config_still_validates(tmp_path):
    check_registries(load_config(write_config(tmp_path, model="lstm")))


@pytest.mark.parametrize("model", ["lstm", "gru"])
def test_a_recurrence_backend_for_the_torch_wrappers_is_refused_not_dropped(tmp_path, model):
    path = write_config(tmp_path, model=model)
    check_registries(load_config(path, ["train.backend=auto"]))
    with pytest.raises(ConfigError, match=f"backend='cpu'.*{model!r} model"):
        check_registries(load_config(path, ["train.backend=cpu"]))


PLUGIN = """
from torch import nn
from lipschitz_rnn.models import MODELS


class NoBackend(nn.Module):
    def __init__(self, input_size, hidden_size, num_layers=1, *, batch_first=False):
        super().__init__()
        self.rnn = nn.RNN(input_size, hidden_size, num_layers, batch_first=batch_first)
        self.hidden_size, self.batch_first = hidden_size, batch_first

    def forward(self, x, h0=None, **kwargs):
        return self.rnn(x, h0)


def no_backend_factory(input_size, hidden_size, num_layers=1, *, batch_first=False):
    return NoBackend(input_size, hidden_size, num_layers, batch_first=batch_first)


for name, model in (("plugin_class", NoBackend), ("plugin_factory", no_backend_factory)):
    if name not in MODELS:
        MODELS.add(name, model)
"""


@pytest.mark.parametrize("model", ["plugin_class", "plugin_factory"])
def test_a_plugin_model_without_a_backend_argument_builds_with_auto_and_refuses_another(tmp_path, monkeypatch, model):
    # registered by experiment.imports, as a class or as a factory function (build_model calls either)
    (tmp_path / "rnn_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    path = write_config(tmp_path, model=model)
    imports = "experiment.imports=['test_train_toytasks', 'rnn_plugin']"
    cfg = load_config(path, [imports])
    check_registries(cfg)
    assert isinstance(build_model_for_task(cfg, build_task("toy_sign")).rnn.rnn, torch.nn.RNN)
    with pytest.raises(ConfigError, match="unexpected keyword argument 'backend'") as refused:
        check_registries(load_config(path, [imports, "train.backend=cpu"]))
    # the options are empty: the message must name the setting that handed the model the keyword
    assert f"[model] '{model}' rejects its options {{}} with train.backend = 'cpu': " in str(refused.value)


def test_step_decay_after_milestone_epochs():
    cfg = parse_config(MINIMAL, ["train.lr=0.003", "train.lr_milestones=[90]", "train.epochs=100"])
    assert learning_rate(cfg, 0) == 0.003 and learning_rate(cfg, 89) == 0.003  # epochs 1..90
    assert learning_rate(cfg, 90) == pytest.approx(0.0003)  # epoch 91 on
    two = parse_config(MINIMAL, ["train.lr=1", "train.lr_milestones=[1, 3]", "train.lr_decay=0.5"])
    assert [learning_rate(two, e) for e in range(5)] == [1, 0.5, 0.5, 0.25, 0.25]


def test_cosine_schedule_falls_from_lr_to_lr_min_over_the_epochs():
    overrides = ["train.lr=0.002", "train.lr_schedule=cosine", "train.lr_min=0.0001", "train.epochs=100"]
    cfg = parse_config(MINIMAL, overrides)
    rates = [learning_rate(cfg, e) for e in range(100)]
    assert rates[0] == 0.002  # the first epoch runs at lr
    assert rates[50] == pytest.approx((0.002 + 0.0001) / 2)  # halfway: the midpoint of lr and lr_min
    assert rates[99] == pytest.approx(0.0001, abs=1e-6)  # the last epoch: about lr_min
    assert all(a > b for a, b in itertools.pairwise(rates))  # strictly falling


def test_warmup_ramps_each_step_linearly_up_to_the_schedules_rate():
    overrides = ["train.lr=0.002", "train.warmup_steps=1000", "train.lr_milestones=[70]", "train.epochs=80"]
    cfg = parse_config(MINIMAL, overrides)
    assert learning_rate(cfg, 0, 0) == pytest.approx(0.002 / 1000)  # the first step: lr / K
    assert learning_rate(cfg, 1, 499) == pytest.approx(0.001)  # halfway up, whatever the epoch
    assert learning_rate(cfg, 3, 999) == 0.002 and learning_rate(cfg, 4, 1000) == 0.002  # step K - 1 on: full
    ramp = [learning_rate(cfg, 0, g) for g in range(1000)]
    assert all(a < b for a, b in itertools.pairwise(ramp))  # strictly rising
    assert learning_rate(cfg, 70, 20000) == pytest.approx(0.0002)  # the step decay after it, as without
    assert learning_rate(cfg, 0) == 0.002  # no step given: the epoch's rate
    # off by default: every step at the schedule's rate
    plain = parse_config(MINIMAL, ["train.lr=0.002"])
    assert plain.train.warmup_steps == 0 and learning_rate(plain, 0, 0) == 0.002
    # a ramp longer than the first epoch multiplies the cosine schedule's later epochs too
    cosine = parse_config(MINIMAL, [*overrides[:2], "train.lr_schedule=cosine", "train.epochs=4"])
    assert learning_rate(cosine, 2, 499) == pytest.approx(0.5 * learning_rate(cosine, 2))


def test_cosine_schedule_refuses_step_milestones():
    with pytest.raises(ConfigError, match=r"train.lr_milestones: step-decay milestones \[90\] with lr_schedule"):
        parse_config(MINIMAL, ["train.lr_schedule=cosine", "train.lr_milestones=[90]"])
    assert parse_config(MINIMAL, ["train.lr_schedule=cosine", "train.lr_milestones=[]"]).train.lr_schedule == "cosine"


@pytest.mark.parametrize(
    "name",
    [
        "lipschitz_rnn.train.config",
        "lipschitz_rnn.train.checkpoint",
        "lipschitz_rnn.train.metrics",
        "lipschitz_rnn.train.distributed",
        "lipschitz_rnn.train.report",
        "lipschitz_rnn.paper",
    ],
)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
