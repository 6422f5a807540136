"""Generative adversarial training: both players in one pure, jitted step.

    gan = GAN(Generator(), Discriminator(), optax.adam(2e-4, b1=0.5),
              optax.adam(2e-4, b1=0.5), latent=64)
    state = gan.init(jax.random.key(0), image_shape=(28, 28, 1))
    step = jax.jit(gan.train_step, donate_argnums=0)
    state, metrics = step(state, reals, rng)      # reals: [n_critic, batch, 28, 28, 1]
    epoch = jax.jit(gan.train_epoch, static_argnums=3, donate_argnums=0)
    state, metrics = epoch(state, train_images, epoch_rng, 64)   # one lax.scan
    images = gan.sample(state, jax.random.normal(key, (64, 64)))

One step updates the discriminator ``n_critic`` times (one real batch each,
fresh latents each) and then the generator once, each player with its own
optax chain (learning rates, betas, clipping are the chains' business).
Randomness is ``fold_in(rng, state.step)``: pass the same ``rng`` every
step, as with the supervised engine.

Losses (``d`` are discriminator logits):

* ``non_saturating`` (Goodfellow et al., 2014): D minimises
  ``softplus(-d_real) + softplus(d_fake)`` (binary cross-entropy), G
  minimises ``softplus(-d_fake)``, i.e. ``-log sigmoid(d_fake)``.
* ``least_squares`` (Mao et al., 2017): D ``((d_real - 1)^2 + d_fake^2) / 2``,
  G ``(d_fake - 1)^2 / 2``.
* ``hinge`` (Lim & Ye, 2017; Miyato et al., 2018): D ``relu(1 - d_real) +
  relu(1 + d_fake)``, G ``-d_fake``.

Quality: :func:`frechet_distance` between Gaussian fits of classifier
features, and :func:`class_statistics` of a classifier's predictions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

__all__ = ["LOSSES", "GAN", "GANState", "class_statistics", "discriminator_loss",
           "frechet_distance", "gaussian_stats", "generator_loss"]

LOSSES = ("non_saturating", "least_squares", "hinge")


def _check_loss(kind: str) -> None:
    if kind not in LOSSES:
        raise ValueError(f"unknown GAN loss {kind!r}; valid: {', '.join(LOSSES)}")


def discriminator_loss(kind: str, real: jax.Array, fake: jax.Array) -> jax.Array:
    """The discriminator's loss from its logits on a real and a generated
    batch (each ``[batch]``), averaged over each batch; see the module
    docstring for the formulas."""
    _check_loss(kind)
    if kind == "non_saturating":
        return jnp.mean(jax.nn.softplus(-real)) + jnp.mean(jax.nn.softplus(fake))
    if kind == "least_squares":
        return 0.5 * (jnp.mean((real - 1.0) ** 2) + jnp.mean(fake ** 2))
    return jnp.mean(jax.nn.relu(1.0 - real)) + jnp.mean(jax.nn.relu(1.0 + fake))


def generator_loss(kind: str, fake: jax.Array) -> jax.Array:
    """The generator's loss from the discriminator's logits on its batch."""
    _check_loss(kind)
    if kind == "non_saturating":
        return jnp.mean(jax.nn.softplus(-fake))
    if kind == "least_squares":
        return 0.5 * jnp.mean((fake - 1.0) ** 2)
    return -jnp.mean(fake)


class GANState(struct.PyTreeNode):
    """Both players' parameters and optimizer states (arrays only, so it
    checkpoints, vmaps and shards like any pytree).

    ``g_batch_stats`` holds the generator's batch-norm running averages
    (``{}`` without batch norm). ``step`` counts generator updates.
    """

    step: jax.Array
    g_params: Any
    d_params: Any
    g_opt_state: Any
    d_opt_state: Any
    g_batch_stats: Any


@dataclasses.dataclass(frozen=True)
class GAN:
    """A generator, a discriminator, their optimizers and the training rule.

    Attributes:
      generator: module ``(z, train) -> images`` in [-1, 1] (e.g.
        :class:`jaxdl.models.gan.Generator`); a ``batch_stats`` collection is
        carried when it has one.
      discriminator: module ``images -> logits [batch]``.
      g_tx, d_tx: optax transformations of the generator and discriminator.
      latent: size of the latent vector ``z ~ N(0, I)``.
      loss: one of :data:`LOSSES`.
      n_critic: discriminator updates per generator update (>= 1).
    """

    generator: nn.Module
    discriminator: nn.Module
    g_tx: optax.GradientTransformation
    d_tx: optax.GradientTransformation
    latent: int = 64
    loss: str = "non_saturating"
    n_critic: int = 1

    def __post_init__(self):
        _check_loss(self.loss)
        if self.n_critic < 1:
            raise ValueError(f"n_critic must be >= 1, got {self.n_critic}")
        if self.latent < 1:
            raise ValueError(f"latent must be >= 1, got {self.latent}")

    def init(self, rng: jax.Array, image_shape: tuple[int, ...]) -> GANState:
        """Fresh parameters (from ``rng``) and optimizer states."""
        kg, kd = jax.random.split(rng)
        g_vars = self.generator.init(kg, jnp.zeros((2, self.latent)))
        d_vars = self.discriminator.init(kd, jnp.zeros((2, *image_shape)))
        g_params, d_params = g_vars["params"], d_vars["params"]
        return GANState(step=jnp.zeros((), jnp.int32), g_params=g_params, d_params=d_params,
                        g_opt_state=self.g_tx.init(g_params),
                        d_opt_state=self.d_tx.init(d_params),
                        g_batch_stats=g_vars.get("batch_stats", {}))

    def _generate(self, g_params, batch_stats, z, train: bool):
        """Images and the updated batch statistics (unchanged when none)."""
        variables = {"params": g_params}
        if batch_stats:
            variables["batch_stats"] = batch_stats
            if train:
                images, updates = self.generator.apply(variables, z, train=True,
                                                       mutable=["batch_stats"])
                return images, updates["batch_stats"]
        return self.generator.apply(variables, z, train=train), batch_stats

    def _critic(self, d_params, images):
        return self.discriminator.apply({"params": d_params}, images)

    def train_step(self, state: GANState, reals: jax.Array, rng: jax.Array
                   ) -> tuple[GANState, dict[str, jax.Array]]:
        """``n_critic`` discriminator updates, then one generator update.

        Args:
          state: the current :class:`GANState`.
          reals: real images in [-1, 1], ``[n_critic, batch, H, W, C]`` (one
            batch per discriminator update; ``[batch, H, W, C]`` when
            ``n_critic`` is 1; a channel axis is required).
          rng: the run's key; the step's key is ``fold_in(rng, state.step)``.
        Returns:
          ``(state, metrics)``: ``d_loss`` (mean over the critic updates),
          ``g_loss``, ``d_real`` (the discriminator's mean logit on the last
          real batch, before its update on it) and ``d_fake`` (its mean logit
          on the generator update's batch, after all critic updates).
        """
        if reals.ndim not in (4, 5):
            raise ValueError(f"reals must be [batch, H, W, C] or [n_critic, batch, H, W, C], "
                             f"got shape {reals.shape}")
        if reals.ndim == 4:
            reals = reals[None]
        if reals.shape[0] != self.n_critic:
            raise ValueError(f"reals has {reals.shape[0]} batches for n_critic={self.n_critic}")
        batch = reals.shape[1]
        keys = jax.random.split(jax.random.fold_in(rng, state.step), self.n_critic + 1)

        def d_update(carry, inp):
            d_params, d_opt_state = carry
            real, key = inp
            z = jax.random.normal(key, (batch, self.latent))
            fake, _ = self._generate(state.g_params, state.g_batch_stats, z, train=True)
            fake = jax.lax.stop_gradient(fake)

            def loss_fn(p):
                d_real, d_fake = self._critic(p, real), self._critic(p, fake)
                return discriminator_loss(self.loss, d_real, d_fake), jnp.mean(d_real)

            (loss, d_real), grads = jax.value_and_grad(loss_fn, has_aux=True)(d_params)
            updates, d_opt_state = self.d_tx.update(grads, d_opt_state, d_params)
            return (optax.apply_updates(d_params, updates), d_opt_state), (loss, d_real)

        (d_params, d_opt_state), (d_losses, d_reals) = jax.lax.scan(
            d_update, (state.d_params, state.d_opt_state), (reals, keys[:-1]))

        z = jax.random.normal(keys[-1], (batch, self.latent))

        def g_loss_fn(p):
            fake, stats = self._generate(p, state.g_batch_stats, z, train=True)
            d_fake = self._critic(d_params, fake)
            return generator_loss(self.loss, d_fake), (stats, jnp.mean(d_fake))

        (g_loss, (stats, d_fake)), g_grads = jax.value_and_grad(g_loss_fn, has_aux=True)(
            state.g_params)
        g_updates, g_opt_state = self.g_tx.update(g_grads, state.g_opt_state, state.g_params)
        new_state = state.replace(step=state.step + 1,
                                  g_params=optax.apply_updates(state.g_params, g_updates),
                                  d_params=d_params, g_opt_state=g_opt_state,
                                  d_opt_state=d_opt_state, g_batch_stats=stats)
        metrics = {"d_loss": jnp.mean(d_losses), "g_loss": g_loss,
                   "d_real": d_reals[-1], "d_fake": d_fake}
        return new_state, metrics

    def epoch_order(self, rng: jax.Array, n: int, batch_size: int
                    ) -> tuple[jax.Array, jax.Array]:
        """An epoch's batches and step key from its key ``rng``.

        Returns:
          ``(order, step_key)``: ``order [steps, n_critic, batch_size]`` indexes
          ``n`` images through one random permutation, cut into
          ``n // (batch_size * n_critic)`` steps (the remainder is left out
          this epoch); ``step_key`` is the key :meth:`train_steps` folds
          ``state.step`` into.
        """
        per_step = batch_size * self.n_critic
        steps = n // per_step
        if steps < 1:
            raise ValueError(f"{n} images are fewer than one step's "
                             f"{per_step} (batch {batch_size} x n_critic {self.n_critic})")
        perm_key, step_key = jax.random.split(rng)
        order = jax.random.permutation(perm_key, n)[:steps * per_step]
        return order.reshape(steps, self.n_critic, batch_size), step_key

    def train_steps(self, state: GANState, images: jax.Array, order: jax.Array,
                    step_key: jax.Array, callback: Callable | None = None,
                    callback_every: int = 1, first: jax.Array | int = 0
                    ) -> tuple[GANState, dict[str, jax.Array]]:
        """:meth:`train_step` over the batches ``images[order[i]]`` as one
        ``lax.scan``.

        Args:
          images: ``[N, H, W, C]`` on the device.
          order: ``[steps, n_critic, batch]`` indices (from :meth:`epoch_order`,
            or a slice of it).
          step_key: the epoch's step key.
          callback: if given, called (``jax.debug.callback``, ordered) with
            ``(steps done in the epoch, metrics)`` after every
            ``callback_every``-th step and the last (progress display).
          first: how many steps of the epoch came before ``order[0]``.
        Returns:
          The state and the metrics of every step (``[steps]`` each).
        """
        steps = order.shape[0]

        def body(s, inp):
            i, idx = inp
            s, m = self.train_step(s, images[idx], step_key)
            if callback is not None:
                done = first + i + 1
                jax.lax.cond((done % callback_every == 0) | (i == steps - 1),
                             lambda: jax.debug.callback(callback, done, m, ordered=True),
                             lambda: None)
            return s, m

        return jax.lax.scan(body, state, (jnp.arange(steps), order))

    def train_epoch(self, state: GANState, images: jax.Array, rng: jax.Array,
                    batch_size: int, callback: Callable | None = None
                    ) -> tuple[GANState, dict[str, jax.Array]]:
        """One pass over ``images`` ``[N, H, W, C]`` (on the device) as one
        ``lax.scan``: :meth:`epoch_order` from ``rng`` (the epoch's key), then
        :meth:`train_steps`. Returns the state and the epoch's mean metrics.
        ``callback``, if given, is called with ``(step_in_epoch, metrics)``
        after every step, counting from 1 (progress display)."""
        order, step_key = self.epoch_order(rng, images.shape[0], batch_size)
        state, metrics = self.train_steps(state, images, order, step_key, callback)
        return state, jax.tree.map(jnp.mean, metrics)

    def sample(self, state: GANState, z: jax.Array) -> jax.Array:
        """Generated images for latents ``z [n, latent]`` (batch norm from
        its running averages)."""
        return self._generate(state.g_params, state.g_batch_stats, z, train=False)[0]


def gaussian_stats(features: np.ndarray | jax.Array) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[d]`` and covariance ``[d, d]`` (unbiased) of ``[n, d]``
    features, in float64."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"features must be [n >= 2, d], got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray,
                     cov2: np.ndarray) -> float:
    """Frechet distance between the Gaussians ``N(mu1, cov1)`` and ``N(mu2,
    cov2)``: ``|mu1 - mu2|^2 + tr(cov1) + tr(cov2) - 2 tr((cov1 cov2)^1/2)``
    (Dowson & Landau, 1982; FID of Heusel et al., 2017 on Inception
    features).

    ``tr((cov1 cov2)^1/2)`` is computed as the sum of the square roots of the
    eigenvalues of the symmetric ``S cov2 S`` with ``S = cov1^1/2`` (same
    eigenvalues as ``cov1 cov2``), which stays real and stable for
    positive-semidefinite inputs; tiny negative eigenvalues from rounding
    are clipped to 0, and so is the result. Non-finite inputs (samples of a
    diverged generator) give ``nan``.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    cov1, cov2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
    if mu1.shape != mu2.shape or cov1.shape != cov2.shape or cov1.shape != mu1.shape * 2:
        raise ValueError(f"shapes do not match: mu {mu1.shape} / {mu2.shape}, "
                         f"cov {cov1.shape} / {cov2.shape}")
    if not all(np.isfinite(a).all() for a in (mu1, mu2, cov1, cov2)):
        return float("nan")
    w, v = np.linalg.eigh((cov1 + cov1.T) / 2)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = root1 @ cov2 @ root1
    eig = np.linalg.eigvalsh((inner + inner.T) / 2)
    trace_sqrt = np.sum(np.sqrt(np.clip(eig, 0, None)))
    diff = mu1 - mu2
    return max(0.0, float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * trace_sqrt))


def class_statistics(probs: np.ndarray | jax.Array, confident: float = 0.9
                     ) -> dict[str, float]:
    """Mode-collapse indicators from a classifier's probabilities ``[n,
    classes]`` on generated samples: ``confident`` (the fraction whose top
    class has probability > ``confident``) and ``class_entropy`` (entropy,
    in nats, of the histogram of predicted classes; ``ln(classes)`` when
    every class is predicted equally often, 0 when one class takes all)."""
    p = np.asarray(probs, np.float64)
    if p.ndim != 2:
        raise ValueError(f"probs must be [n, classes], got shape {p.shape}")
    counts = np.bincount(p.argmax(axis=1), minlength=p.shape[1]).astype(np.float64)
    hist = counts / counts.sum()
    nz = hist[hist > 0]
    return {"confident": float(np.mean(p.max(axis=1) > confident)),
            "class_entropy": float(-(nz * np.log(nz)).sum()) + 0.0}     # no -0.0
