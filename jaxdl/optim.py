"""Optimizer factory: optax chains with every number injected as data.

``make(cfg.optim, steps_per_epoch, epochs)`` returns one
``optax.GradientTransformation`` per optimizer *structure* (name, schedule
kind, clipping on/off). Every numeric hyperparameter - learning rate,
momentum, betas, weight decay, clip norm, schedule lengths - lives as an
array in ``opt_state.hyperparams`` (``optax.inject_hyperparams``), so

* a run with another learning rate reuses the compiled train step, and
* states of trials with different hyperparameters stack along a leading
  axis and train as one vmapped program.

Weight decay follows PyTorch's conventions: coupled L2 (added to the
gradient) for sgd, momentum, nesterov, rmsprop and adam; decoupled for adamw
(params shrink by ``lr * weight_decay`` each step).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxdl.config import OptimConfig

__all__ = ["hyperparams", "learning_rate", "make", "schedule_multiplier", "set_hyperparams",
           "structure_key"]

_STATIC = ("name", "schedule", "clip")


def make(cfg: OptimConfig, steps_per_epoch: int, epochs: int) -> optax.GradientTransformation:
    """The optimizer a config describes.

    Args:
      cfg: the optim section.
      steps_per_epoch, epochs: to turn epoch-based schedule settings into steps.

    Returns:
      An ``optax.GradientTransformation`` whose state holds the numeric
      hyperparameters (see :func:`hyperparams`). Build it once per structure
      and reuse it: jit caches are keyed on the functions it closes over.
    """
    factory = optax.inject_hyperparams(_transform, static_args=_STATIC)
    return factory(**hyperparams(cfg, steps_per_epoch, epochs), **_structure(cfg))


def hyperparams(cfg: OptimConfig, steps_per_epoch: int, epochs: int) -> dict[str, float]:
    """The injected numeric hyperparameters of ``cfg`` (name -> value)."""
    values = dict(
        learning_rate=cfg.learning_rate,
        momentum=cfg.momentum,
        b1=cfg.b1,
        b2=cfg.b2,
        eps=cfg.eps,
        decay=cfg.decay,
        weight_decay=cfg.weight_decay,
        clip_norm=_clip_norm(cfg) or 0.0,
        warmup_steps=cfg.warmup_epochs * steps_per_epoch,
        total_steps=max(1, epochs * steps_per_epoch),
        steps_per_epoch=max(1, steps_per_epoch),
        decay_rate=cfg.decay_rate,
        min_lr_ratio=cfg.min_lr_ratio,
    )
    # Always floats: an int here would inject an int32 array that silently
    # truncates later values and cannot stack with other trials' states.
    return {k: float(v) for k, v in values.items()}


def set_hyperparams(opt_state: Any, values: Mapping[str, float]) -> Any:
    """``opt_state`` with some injected hyperparameters replaced (no recompile)."""
    hp = dict(opt_state.hyperparams)
    for key, value in values.items():
        if key not in hp:
            raise KeyError(f"no hyperparameter {key!r}; have {', '.join(sorted(hp))}")
        hp[key] = jnp.asarray(value, dtype=jnp.asarray(hp[key]).dtype)
    return opt_state._replace(hyperparams=hp)


def learning_rate(opt_state: Any, cfg: OptimConfig) -> jax.Array:
    """The learning rate the next update will use (peak x schedule)."""
    hp = opt_state.hyperparams
    count = opt_state.count
    return hp["learning_rate"] * schedule_multiplier(cfg.schedule, count, hp)


def schedule_multiplier(kind: str, step: jax.Array, hp: Mapping[str, jax.Array]) -> jax.Array:
    """Schedule value at ``step`` as a fraction of the peak learning rate.

    constant: 1. cosine: from 1 down to ``min_lr_ratio`` over ``total_steps``.
    warmup_cosine: linear from 0 to 1 over ``warmup_steps``, then cosine.
    exponential: ``decay_rate ** (step / steps_per_epoch)`` (per-epoch rate).
    """
    step = jnp.asarray(step, jnp.float32)
    if kind == "constant":
        return jnp.ones((), jnp.float32)
    if kind == "exponential":
        return hp["decay_rate"] ** (step / hp["steps_per_epoch"])
    warm = hp["warmup_steps"] if kind == "warmup_cosine" else jnp.zeros((), jnp.float32)
    total = hp["total_steps"]
    frac = jnp.clip((step - warm) / jnp.maximum(total - warm, 1.0), 0.0, 1.0)
    lo = hp["min_lr_ratio"]
    cosine = lo + (1.0 - lo) * 0.5 * (1.0 + jnp.cos(jnp.pi * frac))
    if kind == "cosine":
        return cosine
    if kind == "warmup_cosine":
        return jnp.where(step < warm, (step + 1.0) / jnp.maximum(warm, 1.0), cosine)
    raise ValueError(f"unknown schedule {kind!r}")


def _clip_norm(cfg: OptimConfig) -> float | None:
    """The clipping norm, or None when off. ``auto`` is resolved by a whole
    :class:`~jaxdl.config.Config` (it knows the model); in a bare
    ``OptimConfig`` it means off."""
    return None if cfg.clip_norm in (None, "auto") else float(cfg.clip_norm)


def _structure(cfg: OptimConfig) -> dict[str, Any]:
    return dict(name=cfg.name, schedule=cfg.schedule, clip=_clip_norm(cfg) is not None)


def structure_key(cfg: OptimConfig) -> tuple:
    """What of an optim config changes the compiled program (values do not)."""
    return tuple(sorted(_structure(cfg).items()))


def _transform(learning_rate, momentum, b1, b2, eps, decay, weight_decay, clip_norm,
               warmup_steps, total_steps, steps_per_epoch, decay_rate, min_lr_ratio,
               *, name: str, schedule: str, clip: bool) -> optax.GradientTransformation:
    hp = dict(warmup_steps=warmup_steps, total_steps=total_steps,
              steps_per_epoch=steps_per_epoch, decay_rate=decay_rate, min_lr_ratio=min_lr_ratio)
    parts = []
    if clip:
        parts.append(optax.clip_by_global_norm(clip_norm))
    if name != "adamw":
        parts.append(_decayed_weights(weight_decay))
    if name == "momentum":
        parts.append(optax.trace(decay=momentum, nesterov=False))
    elif name == "nesterov":
        parts.append(optax.trace(decay=momentum, nesterov=True))
    elif name == "rmsprop":
        parts.append(optax.scale_by_rms(decay=decay, eps=eps))
    elif name in ("adam", "adamw"):
        parts.append(optax.scale_by_adam(b1=b1, b2=b2, eps=eps))
    elif name != "sgd":
        raise ValueError(f"unknown optimizer {name!r}")
    if name == "adamw":
        parts.append(_decayed_weights(weight_decay))
    if schedule != "constant":
        parts.append(optax.scale_by_schedule(
            lambda count: schedule_multiplier(schedule, count, hp)))
    parts.append(optax.scale_by_learning_rate(learning_rate))
    return optax.chain(*parts)


def _decayed_weights(weight_decay: jax.Array) -> optax.GradientTransformation:
    """``updates + weight_decay * params``, skipped at run time when the
    decay is 0 (a ``lax.cond``), so decay on and off share one program."""

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("weight decay needs params: call tx.update(grads, state, params)")
        decayed = jax.lax.cond(
            weight_decay > 0,
            lambda u, p: jax.tree_util.tree_map(lambda a, b: a + weight_decay * b, u, p),
            lambda u, p: u, updates, params)
        return decayed, state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)
