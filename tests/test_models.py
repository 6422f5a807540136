"""Tests for jaxdl.models: factory, MLP, CNN, Conv2D lowerings, Dropout."""

from __future__ import annotations

import math

import chex
import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl import models
from jaxdl.config import ModelConfig
from jaxdl.models import CNN, MLP, Conv2D, Dropout
from jaxdl.models.layers import GatedRate, activation

KEY = jax.random.key(0)


def init_shapes(module, *inputs, **kw):
    """Parameter shapes without running anything (no compile)."""
    variables = jax.eval_shape(lambda k, *a: module.init(k, *a, **kw), KEY, *inputs)
    return jax.tree.map(lambda a: a.shape, variables)


def init_apply(module, x, **apply_kw):
    """init and apply in one jitted call; returns (variables, output)."""

    @jax.jit
    def go(key, x):
        variables = module.init(key, x)
        return variables, module.apply(variables, x, **apply_kw)

    return go(KEY, x)


# ------------------------------------------------------------------ factory and MLP


@pytest.mark.parametrize(
    ("cfg", "in_shape", "outputs", "hidden"),
    [
        (ModelConfig(depth=2, width=8), (4, 5), 3, (8, 8)),
        (ModelConfig(depth=1, width=6, activation="tanh"), (2, 3, 4), 1, (6,)),
        (ModelConfig(depth=3, width=2, widths=(7, 3)), (4, 5), 10, (7, 3)),
        (ModelConfig(depth=0, width=99), (4, 5), 2, ()),
        (ModelConfig(widths=()), (4, 5), 2, ()),
    ],
)
def test_mlp_param_shapes(cfg, in_shape, outputs, hidden):
    model = models.make(cfg, outputs)
    assert isinstance(model, MLP)
    assert tuple(model.widths) == hidden == models.mlp_widths(cfg)
    shapes = init_shapes(model, jnp.zeros(in_shape))
    params = shapes["params"]
    features = math.prod(in_shape[1:])
    sizes = (features, *hidden, outputs)
    assert set(params) == {f"Dense_{i}" for i in range(len(hidden) + 1)}
    for i in range(len(hidden) + 1):
        assert params[f"Dense_{i}"] == {"kernel": (sizes[i], sizes[i + 1]),
                                        "bias": (sizes[i + 1],)}
    out = jax.eval_shape(model.apply, shapes_to_zeros(shapes), jnp.zeros(in_shape))
    assert out.shape == (in_shape[0], outputs) and out.dtype == jnp.float32


def shapes_to_zeros(shapes):
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s, jnp.float32), shapes,
                        is_leaf=lambda s: isinstance(s, tuple))


def test_depth_zero_is_one_dense_layer_computing_xw_plus_b():
    model = models.make(ModelConfig(depth=0), 3)
    x = np.random.default_rng(0).normal(size=(4, 5)).astype(np.float32)
    variables, y = init_apply(model, x)
    leaves = jax.tree_util.tree_leaves_with_path(variables)
    assert len(leaves) == 2  # exactly one kernel and one bias
    dense = variables["params"]["Dense_0"]
    assert dense["kernel"].shape == (5, 3) and dense["bias"].shape == (3,)
    np.testing.assert_allclose(y, x @ np.asarray(dense["kernel"]) + np.asarray(dense["bias"]),
                               rtol=1e-5, atol=1e-6)
    assert y.dtype == jnp.float32


def _np_gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


NP_ACTIVATIONS = {
    "relu": lambda x: np.maximum(x, 0),
    "tanh": np.tanh,
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "elu": lambda x: np.where(x > 0, x, np.expm1(x)),
    "gelu": _np_gelu_tanh,
    "leaky_relu": lambda x: np.where(x >= 0, x, 0.01 * x),
    "identity": lambda x: x,
}


def test_activation_table_is_complete():
    from jaxdl.config import ACTIVATIONS as CONFIG_ACTIVATIONS

    assert set(models.ACTIVATIONS) == set(CONFIG_ACTIVATIONS) == set(NP_ACTIVATIONS)


def test_every_activation_matches_numpy():
    x = np.linspace(-3, 3, 13).astype(np.float32)
    out = jax.jit(lambda x: {name: activation(name)(x) for name in NP_ACTIVATIONS})(x)
    for name, ref in NP_ACTIVATIONS.items():
        np.testing.assert_allclose(out[name], ref(x), rtol=1e-5, atol=1e-6, err_msg=name)


def test_mlp_with_every_activation():
    mlps = {name: models.make(ModelConfig(depth=1, width=4, activation=name), 2)
            for name in NP_ACTIVATIONS}
    x = np.linspace(-2, 2, 6, dtype=np.float32).reshape(2, 3)

    @jax.jit
    def go(key):
        out = {}
        for name, m in mlps.items():
            v = m.init(key, x)
            out[name] = (v["params"], m.apply(v, x))
        return out

    for name, (p, y) in go(KEY).items():
        assert y.shape == (2, 2) and y.dtype == jnp.float32, name
        h = NP_ACTIVATIONS[name](x @ np.asarray(p["Dense_0"]["kernel"]) + p["Dense_0"]["bias"])
        ref = h @ np.asarray(p["Dense_1"]["kernel"]) + np.asarray(p["Dense_1"]["bias"])
        np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-5, err_msg=name)


def test_unknown_model_raises_naming_valid_ones():
    with pytest.raises(ValueError) as info:
        models.make(ModelConfig(name="transformer"), 3)
    msg = str(info.value)
    assert "'transformer'" in msg and "mlp" in msg and "cnn" in msg


def test_unknown_activation_raises_naming_valid_ones():
    with pytest.raises(ValueError) as info:
        activation("swish")
    assert "'swish'" in str(info.value)
    for name in NP_ACTIVATIONS:
        assert name in str(info.value)
    model = models.make(ModelConfig(activation="swish"), 3)
    with pytest.raises(ValueError, match="swish"):
        jax.eval_shape(model.init, KEY, jnp.zeros((1, 2)))


def test_mlp_dropout_needs_rng_in_train_mode():
    model = models.make(ModelConfig(depth=1, width=4, dropout=0.5), 2)
    assert model.dropout is True
    x = jnp.zeros((2, 3))
    shapes = init_shapes(model, x)
    params = shapes_to_zeros(shapes)
    # eval: no rng needed
    jax.eval_shape(lambda p, x: model.apply(p, x, train=False, dropout_rate=0.5), params, x)
    with pytest.raises(flax.errors.InvalidRngError, match="dropout"):
        jax.eval_shape(lambda p, x: model.apply(p, x, train=True, dropout_rate=0.5), params, x)
    out = jax.eval_shape(
        lambda p, x, k: model.apply(p, x, train=True, dropout_rate=0.5, rngs={"dropout": k}),
        params, x, KEY)
    assert out.shape == (2, 2)


def test_dropout_rate_zero_and_nonzero_share_one_program():
    # Every factory-built model has dropout layers; the config's rate is data.
    model = models.make(ModelConfig(depth=1, width=64, dropout=0.0), 2)
    assert model.dropout is True
    x = np.ones((8, 3), np.float32)
    v = model.init(KEY, x)
    traces = []

    @jax.jit
    def go(rate):
        traces.append(1)
        return model.apply(v, x, train=True, dropout_rate=rate, rngs={"dropout": KEY})

    np.testing.assert_array_equal(go(0.0), model.apply(v, x))   # rate 0: identity
    assert not np.array_equal(go(0.5), model.apply(v, x))
    assert len(traces) == 1


def test_hand_built_mlp_without_dropout_layers_ignores_rate():
    model = models.MLP(widths=(4,), outputs=2, dropout=False)
    x = np.ones((2, 3), np.float32)
    v = model.init(KEY, x)
    np.testing.assert_array_equal(model.apply(v, x),
                                  model.apply(v, x, train=True, dropout_rate=0.9))


# ------------------------------------------------------------------ CNN


@pytest.mark.parametrize(
    ("kw", "in_shape"),
    [
        (dict(channels=(4, 8), dense=(16,), kernel=3, pool="avg"), (2, 28, 28)),
        (dict(channels=(3,), dense=(), kernel=5, pool="max"), (2, 8, 8, 1)),
        (dict(channels=(2, 2), dense=(4, 4), kernel=1, pool="none"), (1, 6, 6, 3)),
    ],
)
@pytest.mark.parametrize("conv", ["xla", "im2col"])
def test_cnn_shapes(kw, in_shape, conv):
    cfg = ModelConfig(name="cnn", conv=conv, **kw)
    model = models.make(cfg, 10)
    assert isinstance(model, CNN) and model.conv == conv
    x = jnp.zeros(in_shape)
    shapes = init_shapes(model, x)
    params = shapes["params"]
    cin = in_shape[3] if len(in_shape) == 4 else 1
    for i, c in enumerate(kw["channels"]):
        assert params[f"Conv2D_{i}"] == {"kernel": (kw["kernel"], kw["kernel"], cin, c),
                                         "bias": (c,)}
        cin = c
    out = jax.eval_shape(model.apply, shapes_to_zeros(shapes), x)
    assert out.shape == (in_shape[0], 10) and out.dtype == jnp.float32


def test_conv_auto_picks_by_backend():
    cfg = ModelConfig(name="cnn", conv="auto")
    assert models.make(cfg, 10, backend="cpu").conv == "im2col"
    assert models.make(cfg, 10, backend="gpu").conv == "xla"
    assert models.make(ModelConfig(name="cnn", conv="xla"), 10, backend="cpu").conv == "xla"


def test_cnn_batch_norm_stats():
    model = models.make(ModelConfig(name="cnn", channels=(2,), dense=(4,), batch_norm=True,
                                    conv="im2col"), 3)
    x = np.random.default_rng(3).normal(loc=2.0, size=(4, 6, 6)).astype(np.float32)

    @jax.jit
    def go(key):
        variables = model.init(key, x)
        y_train, updated = model.apply(variables, x, train=True, mutable=["batch_stats"])
        y_eval = model.apply(variables, x, train=False)
        return variables, updated, y_train, y_eval

    variables, updated, y_train, y_eval = go(KEY)
    assert set(variables) == {"params", "batch_stats"}
    stats = variables["batch_stats"]["BatchNorm_0"]
    assert stats["mean"].shape == (2,) and stats["var"].shape == (2,)
    new = updated["batch_stats"]["BatchNorm_0"]
    assert not np.allclose(new["mean"], stats["mean"])
    assert not np.allclose(new["var"], stats["var"])
    assert y_train.shape == y_eval.shape == (4, 3)
    assert y_train.dtype == y_eval.dtype == jnp.float32
    assert np.all(np.isfinite(y_train)) and np.all(np.isfinite(y_eval))
    assert not np.allclose(y_train, y_eval)  # batch statistics vs running averages


def test_avg_pool_matches_flax():
    from flax import linen as nn

    from jaxdl.models.cnn import _avg_pool2

    x = np.random.default_rng(4).normal(size=(2, 7, 5, 3)).astype(np.float32)
    ours = jax.jit(_avg_pool2)(x)
    ref = jax.jit(lambda x: nn.avg_pool(x, (2, 2), strides=(2, 2)))(x)
    assert ours.shape == (2, 3, 2, 3)
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------ Conv2D lowerings


@pytest.mark.parametrize(
    ("kernel", "cin", "cout"),
    [(1, 3, 2), (3, 1, 3), (3, 4, 2), (5, 2, 3), (5, 3, 1), (2, 2, 3)],
)
def test_conv_im2col_equals_xla(kernel, cin, cout):
    rng = np.random.default_rng(kernel * 100 + cin * 10 + cout)
    x = rng.normal(size=(2, 6, 5, cin)).astype(np.float32)  # non-square image
    ct = rng.normal(size=(2, 6, 5, cout)).astype(np.float32)  # cotangent
    xla, im2col = Conv2D(cout, kernel, impl="xla"), Conv2D(cout, kernel, impl="im2col")

    @jax.jit
    def go(key):
        params = xla.init(key, x)
        params = jax.tree.map(lambda p: p + 0.1, params)  # nonzero bias
        out = {}
        for name, mod in (("xla", xla), ("im2col", im2col)):
            def loss(p, x, mod=mod):
                return jnp.sum(mod.apply(p, x) * ct)
            y = mod.apply(params, x)
            gp, gx = jax.grad(loss, argnums=(0, 1))(params, x)
            out[name] = (y, gp, gx)
        return params, out

    params, out = go(KEY)
    assert params["params"]["kernel"].shape == (kernel, kernel, cin, cout)
    y_xla, gp_xla, gx_xla = out["xla"]
    y_col, gp_col, gx_col = out["im2col"]
    assert y_xla.shape == y_col.shape == (2, 6, 5, cout)
    np.testing.assert_allclose(y_col, y_xla, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gx_col, gx_xla, rtol=1e-5, atol=1e-5)
    chex.assert_trees_all_close(gp_col, gp_xla, rtol=1e-5, atol=1e-5)


def test_conv_matches_numpy_reference():
    # 3x3 SAME convolution (cross-correlation) computed with explicit loops.
    rng = np.random.default_rng(5)
    x = rng.normal(size=(1, 4, 4, 2)).astype(np.float32)
    params, y = init_apply(Conv2D(3, 3, impl="im2col"), x)
    w = np.asarray(params["params"]["kernel"], np.float64)
    xp = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
    ref = np.zeros((1, 4, 4, 3))
    for i in range(4):
        for j in range(4):
            ref[0, i, j] = np.einsum("hwc,hwco->o", xp[0, i:i + 3, j:j + 3], w)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


def test_conv_unknown_impl():
    with pytest.raises(ValueError, match="unknown conv impl"):
        jax.eval_shape(Conv2D(2, 3, impl="fft").init, KEY, jnp.zeros((1, 4, 4, 1)))


# ------------------------------------------------------------------ Dropout

drop = Dropout()
N = 40_000  # one shape for all dropout tests: one compile


@jax.jit
def dropout_apply(x, rate, key):
    return drop.apply({}, x, rate, False, rngs={"dropout": key})


def test_dropout_rate_zero_is_identity_in_train_mode():
    x = np.random.default_rng(6).normal(size=(N,)).astype(np.float32)
    np.testing.assert_array_equal(dropout_apply(x, 0.0, KEY), x)


@pytest.mark.parametrize("rate", [0.0, 0.5, 0.99])
def test_dropout_deterministic_is_identity(rate):
    x = np.random.default_rng(7).normal(size=(64,)).astype(np.float32)
    y = drop.apply({}, x, rate, True)  # no rng needed
    assert y is x or np.array_equal(np.asarray(y), x)


def test_dropout_half_keeps_half_and_scales_by_two():
    x = np.ones((N,), np.float32)
    y = np.asarray(dropout_apply(x, 0.5, KEY))
    kept = y != 0
    # binomial(N, 0.5): std of the kept fraction is 0.5 / sqrt(N) ~ 0.0025
    assert abs(kept.mean() - 0.5) < 0.015
    np.testing.assert_array_equal(y[kept], 2.0)
    # the expectation is preserved
    assert abs(y.mean() - 1.0) < 0.03  # std of the mean 1/sqrt(N) = 0.005


def test_dropout_other_rate_keeps_one_minus_rate():
    x = np.ones((N,), np.float32)
    y = np.asarray(dropout_apply(x, 0.2, KEY))
    assert abs((y != 0).mean() - 0.8) < 0.015
    np.testing.assert_allclose(y[y != 0], 1.25, rtol=1e-6)


def test_dropout_same_rng_same_mask():
    x = np.ones((N,), np.float32)
    a = np.asarray(dropout_apply(x, 0.5, KEY))
    b = np.asarray(dropout_apply(x, 0.5, KEY))
    c = np.asarray(dropout_apply(x, 0.5, jax.random.key(1)))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_dropout_rate_is_data_no_retrace():
    traces = []

    @jax.jit
    @chex.assert_max_traces(n=1)
    def apply(x, rate, key):
        traces.append(1)
        return drop.apply({}, x, rate, False, rngs={"dropout": key})

    x = np.ones((4000,), np.float32)
    y1 = np.asarray(apply(x, jnp.float32(0.25), KEY))
    y2 = np.asarray(apply(x, jnp.float32(0.75), KEY))
    assert len(traces) == 1
    assert abs((y1 != 0).mean() - 0.75) < 0.05
    assert abs((y2 != 0).mean() - 0.25) < 0.05


def test_gated_dropout_under_vmap_skips_masks_unless_a_member_draws():
    """A population's rates are batched; the gate is not. Members at rate 0
    keep x exactly whether or not the gate is on, a member with a rate
    draws the mask it would draw alone, and a static False gate compiles
    no mask at all."""
    x = np.random.default_rng(8).normal(size=(N,)).astype(np.float32)
    rates = jnp.asarray([0.0, 0.5])

    def members(on):
        return jax.vmap(lambda r: drop.apply({}, x, GatedRate(r, on), False,
                                             rngs={"dropout": KEY}))(rates)

    for on in (jnp.asarray(True), jnp.asarray(False)):
        out = np.asarray(jax.jit(members)(on))
        np.testing.assert_array_equal(out[0], x)
        if bool(on):
            np.testing.assert_array_equal(out[1], dropout_apply(x, 0.5, KEY))
        else:
            np.testing.assert_array_equal(out[1], x)
    # Under vmap an ungated cond on each member's rate runs both branches
    # (a select): the masks are in the program. Gated, they sit in a cond
    # on the unbatched gate; statically off, they are not compiled.
    ungated = str(jax.make_jaxpr(jax.vmap(lambda r: dropout_apply(x, r, KEY)))(rates))
    gated = str(jax.make_jaxpr(members)(jnp.asarray(True)))
    off = str(jax.make_jaxpr(lambda: members(False))())
    assert "random_bits" in ungated and "select_n" in ungated
    assert "random_bits" in gated and "cond[" in gated
    assert "random_bits" not in off


def test_mlp_dropout_rate_is_data_no_retrace():
    model = models.make(ModelConfig(depth=2, width=64, dropout=0.1), 2)
    x = np.ones((8, 3), np.float32)
    variables = jax.jit(model.init)(KEY, x)
    traces = []

    @jax.jit
    @chex.assert_max_traces(n=1)
    def apply(v, x, rate, key):
        traces.append(1)
        return model.apply(v, x, train=True, dropout_rate=rate, rngs={"dropout": key})

    a = apply(variables, x, jnp.float32(0.0), KEY)
    b = apply(variables, x, jnp.float32(0.5), KEY)
    assert len(traces) == 1
    # rate 0 in train mode = the plain network (numpy forward)
    p = jax.tree.map(np.asarray, variables["params"])
    h = x
    for i in range(2):
        h = np.maximum(h @ p[f"Dense_{i}"]["kernel"] + p[f"Dense_{i}"]["bias"], 0)
    ref = h @ p["Dense_2"]["kernel"] + p["Dense_2"]["bias"]
    np.testing.assert_allclose(a, ref, rtol=1e-5, atol=1e-5)
    assert not np.allclose(a, b)
