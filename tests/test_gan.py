"""GAN networks (jaxdl.models.gan) and the two-player step, losses and
quality scores (jaxdl.algorithms.gan)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxdl.algorithms.gan import (
    GAN,
    LOSSES,
    class_statistics,
    discriminator_loss,
    frechet_distance,
    gaussian_stats,
    generator_loss,
)
from jaxdl.models.gan import Discriminator, Generator

LATENT = 8


def tiny_gan(kind="mlp", norm="batch", loss="non_saturating", n_critic=1, g_lr=1e-2,
             d_lr=1e-2):
    return GAN(Generator(kind, width=8, depth=1, norm=norm, image=(8, 8, 1)),
               Discriminator(kind, width=8, depth=1), optax.sgd(g_lr), optax.sgd(d_lr),
               latent=LATENT, loss=loss, n_critic=n_critic)


def reals(n, key=0):
    return jnp.tanh(jax.random.normal(jax.random.key(key), (n, 8, 8, 1)))


@pytest.mark.parametrize("kind", ["mlp", "conv"])
@pytest.mark.parametrize("norm", ["batch", "none"])
def test_generator_shapes_and_range(kind, norm):
    g = Generator(kind, width=8, depth=2, norm=norm)
    z = jax.random.normal(jax.random.key(0), (5, 16)) * 10.0      # large: saturates tanh
    variables = g.init(jax.random.key(1), z)
    assert ("batch_stats" in variables) == (norm == "batch")
    images = g.apply(variables, z)
    assert images.shape == (5, 28, 28, 1)
    assert float(jnp.min(images)) >= -1.0 and float(jnp.max(images)) <= 1.0
    assert float(jnp.std(images)) > 0
    d = Discriminator(kind, width=8, depth=2)
    logits = d.apply(d.init(jax.random.key(2), images), images)
    assert logits.shape == (5,)


def test_network_config_errors():
    z = jnp.zeros((2, 4))
    with pytest.raises(ValueError, match="unknown GAN network kind 'dense'; valid: mlp, conv"):
        Generator("dense").init(jax.random.key(0), z)
    with pytest.raises(ValueError, match="unknown generator norm 'layer'; valid: batch, none"):
        Generator("mlp", norm="layer").init(jax.random.key(0), z)
    with pytest.raises(ValueError, match="divisible by 4, got 30x30"):
        Generator("conv", image=(30, 30, 1)).init(jax.random.key(0), z)
    with pytest.raises(ValueError, match="divisible by 4, got 30x30"):
        Discriminator("conv").init(jax.random.key(0), jnp.zeros((2, 30, 30, 1)))
    with pytest.raises(ValueError, match="unknown GAN loss 'wasserstein'"):
        tiny_gan(loss="wasserstein")
    with pytest.raises(ValueError, match="n_critic must be >= 1, got 0"):
        tiny_gan(n_critic=0)


def test_losses_against_hand_computation():
    real = np.array([2.0, -0.5, 0.3])
    fake = np.array([-1.5, 0.8])
    softplus = lambda x: np.log1p(np.exp(x))  # noqa: E731
    sigmoid = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    expected_d = {
        # -log D(real) - log(1 - D(fake)), D = sigmoid(logit)
        "non_saturating": np.mean(-np.log(sigmoid(real))) + np.mean(-np.log(1 - sigmoid(fake))),
        "least_squares": 0.5 * (np.mean((real - 1) ** 2) + np.mean(fake ** 2)),
        "hinge": np.mean(np.maximum(0, 1 - real)) + np.mean(np.maximum(0, 1 + fake)),
    }
    expected_g = {"non_saturating": np.mean(-np.log(sigmoid(fake))),
                  "least_squares": 0.5 * np.mean((fake - 1) ** 2),
                  "hinge": -np.mean(fake)}
    assert softplus(0.0) == pytest.approx(math.log(2))
    for kind in LOSSES:
        assert float(discriminator_loss(kind, jnp.asarray(real), jnp.asarray(fake))) == \
            pytest.approx(expected_d[kind], rel=1e-6), kind
        assert float(generator_loss(kind, jnp.asarray(fake))) == \
            pytest.approx(expected_g[kind], rel=1e-6), kind
    with pytest.raises(ValueError, match="unknown GAN loss"):
        generator_loss("bce", jnp.zeros(2))


def _changed(a, b):
    return any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b),
                                                       strict=True))


@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_each_player_updates_only_by_its_own_gradient(kind):
    """One step (n_critic 1, plain SGD) equals, by hand: D moves along the
    gradient of the discriminator loss on a real batch and a detached fake
    batch, and nothing else moves D; then G moves along the gradient of the
    generator loss through the updated D, and nothing else moves G."""
    lr_g, lr_d = 0.05, 0.1
    gan = tiny_gan(kind, norm="none", g_lr=lr_g, d_lr=lr_d)
    s0 = gan.init(jax.random.key(0), (8, 8, 1))
    real, rng = reals(6), jax.random.key(3)
    s1, m = jax.jit(gan.train_step)(s0, real, rng)

    k_d, k_g = jax.random.split(jax.random.fold_in(rng, 0), 2)
    G = lambda p, z: gan.generator.apply({"params": p}, z, train=True)  # noqa: E731
    D = lambda p, x: gan.discriminator.apply({"params": p}, x)  # noqa: E731
    fake = G(s0.g_params, jax.random.normal(k_d, (6, LATENT)))
    d_grad = jax.grad(lambda p: discriminator_loss(gan.loss, D(p, real), D(p, fake)))(
        s0.d_params)
    d_expected = jax.tree.map(lambda p, g: p - lr_d * g, s0.d_params, d_grad)
    z_g = jax.random.normal(k_g, (6, LATENT))
    g_grad = jax.grad(lambda p: generator_loss(gan.loss, D(d_expected, G(p, z_g))))(s0.g_params)
    g_expected = jax.tree.map(lambda p, g: p - lr_g * g, s0.g_params, g_grad)
    for got, want in ((s1.d_params, d_expected), (s1.g_params, g_expected)):
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert _changed(s0.d_params, s1.d_params) and _changed(s0.g_params, s1.g_params)
    assert int(s1.step) == 1 and set(m) == {"d_loss", "g_loss", "d_real", "d_fake"}


@pytest.mark.parametrize("n_critic", [1, 3])
def test_generator_update_sees_the_updated_discriminator(n_critic):
    """Order within a step: n_critic discriminator updates first, then the
    generator's loss is taken against the updated discriminator."""
    gan = tiny_gan(n_critic=n_critic)
    s0 = gan.init(jax.random.key(0), (8, 8, 1))
    batch = reals(4 * n_critic).reshape(n_critic, 4, 8, 8, 1)
    rng = jax.random.key(5)
    s1, m = gan.train_step(s0, batch, rng)
    keys = jax.random.split(jax.random.fold_in(rng, 0), n_critic + 1)
    z = jax.random.normal(keys[-1], (4, LATENT))
    fake = gan.generator.apply({"params": s0.g_params, "batch_stats": s0.g_batch_stats}, z,
                               train=True, mutable=["batch_stats"])[0]
    d_fake = gan.discriminator.apply({"params": s1.d_params}, fake)
    assert float(m["g_loss"]) == pytest.approx(float(generator_loss(gan.loss, d_fake)),
                                               rel=1e-5)
    assert float(m["d_fake"]) == pytest.approx(float(jnp.mean(d_fake)), rel=1e-5)
    with pytest.raises(ValueError, match="reals has 1 batches for n_critic=3"):
        tiny_gan(n_critic=3).train_step(s0, batch[:1], rng)
    with pytest.raises(ValueError, match=r"reals must be \[batch, H, W, C\]"):
        gan.train_step(s0, batch[0, :, :, :, 0], rng)


def test_batch_norm_statistics_move_only_in_training():
    gan = tiny_gan(norm="batch")
    s0 = gan.init(jax.random.key(0), (8, 8, 1))
    s1, _ = gan.train_step(s0, reals(4), jax.random.key(1))
    assert _changed(s0.g_batch_stats, s1.g_batch_stats)
    z = jax.random.normal(jax.random.key(2), (3, LATENT))
    assert gan.sample(s1, z).shape == (3, 8, 8, 1)
    np.testing.assert_array_equal(gan.sample(s1, z), gan.sample(s1, z))


def test_same_seed_same_samples():
    def run(seed=1):
        gan = tiny_gan("conv")
        epoch = jax.jit(gan.train_epoch, static_argnums=3)
        state = gan.init(jax.random.key(0), (8, 8, 1))
        for e in range(2):
            state, _ = epoch(state, reals(24), jax.random.fold_in(jax.random.key(seed), e), 4)
        return gan.sample(state, jax.random.normal(jax.random.key(9), (4, LATENT)))

    np.testing.assert_array_equal(run(), run())
    assert not np.array_equal(run(), run(seed=2))        # the seed matters


def test_train_epoch_steps_metrics_and_progress():
    gan = tiny_gan(n_critic=2)
    state = gan.init(jax.random.key(0), (8, 8, 1))
    seen = []
    epoch = jax.jit(gan.train_epoch, static_argnums=(3, 4))
    progress = lambda step, metrics: seen.append(int(step))  # noqa: E731
    for e in range(2):
        state, m = epoch(state, reals(21), jax.random.key(e), 4, progress)
    jax.effects_barrier()
    assert int(state.step) == 4                   # 2 epochs x 21 // (4 * 2)
    assert seen == [1, 2, 1, 2]                   # steps within each epoch
    assert set(m) == {"d_loss", "g_loss", "d_real", "d_fake"}
    assert all(np.isfinite(float(v)) for v in m.values())
    with pytest.raises(ValueError, match="7 images are fewer than one step's 8"):
        gan.train_epoch(state, reals(7), jax.random.key(1), 4)


def test_frechet_distance_matches_scipy_reference():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 6)) @ rng.normal(size=(6, 6))
    b = rng.normal(size=(150, 6)) @ rng.normal(size=(6, 6)) + 0.5
    (m1, c1), (m2, c2) = gaussian_stats(a), gaussian_stats(b)
    covmean = scipy_linalg.sqrtm(c1 @ c2).real
    reference = np.sum((m1 - m2) ** 2) + np.trace(c1) + np.trace(c2) - 2 * np.trace(covmean)
    assert frechet_distance(m1, c1, m2, c2) == pytest.approx(reference, rel=1e-6)
    assert frechet_distance(m2, c2, m1, c1) == pytest.approx(reference, rel=1e-6)
    assert 0.0 <= frechet_distance(m1, c1, m1, c1) < 1e-8
    # Shifting one mean by v adds |v|^2.
    v = np.array([1.0, -2.0, 0, 0, 0, 3.0])
    assert frechet_distance(m1 + v, c1, m1, c1) == pytest.approx(14.0, rel=1e-8)


def test_frechet_bad_input():
    mu, cov = np.zeros(3), np.eye(3)
    with pytest.raises(ValueError, match="shapes do not match"):
        frechet_distance(mu, cov, np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match=r"features must be \[n >= 2, d\]"):
        gaussian_stats(np.zeros((1, 3)))
    assert math.isnan(frechet_distance(np.full(3, np.nan), cov, mu, cov))   # diverged samples


def test_class_statistics():
    uniform = np.eye(10)[np.arange(100) % 10] * 0.95 + 0.005
    s = class_statistics(uniform)
    assert s["confident"] == 1.0
    assert s["class_entropy"] == pytest.approx(math.log(10))
    collapsed = np.tile(np.full(10, 0.1), (50, 1))
    collapsed[:, 3] = 0.2
    s = class_statistics(collapsed)
    assert s == {"confident": 0.0, "class_entropy": 0.0}
    with pytest.raises(ValueError, match=r"probs must be \[n, classes\]"):
        class_statistics(np.zeros(10))


def test_image_grid_layout_and_png_round_trip(tmp_path):
    import matplotlib.image

    from jaxdl.metrics import image_grid, save_image_grid

    images = np.stack([np.full((3, 4, 1), v, np.float32) for v in (-1.0, 0.0, 1.0, 2.0, -3.0)])
    grid = image_grid(images, cols=3, pad=1)
    assert grid.shape == (2 * 4 + 1, 3 * 5 + 1)
    assert grid[1:4, 1:5].max() == 0.0                     # -1 -> black
    assert np.allclose(grid[1:4, 6:10], 0.5)               # 0 -> mid grey
    assert grid[5:8, 1:5].min() == 1.0                     # 2 clipped to white
    assert grid[5:8, 6:10].max() == 0.0                    # -3 clipped to black
    assert grid[5:8, 11:15].min() == 1.0 and grid[0].min() == 1.0   # empty cell, padding
    assert image_grid(images).shape == (2 * 5 + 2, 3 * 6 + 2)      # ceil(sqrt(5)) = 3 cols
    path = save_image_grid(images, tmp_path / "grid.png", cols=3)
    back = matplotlib.image.imread(path)
    np.testing.assert_allclose(back[..., 0], image_grid(images, cols=3), atol=1 / 255)
    assert not list(tmp_path.glob("*.tmp*"))
    with pytest.raises(ValueError, match="images must be"):
        image_grid(np.zeros((0, 3, 3)))
