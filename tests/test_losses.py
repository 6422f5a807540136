"""Tests for jaxdl.losses: hand-computed values, numpy references, gradients."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl import losses
from jaxdl.models import MLP

LN2, LN3, LN4 = math.log(2.0), math.log(3.0), math.log(4.0)


def f32(x):
    return np.asarray(x, np.float32)


# Jitted once per shape: on CPU, eager op-by-op dispatch compiles every
# primitive separately and is ~10x slower for these tiny inputs.
ce = jax.jit(losses.cross_entropy)
bce = jax.jit(losses.binary_cross_entropy)
mse = jax.jit(losses.mse)
acc = jax.jit(losses.accuracy)
bacc = jax.jit(losses.binary_accuracy)
l2 = jax.jit(losses.l2_penalty)
wmean = jax.jit(losses.weighted_mean)
ce_grad = jax.jit(jax.grad(losses.cross_entropy))
bce_grad = jax.jit(jax.grad(losses.binary_cross_entropy))
mse_grad = jax.jit(jax.grad(losses.mse))


def close(actual, expected, tol=1e-6):
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=tol, atol=tol)


# ------------------------------------------------------------------ numpy references


def np_logsumexp(z):
    m = z.max(axis=-1, keepdims=True)
    return (m + np.log(np.exp(z - m).sum(axis=-1, keepdims=True)))[..., 0]


def np_cross_entropy(logits, labels, weights=None):
    per = np_logsumexp(logits) - logits[np.arange(len(labels)), labels]
    return np_weighted(per, weights)


def np_bce(logits, labels, weights=None):
    # -y log s(x) - (1-y) log(1-s(x)) = max(x,0) - x y + log(1 + e^-|x|)
    x = logits.reshape(labels.shape)
    per = np.maximum(x, 0) - x * labels + np.log1p(np.exp(-np.abs(x)))
    return np_weighted(per, weights)


def np_mse(pred, target, weights=None):
    per = ((pred - target) ** 2).reshape(len(pred), -1).mean(axis=1)
    return np_weighted(per, weights)


def np_weighted(per, weights):
    if weights is None:
        return per.mean()
    return (per * weights).sum() / weights.sum()


def central_diff(f, x, eps=1e-6):
    """d f / d x by central differences, all in float64."""
    x = np.array(x, np.float64)
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += eps
        xm[i] -= eps
        g[i] = (f(xp) - f(xm)) / (2 * eps)
    return g


# ------------------------------------------------------------------ cross entropy


def test_cross_entropy_hand_values():
    # softmax([0, ln 3]) = [1/(1+3), 3/(1+3)] = [1/4, 3/4]
    logits = f32([[0.0, LN3]])
    # label 1: -ln(3/4) = ln(4/3) ~= 0.287682
    close(ce(logits, np.array([1])), math.log(4 / 3))
    # label 0: -ln(1/4) = ln 4 ~= 1.386294
    close(ce(logits, np.array([0])), LN4)
    # batch of both: (ln(4/3) + ln 4) / 2 = ln(16/3) / 2 ~= 0.836988
    both = f32([[0.0, LN3], [0.0, LN3]])
    close(ce(both, np.array([1, 0])), math.log(16 / 3) / 2)
    # uniform over 4 classes: ln 4 whatever the label
    close(ce(np.zeros((3, 4), np.float32), np.array([0, 2, 3])), LN4)


def test_cross_entropy_large_logits_finite():
    logits = f32([[1000.0, 0.0], [1000.0, 0.0]])
    # label 0: logsumexp = 1000 (+ e^-1000) - 1000 = 0; label 1: 1000 - 0 = 1000
    close(ce(logits, np.array([0, 1])), 500.0, tol=1e-5)
    g = ce_grad(logits, np.array([0, 1]))
    assert np.all(np.isfinite(g))


def test_cross_entropy_shape_and_dtype():
    out = ce(np.zeros((5, 3), jnp.bfloat16), np.zeros(5, np.int32))
    assert out.shape == () and out.dtype == jnp.float32


def test_cross_entropy_matches_numpy_on_random_inputs():
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3.0, size=(17, 6))
    labels = rng.integers(0, 6, size=17)
    weights = rng.integers(0, 2, size=17).astype(np.float64)
    weights[0] = 1.0
    close(ce(f32(logits), np.asarray(labels)),
          np_cross_entropy(logits, labels), tol=1e-5)
    close(ce(f32(logits), np.asarray(labels), f32(weights)),
          np_cross_entropy(logits, labels, weights), tol=1e-5)


def test_cross_entropy_gradient():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(4, 3))
    labels = np.array([0, 2, 1, 2])
    grad = np.asarray(ce_grad(f32(logits), np.asarray(labels)))
    # closed form: (softmax - onehot) / batch
    p = np.exp(logits - np_logsumexp(logits)[:, None])
    closed = (p - np.eye(3)[labels]) / 4
    np.testing.assert_allclose(grad, closed, atol=1e-6)
    # central differences of the float64 reference
    fd = central_diff(lambda z: np_cross_entropy(z, labels), logits)
    np.testing.assert_allclose(grad, fd, atol=1e-6)


def test_cross_entropy_gradient_with_weights():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(5, 3))
    labels = np.array([0, 2, 1, 2, 0])
    w = np.array([1.0, 0.0, 1.0, 1.0, 0.0])
    grad = ce_grad(f32(logits), np.asarray(labels), f32(w))
    fd = central_diff(lambda z: np_cross_entropy(z, labels, w), logits)
    np.testing.assert_allclose(np.asarray(grad), fd, atol=1e-6)
    assert np.all(np.asarray(grad)[w == 0] == 0)  # padding gets no gradient


# ------------------------------------------------------------------ binary cross entropy


def test_bce_hand_values():
    # sigmoid(0) = 1/2: -ln(1/2) = ln 2 for either label
    close(bce(f32([0.0, 0.0]), f32([1, 0])), LN2)
    # sigmoid(ln 3) = 3/(3+1) = 3/4: label 1 -> ln(4/3); label 0 -> -ln(1/4) = ln 4
    close(bce(f32([LN3]), f32([1])), math.log(4 / 3))
    close(bce(f32([LN3]), f32([0])), LN4)
    # [batch, 1] logits are accepted: mean(ln(4/3), ln 4) = ln(16/3) / 2
    close(bce(f32([[LN3], [LN3]]), np.array([1, 0])),
          math.log(16 / 3) / 2)


def test_bce_extreme_logits_finite():
    logits = f32([100.0, -100.0, 100.0, -100.0])
    labels = f32([1, 0, 0, 1])
    # right and confident: log(1 + e^-100) ~ 3.7e-44 ~ 0;
    # wrong and confident: 100 + log(1 + e^-100) ~ 100
    per = [float(bce(logits[i:i + 1], labels[i:i + 1]))
           for i in range(4)]
    np.testing.assert_allclose(per, [0.0, 0.0, 100.0, 100.0], atol=1e-6)
    close(bce(logits, labels), 50.0, tol=1e-6)
    g = bce_grad(logits, labels)
    # d/dx = (sigmoid(x) - y) / batch
    np.testing.assert_allclose(np.asarray(g), [0.0, 0.0, 0.25, -0.25], atol=1e-6)


def test_bce_matches_numpy_on_random_inputs():
    rng = np.random.default_rng(3)
    logits = rng.normal(scale=4.0, size=(23, 1))
    labels = rng.integers(0, 2, size=23).astype(np.float64)
    weights = np.r_[np.ones(20), np.zeros(3)]
    close(bce(f32(logits), f32(labels)), np_bce(logits, labels),
          tol=1e-5)
    close(bce(f32(logits), f32(labels), f32(weights)),
          np_bce(logits, labels, weights), tol=1e-5)


def test_bce_gradient():
    rng = np.random.default_rng(4)
    logits = rng.normal(scale=2.0, size=(6,))
    labels = np.array([0.0, 1.0, 1.0, 0.0, 1.0, 0.0])
    grad = np.asarray(bce_grad(f32(logits), f32(labels)))
    fd = central_diff(lambda z: np_bce(z, labels), logits)
    np.testing.assert_allclose(grad, fd, atol=1e-6)
    np.testing.assert_allclose(grad, (1 / (1 + np.exp(-logits)) - labels) / 6, atol=1e-6)


# ------------------------------------------------------------------ mse


def test_mse_hand_values():
    pred = f32([[1.0, 2.0], [3.0, 5.0]])
    target = f32([[0.0, 0.0], [3.0, 3.0]])
    # per example: (1 + 4) / 2 = 2.5 and (0 + 4) / 2 = 2; mean 2.25
    close(mse(pred, target), 2.25)
    # weights [0, 1] keep only the second example: 2
    close(mse(pred, target, f32([0, 1])), 2.0)
    # 1-d predictions: ((1-0)^2 + (2-4)^2) / 2 = 2.5
    close(mse(f32([1.0, 2.0]), f32([0.0, 4.0])), 2.5)


def test_mse_multi_dim_targets():
    # [batch=2, 2, 2]: example 0 all errors 1 -> 1; example 1 errors (2,0,0,0) -> 4/4 = 1
    pred = np.zeros((2, 2, 2), np.float32)
    target = f32([[[1, -1], [1, -1]], [[2, 0], [0, 0]]])
    close(mse(pred, target), 1.0)
    rng = np.random.default_rng(5)
    p, t = rng.normal(size=(4, 3, 2)), rng.normal(size=(4, 3, 2))
    w = np.array([1.0, 1.0, 0.0, 1.0])
    close(mse(f32(p), f32(t), f32(w)), np_mse(p, t, w), tol=1e-5)


def test_mse_gradient():
    rng = np.random.default_rng(6)
    p, t = rng.normal(size=(3, 2, 2)), rng.normal(size=(3, 2, 2))
    grad = np.asarray(mse_grad(f32(p), f32(t)))
    fd = central_diff(lambda z: np_mse(z, t), p)
    np.testing.assert_allclose(grad, fd, atol=1e-6)
    np.testing.assert_allclose(grad, 2 * (p - t) / 12, atol=1e-6)  # 12 = 3 examples x 4 dims


# ------------------------------------------------------------------ accuracy


def test_accuracy_hand_values():
    logits = f32([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    labels = np.array([1, 1, 1])
    # argmax = [1, 0, 1] -> 2 of 3 right
    close(acc(logits, labels), 2 / 3)
    # weights [1, 1, 0]: 1 of 2 right
    close(acc(logits, labels, f32([1, 1, 0])), 0.5)
    out = acc(logits, labels)
    assert out.shape == () and out.dtype == jnp.float32


def test_binary_accuracy_hand_values():
    # predicted class = logit > 0: [1, 0, 1, 0, 0(logit exactly 0)]
    logits = f32([2.0, -1.0, 0.5, -3.0, 0.0])
    labels = np.array([1, 1, 0, 0, 0])
    # right: yes, no, no, yes, yes -> 3/5
    close(bacc(logits, labels), 0.6)
    close(bacc(logits[:, None], labels), 0.6)  # [batch, 1] logits
    close(bacc(logits, labels, f32([1, 0, 0, 1, 0])), 1.0)


def test_accuracy_matches_numpy_on_random_inputs():
    rng = np.random.default_rng(7)
    logits = rng.normal(size=(50, 5))
    labels = rng.integers(0, 5, size=50)
    close(acc(f32(logits), np.asarray(labels)),
          np.mean(logits.argmax(axis=1) == labels))
    blog = rng.normal(size=50)
    blab = rng.integers(0, 2, size=50)
    close(bacc(f32(blog), np.asarray(blab)), np.mean((blog > 0) == blab))


# ------------------------------------------------------------------ l2 penalty


def test_l2_penalty_kernels_only():
    params = {
        "Dense_0": {"kernel": f32([[1.0, 2.0], [3.0, 4.0]]), "bias": f32([10.0, 10.0])},
        "BatchNorm_0": {"scale": f32([5.0]), "bias": f32([1.0])},
        "Conv2D_0": {"kernel": f32([1.0, -1.0]).reshape(1, 1, 1, 2), "bias": f32([7.0, 7.0])},
    }
    # 0.5 * (1 + 4 + 9 + 16 + 1 + 1) = 0.5 * 32 = 16; biases and scales excluded
    close(l2(params), 16.0)
    assert l2(params).dtype == jnp.float32


def test_l2_penalty_no_kernels_is_zero():
    out = l2({"bias": f32([3.0])})
    assert out.shape == () and float(out) == 0.0
    assert float(l2({})) == 0.0


def test_l2_penalty_on_mlp_params_and_gradient():
    model = MLP(widths=(4,), outputs=3)
    params = jax.jit(model.init)(jax.random.key(0), np.ones((1, 5), np.float32))["params"]
    expected = 0.5 * sum(float(np.sum(np.square(params[k]["kernel"])))
                         for k in ("Dense_0", "Dense_1"))
    close(l2(params), expected, tol=1e-5)
    grad = jax.jit(jax.grad(losses.l2_penalty))(params)
    # d/dW (0.5 |W|^2) = W for kernels, 0 for biases
    np.testing.assert_allclose(grad["Dense_1"]["kernel"], params["Dense_1"]["kernel"])
    assert np.all(np.asarray(grad["Dense_0"]["bias"]) == 0)


# ------------------------------------------------------------------ weights and padding


def _padded(x, n, value=0):
    pad = [(0, n)] + [(0, 0)] * (x.ndim - 1)
    return np.pad(x, pad, constant_values=value)


@pytest.mark.parametrize("name", ["cross_entropy", "accuracy", "bce", "binary_accuracy", "mse"])
def test_zero_weight_padding_equals_unpadded(name):
    rng = np.random.default_rng(8)
    n, pad = 7, 5
    if name in ("cross_entropy", "accuracy"):
        fn = ce if name == "cross_entropy" else acc
        preds, targets = f32(rng.normal(size=(n, 4))), np.asarray(rng.integers(0, 4, n))
    elif name in ("bce", "binary_accuracy"):
        fn = bce if name == "bce" else bacc
        preds, targets = f32(rng.normal(size=(n, 1))), np.asarray(rng.integers(0, 2, n))
    else:
        fn = mse
        preds, targets = f32(rng.normal(size=(n, 2, 3))), f32(rng.normal(size=(n, 2, 3)))
    unpadded = fn(preds, targets)
    # pad with junk predictions (large values) and weight 0
    weights = np.r_[np.ones(n), np.zeros(pad)].astype(np.float32)
    padded = fn(_padded(preds, pad, 50), _padded(targets, pad), weights)
    np.testing.assert_allclose(float(padded), float(unpadded), rtol=1e-6, atol=1e-7)
    # all-ones weights equal no weights
    np.testing.assert_allclose(float(fn(preds, targets, np.ones(n, np.float32))), float(unpadded),
                               rtol=1e-6)


def test_weighted_mean_hand_values_and_all_zero_weights():
    close(wmean(f32([1.0, 2.0, 3.0])), 2.0)
    close(wmean(f32([1.0, 2.0, 3.0]), f32([1, 1, 0])), 1.5)
    close(wmean(f32([1.0, 2.0, 3.0]), f32([2, 0, 2])), 2.0)  # (2+6)/4
    out = wmean(f32([1.0, 2.0]), f32([0, 0]))  # all padding: 0, not NaN
    assert float(out) == 0.0


def test_weighted_mean_is_scale_invariant_for_small_weights():
    close(wmean(f32([2.0, 4.0]), f32([0.25, 0.25])), 3.0)


def test_losses_return_float32_even_with_x64():
    with jax.enable_x64(True):
        logits = jnp.asarray([[0.0, LN3]], jnp.float64)
        assert logits.dtype == jnp.float64
        out = ce(logits, np.array([1]))
        assert out.dtype == jnp.float32
        close(out, math.log(4 / 3))
        assert mse(logits, logits).dtype == jnp.float32
        assert bce(np.array([0.0, LN3]), np.array([0, 1])).dtype == jnp.float32


def test_losses_jit_and_finite_difference_of_library_function():
    # The library computes in float32; a central difference of the library
    # function itself (loose tolerance) agrees with its jitted gradient.
    rng = np.random.default_rng(9)
    logits = rng.normal(size=(3, 4)).astype(np.float32)
    labels = np.array([3, 0, 1])
    fn = jax.jit(lambda z: ce(z, labels))
    grad = np.asarray(jax.jit(jax.grad(lambda z: ce(z, labels)))(logits))
    eps = 1e-2
    for i in [(0, 0), (1, 2), (2, 3)]:
        d = np.zeros_like(logits)
        d[i] = eps
        fd = (float(fn(logits + d)) - float(fn(logits - d))) / (2 * eps)
        assert abs(fd - grad[i]) < 1e-3


# ------------------------------------------------------------------ an MLP's loss


def _np_mlp_loss(params, x, y):
    """float64 numpy forward of MLP(widths=(5,), activation=tanh) + cross entropy."""
    h = np.tanh(x @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"])
    logits = h @ params["Dense_1"]["kernel"] + params["Dense_1"]["bias"]
    return np_cross_entropy(logits, y)


def test_mlp_loss_gradient_against_float64_finite_differences():
    model = MLP(widths=(5,), outputs=3, activation="tanh")
    rng = np.random.default_rng(10)
    x = rng.normal(size=(6, 4))
    y = rng.integers(0, 3, size=6)
    params = jax.jit(model.init)(jax.random.key(1), f32(x))["params"]
    params = jax.tree.map(lambda p: np.asarray(p) + np.float32(0.1), params)  # nonzero biases

    def loss(p):
        return ce(model.apply({"params": p}, f32(x)), np.asarray(y))

    grad = jax.jit(jax.grad(loss))(params)
    p64 = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    close(jax.jit(loss)(params), _np_mlp_loss(p64, x, y), tol=1e-5)

    def fd(layer, name, index, eps=1e-6):
        def at(delta):
            q = jax.tree.map(np.copy, p64)
            q[layer][name][index] += delta
            return _np_mlp_loss(q, x, y)
        return (at(eps) - at(-eps)) / (2 * eps)

    for layer, name, index in [("Dense_0", "kernel", (0, 0)), ("Dense_0", "kernel", (3, 4)),
                               ("Dense_0", "bias", (2,)), ("Dense_1", "kernel", (1, 2)),
                               ("Dense_1", "bias", (0,))]:
        np.testing.assert_allclose(float(grad[layer][name][index]), fd(layer, name, index),
                                   atol=2e-6, err_msg=f"{layer}.{name}{index}")
