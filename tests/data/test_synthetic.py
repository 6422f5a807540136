"""Tests for jaxdl.data.synthetic."""

from __future__ import annotations

import numpy as np
import pytest

from jaxdl.data import synthetic


@pytest.mark.parametrize("name", synthetic.PLAYGROUND)
@pytest.mark.parametrize("n", [0, 1, 7, 200])
def test_playground_shapes_and_balance(name, n):
    x, y = synthetic.playground(name, n, noise=0.0, seed=0)
    assert x.shape == (n, 2) and x.dtype == np.float32
    assert y.shape == (n,) and y.dtype == np.int32
    assert set(np.unique(y)) <= {0, 1}
    assert int((y == 1).sum()) == n // 2
    assert int((y == 0).sum()) == n - n // 2
    assert np.all(np.abs(x) <= 6.0)


@pytest.mark.parametrize("name", ["gaussian", "spiral"])
def test_position_noise_keeps_balance(name):
    _, y = synthetic.playground(name, 101, noise=0.5, seed=3)
    assert int(y.sum()) == 50


@pytest.mark.parametrize("name", synthetic.PLAYGROUND)
def test_playground_deterministic(name):
    x1, y1 = synthetic.playground(name, 300, noise=0.2, seed=7)
    x2, y2 = synthetic.playground(name, 300, noise=0.2, seed=7)
    x3, _ = synthetic.playground(name, 300, noise=0.2, seed=8)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(x1, x3)


@pytest.mark.parametrize("name", synthetic.PLAYGROUND)
def test_playground_is_shuffled(name):
    _, y = synthetic.playground(name, 200, noise=0.0, seed=0)
    assert 0 < y[:100].sum() < 100


def test_circle_separated_by_radius():
    x, y = synthetic.playground("circle", 2000, noise=0.0, seed=1)
    r = np.hypot(x[:, 0], x[:, 1])
    np.testing.assert_array_equal(y == 1, r < 2.5)
    assert r[y == 1].max() <= 2.5 + 1e-5
    assert r[y == 0].min() >= 3.5 - 1e-5 and r[y == 0].max() <= 5.0 + 1e-5


def test_xor_separated_by_sign():
    x, y = synthetic.playground("xor", 2000, noise=0.0, seed=1)
    np.testing.assert_array_equal(y == 1, x[:, 0] * x[:, 1] > 0)
    assert np.abs(x).min() >= 0.3 - 1e-6  # padding keeps points off the axes
    assert np.abs(x).max() <= 5.3 + 1e-5


def test_gaussian_separated_by_diagonal():
    x, y = synthetic.playground("gaussian", 2000, noise=0.0, seed=1)
    accuracy = np.mean((x[:, 0] + x[:, 1] > 0) == (y == 1))
    assert accuracy >= 0.999  # variance 0.5 at noise 0: overlap is a ~4-sigma event
    np.testing.assert_allclose(x[y == 1].mean(0), [2, 2], atol=0.1)
    np.testing.assert_allclose(x[y == 0].mean(0), [-2, -2], atol=0.1)


def test_spiral_separated_by_phase():
    x, y = synthetic.playground("spiral", 2000, noise=0.0, seed=1)
    r = np.hypot(x[:, 0], x[:, 1])
    keep = r > 0.05  # both arms start at the origin
    # Arm 1 has angle atan2(x1, x2) == 1.75 * 2pi * r / 5; arm 0 is rotated by pi.
    phase = np.arctan2(x[:, 0], x[:, 1]) - 1.75 * 2 * np.pi * r / 5
    np.testing.assert_array_equal((np.cos(phase) > 0)[keep], (y == 1)[keep])


def test_noise_flips_some_labels():
    x, y = synthetic.playground("circle", 2000, noise=0.3, seed=1)
    r = np.hypot(x[:, 0], x[:, 1])
    disagreement = np.mean((r < 2.5) != (y == 1))
    assert 0.01 < disagreement < 0.5


def test_gaussian_noise_widens():
    x0, _ = synthetic.playground("gaussian", 2000, noise=0.0, seed=1)
    x1, _ = synthetic.playground("gaussian", 2000, noise=0.5, seed=1)
    assert np.abs(x1).std() > np.abs(x0).std()


def test_playground_errors():
    with pytest.raises(ValueError, match="circle, xor, gaussian, spiral"):
        synthetic.playground("moons", 10, 0.0, 0)
    with pytest.raises(ValueError, match="noise"):
        synthetic.playground("xor", 10, 1.5, 0)
    with pytest.raises(ValueError, match="n_samples"):
        synthetic.playground("xor", -1, 0.0, 0)


def test_add_features_match_hand_computation():
    x = np.array([[0.5, -2.0], [3.0, 1.5], [-1.0, 0.0]], dtype=np.float32)
    a, b = x[:, 0].astype(np.float64), x[:, 1].astype(np.float64)
    expected = {
        "x1": a,
        "x2": b,
        "x1^2": a**2,
        "x2^2": b**2,
        "x1*x2": a * b,
        "sin(x1)": np.sin(a),
        "sin(x2)": np.sin(b),
    }
    out = synthetic.add_features(x, synthetic.FEATURES)
    assert out.shape == (3, 7) and out.dtype == np.float32
    for column, name in enumerate(synthetic.FEATURES):
        np.testing.assert_allclose(out[:, column], expected[name], rtol=1e-6)
    reordered = synthetic.add_features(x, ["sin(x2)", "x1"])
    np.testing.assert_allclose(reordered, np.stack([np.sin(b), a], 1), rtol=1e-6)
    assert synthetic.add_features(x, []).shape == (3, 0)


def test_add_features_errors():
    x = np.zeros((4, 2), np.float32)
    with pytest.raises(ValueError, match=r"x1\^2"):
        synthetic.add_features(x, ["x1", "cos(x1)"])
    with pytest.raises(ValueError, match="shape"):
        synthetic.add_features(np.zeros((4, 3)), ["x1"])


def test_linear_regression_exact_without_noise():
    x, y = synthetic.linear_regression(200, 5, noise=0.0, seed=0)
    assert x.shape == (200, 5) and x.dtype == np.float32
    assert y.shape == (200, 1) and y.dtype == np.float32
    design = np.hstack([x.astype(np.float64), np.ones((200, 1))])
    coef, residual, rank, _ = np.linalg.lstsq(design, y.astype(np.float64), rcond=None)
    assert rank == 6
    # Only float32 rounding of y remains.
    assert np.sqrt(residual[0] / 200) < 1e-5 * np.abs(y).max()
    # The true coefficients depend only on the seed, not on n.
    x2, y2 = synthetic.linear_regression(50, 5, noise=0.0, seed=0)
    coef2 = np.linalg.lstsq(np.hstack([x2, np.ones((50, 1))]), y2, rcond=None)[0]
    np.testing.assert_allclose(coef, coef2, atol=1e-4)


def test_linear_regression_noise_and_determinism():
    x, y = synthetic.linear_regression(500, 3, noise=0.5, seed=4)
    x_again, y_again = synthetic.linear_regression(500, 3, noise=0.5, seed=4)
    np.testing.assert_array_equal(x, x_again)
    np.testing.assert_array_equal(y, y_again)
    assert not np.array_equal(x, synthetic.linear_regression(500, 3, 0.5, seed=5)[0])
    design = np.hstack([x, np.ones((500, 1))]).astype(np.float64)
    residual = np.linalg.lstsq(design, y.astype(np.float64), rcond=None)[1][0]
    assert 0.4 < np.sqrt(residual / 500) < 0.6
    with pytest.raises(ValueError, match="noise"):
        synthetic.linear_regression(10, 2, -1.0, 0)
