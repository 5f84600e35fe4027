"""Bad input: each raises ValueError/TypeError naming the argument and what was expected."""

import warnings

import pytest
import torch

import lipschitz_rnn as lr


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"beta": 1.5}, ValueError, r"^beta must be <= 1"),
        ({"beta": -0.1}, ValueError, r"^beta must be >= 0"),
        ({"beta_W": 2.0}, ValueError, r"^beta_W must be <= 1"),
        ({"gamma": -1e-3}, ValueError, r"^gamma must be >= 0"),
        ({"gamma_A": -1.0}, ValueError, r"^gamma_A must be >= 0"),
        ({"eps": 0.0}, ValueError, r"eps must be > 0"),
        ({"eps": -0.1}, ValueError, r"eps must be > 0"),
        ({"eps": float("nan")}, ValueError, r"eps must be finite"),
        ({"eps": "0.1"}, TypeError, r"eps must be a real number"),
        ({"method": "rk45"}, ValueError, r"unknown integration method 'rk45'; expected one of: euler, exp_euler, heun"),
        ({"nonlinearity": "sigmoid"}, ValueError, r"unknown nonlinearity 'sigmoid'"),
        ({"init_std": -1.0}, ValueError, r"init_std must be >= 0"),
        ({"num_layers": 0}, ValueError, r"num_layers must be >= 1"),
        ({"backend": "cuda-magic"}, ValueError, r"unknown backend 'cuda-magic'"),
    ],
)
def test_constructor_arguments(kwargs, error, match):
    num_layers = kwargs.pop("num_layers", 1)
    with pytest.raises(error, match=match):
        lr.LipschitzRNN(1, 4, num_layers, **kwargs)


def test_sizes_must_be_positive_ints():
    with pytest.raises(ValueError, match="hidden_size must be >= 1"):
        lr.LipschitzRNNCell(1, 0)
    with pytest.raises(TypeError, match="input_size must be an int"):
        lr.LipschitzRNN(1.5, 4)


def test_unknown_model_name():
    with pytest.raises(ValueError, match=r"unknown model 'transformer'; expected one of: .*lipschitz"):
        lr.build_model("transformer", 1, 4)


@pytest.fixture
def rnn():
    return lr.LipschitzRNN(3, 4)


def test_wrong_rank(rnn):
    with pytest.raises(ValueError, match=r"x must have shape \(T, B, input_size\)"):
        rnn(torch.randn(2, 3, 4, 3))
    with pytest.raises(ValueError, match="x must have shape"):
        rnn(torch.randn(3))


def test_wrong_feature_size(rnn):
    with pytest.raises(ValueError, match=r"x must have 3 features \(input_size\), got 5"):
        rnn(torch.randn(6, 2, 5))


def test_integer_and_mismatched_dtypes(rnn):
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        rnn(torch.ones(6, 2, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="x has dtype torch.float64 but the module's parameters are torch.float32"):
        rnn(torch.randn(6, 2, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match="h0 has dtype torch.float64 but x is torch.float32"):
        rnn(torch.randn(6, 2, 3), torch.zeros(1, 2, 4, dtype=torch.float64))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        rnn([[0.0, 1.0, 2.0]])


def test_wrong_h0_shape(rnn):
    with pytest.raises(ValueError, match=r"h0 must have shape \(1, 2, 4\)"):
        rnn(torch.randn(6, 2, 3), torch.zeros(2, 4))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_inputs(rnn, bad):
    x = torch.randn(6, 2, 3)
    x[3, 1, 2] = bad
    with pytest.raises(ValueError, match="x contains NaN or Inf"):
        rnn(x)
    h0 = torch.zeros(1, 2, 4)
    h0[0, 0, 0] = bad
    with pytest.raises(ValueError, match="h0 contains NaN or Inf"):
        rnn(torch.randn(6, 2, 3), h0)
    with pytest.raises(ValueError, match="x contains NaN or Inf"):
        rnn.cells[0](x[3])


def test_input_checks_can_be_switched_off_for_graph_capture():
    rnn = lr.LipschitzRNN(1, 2, check_inputs=False)
    out, _ = rnn(torch.full((3, 1, 1), float("nan")))
    assert torch.isnan(out).all()


def test_bad_lengths(rnn):
    x = torch.randn(6, 2, 3)
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, 6\]"):
        rnn(x, lengths=[7, 2])
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, 6\]"):
        rnn(x, lengths=[0, 2])
    with pytest.raises(ValueError, match=r"lengths must have shape \(2,\)"):
        rnn(x, lengths=[3])
    with pytest.raises(TypeError, match="lengths must hold integers"):
        rnn(x, lengths=torch.tensor([2.0, 3.0]))
    # a list is held to the same rule as a tensor: 4.7 is not truncated to 4, nor True taken for 1
    with pytest.raises(TypeError, match="lengths must hold integers"):
        rnn(x, lengths=[4.7, 2.2])
    with pytest.raises(TypeError, match="lengths must hold integers"):
        rnn(x, lengths=[True, True])
    with pytest.raises(ValueError, match="lengths needs batched input"):
        rnn(x[:, 0], lengths=[3])


def test_bad_dt(rnn):
    x = torch.randn(6, 2, 3)
    with pytest.raises(ValueError, match=r"dt must have shape \(6,\) or \(2, 6\)"):
        rnn(x, dt=torch.ones(5))
    with pytest.raises(ValueError, match="dt must be >= 0"):
        rnn(x, dt=-torch.ones(6))
    with pytest.raises(ValueError, match="dt contains NaN or Inf"):
        rnn(x, dt=torch.full((6,), float("nan")))
    with pytest.raises(ValueError, match="VanillaRNN is discrete-time; dt is not supported"):
        lr.VanillaRNN(3, 4)(x, dt=torch.ones(6))


def test_dt_as_a_list_of_python_floats_takes_the_input_dtype():
    rnn = lr.LipschitzRNN(3, 4, dtype=torch.float64)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    torch.testing.assert_close(rnn(x, dt=[0.5] * 5)[0], rnn(x, dt=torch.full((5,), 0.5, dtype=torch.float64))[0])
    with pytest.raises(TypeError, match="dt has dtype torch.float32 but x is torch.float64"):
        rnn(x, dt=torch.full((5,), 0.5))  # a tensor keeps its dtype: no silent cast


@pytest.mark.parametrize(
    ("model", "h0", "error", "match"),
    [
        ("gru", torch.full((2, 2, 6), float("nan")), ValueError, "h0 contains NaN or Inf"),
        ("gru", torch.zeros(2, 3, 6), ValueError, r"h0 must have shape \(2, 2, 6\)"),
        ("gru", torch.zeros(2, 2, 6, dtype=torch.float64), TypeError, "h0 has dtype torch.float64 but x is"),
        ("lstm", torch.zeros(2, 2, 6), TypeError, r"h0 of an LSTM must be a pair \(h0, c0\)"),
        ("lstm", (torch.zeros(2, 2, 6), torch.zeros(2, 2, 5)), ValueError, r"c0 must have shape \(2, 2, 6\)"),
        ("lstm", (torch.zeros(2, 2, 6), torch.full((2, 2, 6), float("inf"))), ValueError, "c0 contains NaN"),
    ],
)
def test_lstm_and_gru_check_their_initial_state_like_the_ode_layers(model, h0, error, match):
    with pytest.raises(error, match=match):
        lr.build_model(model, 3, 6, 2)(torch.randn(4, 2, 3), h0)


@pytest.mark.parametrize("model", ["lstm", "gru"])
@pytest.mark.parametrize("backend", ["cpu", "reference", "triton", "cuda-bptt", "cudnn"])
def test_lstm_and_gru_refuse_a_recurrence_backend_naming_the_option_and_the_model(model, backend):
    # PyTorch runs them (cuDNN on a GPU): torch's own error ("RNNBase.__init__() got an unexpected keyword
    # argument 'backend'") named neither the model nor what to do
    with pytest.raises(ValueError, match=rf"^backend='{backend}': the '{model}' model .* leave backend out or pass"):
        lr.build_model(model, 1, 8, backend=backend)
    with pytest.raises(TypeError, match=f"^backend must be a str \\('auto' for the '{model}' model\\)"):
        lr.build_model(model, 1, 8, backend=None)


@pytest.mark.parametrize("model", ["lstm", "gru", *sorted(set(lr.model_names()) - {"lstm", "gru"})])
def test_every_registered_model_builds_with_backend_auto(model):
    # so generic code may pass backend="auto" to build_model whatever the model
    rnn = lr.build_model(model, 1, 8, backend="auto")
    assert rnn.backend == "auto" and lr.build_model(model, 1, 8, backend="AUTO").backend == "auto"
    assert rnn(torch.randn(5, 2, 1))[0].shape == (5, 2, 8)


def test_lstm_backend_cannot_be_set_to_another_afterwards():
    rnn = lr.build_model("lstm", 1, 8)
    rnn.backend = "auto"
    with pytest.raises(ValueError, match="the 'lstm' model"):
        rnn.backend = "cpu"


def test_separate_beta_and_gamma_are_named_in_their_errors():
    with pytest.raises(ValueError, match="^gamma_W must be finite"):
        lr.LipschitzRNN(1, 4, gamma_W=float("nan"))
    with pytest.raises(ValueError, match="^beta_A must be >= 0"):
        lr.LipschitzRNN(1, 4, beta_A=-0.5)


@pytest.mark.parametrize("model", ["lipschitz", "antisymmetric"])
def test_gated_must_be_a_bool_not_any_truthy_value(model):
    with pytest.raises(TypeError, match="gated must be a bool"):
        lr.build_model(model, 1, 4, gated="no")
    assert lr.build_model(model, 1, 4, gated=0).cells[0].gated is False


def _bools():
    """(value, expected) pairs check_bool accepts; NumPy's are built lazily, so collection works without it."""
    np = pytest.importorskip("numpy")
    return [
        (True, True),
        (False, False),
        (1, True),
        (0, False),
        (np.True_, True),
        (np.False_, False),
        (np.bool_(1), True),
        (np.array(True), True),  # 0-d bool array
        (np.array([True])[0], True),  # an element of a bool array is a numpy.bool_
        (torch.tensor(True), True),  # 0-d bool tensor
        (torch.tensor(False), False),
    ]


def test_check_bool_accepts_python_numpy_and_0d_torch_bools():
    from lipschitz_rnn._validation import check_bool

    for value, expected in _bools():
        result = check_bool("flag", value)
        assert result is expected, value  # a Python bool, whatever came in


@pytest.mark.parametrize(
    "make",
    [
        lambda np: "no",
        lambda np: "True",
        lambda np: 2,
        lambda np: -1,
        lambda np: 1.0,
        lambda np: None,
        lambda np: np.int64(1),  # NumPy ints are ints, not bools (Python ints 0/1 stay accepted as before)
        lambda np: np.float64(0.0),
        lambda np: np.str_("yes"),
        lambda np: np.array([True]),  # not 0-d
        lambda np: np.array(1),  # 0-d, but not bool
        lambda np: torch.tensor(1),
        lambda np: torch.tensor([True]),
        lambda np: torch.tensor(True, device="meta"),  # no value to read
    ],
)
def test_check_bool_refuses_strings_other_ints_and_non_bool_arrays(make):
    from lipschitz_rnn._validation import check_bool

    np = pytest.importorskip("numpy")
    with pytest.raises(TypeError, match="^flag must be a bool"):
        check_bool("flag", make(np))


@pytest.mark.parametrize("model", ["lipschitz", "antisymmetric"])
def test_gated_takes_a_numpy_bool(model):
    np = pytest.importorskip("numpy")
    assert lr.build_model(model, 1, 4, gated=np.True_).cells[0].gated is True
    assert lr.build_model(model, 1, 4, gated=np.False_).cells[0].gated is False
    assert lr.LipschitzRNN(1, 4, check_inputs=np.False_).check_inputs is False


def test_backend_names_are_case_insensitive_auto_included():
    assert lr.LipschitzRNN(1, 4, backend="AUTO").backend == "auto"
    assert lr.LipschitzRNN(1, 4, backend="CPU").backend == "cpu"


def test_empty_sequence(rnn):
    with pytest.raises(ValueError, match="at least one time step"):
        rnn(torch.randn(0, 2, 3))


def test_step_size_outside_the_stability_region_warns():
    # beta = 1, gamma = 0.5: eigenvalues of A are -0.5 + i*omega; eps = 5 puts eps*lambda at -2.5 + ...
    with pytest.warns(lr.StepSizeWarning, match=r"eps=5.0 is outside the euler stability region .* alpha\*A"):
        lr.LipschitzRNNCell(1, 8, eps=5.0, beta=1.0, gamma=0.5)
    # rk4 has a larger real-axis interval (about -2.78) than euler (-2): no warning there at eps=5, lambda=-0.5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lr.LipschitzRNNCell(1, 8, eps=5.0, beta=1.0, gamma=0.5, method="rk4")
        lr.LipschitzRNN(1, 128)  # the published defaults do not warn


def test_explicit_backend_that_cannot_run_raises():
    class Never:
        name = "never"
        device_type = None

        def unsupported_reason(self, cell, x, step_scale, lengths):
            return "it never can"

        def scan(self, *args):
            raise AssertionError("unreachable")

    from lipschitz_rnn.backends import BACKENDS

    BACKENDS.add("never-test", Never())
    try:
        with pytest.raises(ValueError, match="backend 'never-test' cannot run this LipschitzRNNCell: it never can"):
            lr.LipschitzRNN(1, 2, backend="never-test")(torch.randn(3, 1, 1))
    finally:
        BACKENDS._entries.pop("never-test")
        BACKENDS._canonical.pop("never-test")
