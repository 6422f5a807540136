"""Autoregressive text generation from character language models.

The prompt runs through the network once (one scan over its characters);
then ``lax.scan`` feeds each sampled character back in, carrying the
recurrent state, so a whole sample is one compiled call. Temperature is an
array input (any temperature reuses the program; 0 picks the most likely
character every step); ``top_k`` is static.

From a run directory (the command ``jaxdl sample RUN_DIR`` calls this)::

    text = jaxdl.generate.sample_run("runs/shakespeare_lstm-1a2b3c4d",
                                     prompt="ROMEO:", length=300, temperature=0.8)

From a module and params (``model`` an :class:`~jaxdl.models.RNN` with
``vocab`` and ``sequence_output``)::

    ids = jaxdl.generate.generate(model, params, vocab.encode("ROMEO:"), 300,
                                  jax.random.key(0), temperature=0.8)
    print(vocab.decode(ids[0]))
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.errors import ConfigError

__all__ = ["generate", "pick", "sample_run"]


def pick(logits: jax.Array, key: jax.Array, temperature: jax.Array | float,
         top_k: int | None = None) -> jax.Array:
    """Next tokens ``[batch]`` from ``logits [batch, vocab]``.

    Samples from ``softmax(logits / temperature)`` restricted to the
    ``top_k`` most likely tokens (all when None); ``temperature`` 0 takes
    the argmax.
    """
    logits = logits.astype(jnp.float32)
    if top_k is not None and top_k < logits.shape[-1]:
        kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    temperature = jnp.asarray(temperature, jnp.float32)
    sampled = jax.random.categorical(key, logits / jnp.maximum(temperature, 1e-6), axis=-1)
    return jnp.where(temperature > 0, sampled, jnp.argmax(logits, axis=-1)).astype(jnp.int32)


_COMPILED: dict[Any, Any] = {}


def _generator(model: nn.Module, length: int, top_k: int | None):
    key = (model, length, top_k)
    fn = _COMPILED.get(key)
    if fn is not None:
        return fn

    def run(params, prompt, rng, temperature):
        variables = {"params": params}
        logits, carry = model.apply(variables, prompt, return_carry=True)

        def step(state, k):
            carry, last = state
            tok = pick(last, k, temperature, top_k)
            out, carry = model.apply(variables, tok[:, None], carry=carry, return_carry=True)
            return (carry, out[:, -1]), tok

        _, toks = jax.lax.scan(step, (carry, logits[:, -1]), jax.random.split(rng, length))
        return toks.T

    fn = jax.jit(run)
    if len(_COMPILED) > 16:
        _COMPILED.clear()
    _COMPILED[key] = fn
    return fn


def generate(model: nn.Module, params: Any, prompt: np.ndarray | jax.Array, length: int,
             rng: jax.Array, *, temperature: float = 1.0, top_k: int | None = None,
             num: int = 1) -> np.ndarray:
    """Continue ``prompt`` by ``length`` tokens, ``num`` times independently.

    Args:
      model: a recurrent language model (``vocab`` and ``sequence_output``
        set; unidirectional).
      params: its ``"params"``.
      prompt: token ids ``[P]`` (P >= 1).
      length: tokens to generate.
      rng: sampling key; the same key gives the same text.
      temperature: >= 0; 0 is greedy (argmax) decoding.
      top_k: sample among the k most likely tokens (None: all).
      num: independent samples.
    Returns:
      ``int32 [num, length]``, the generated ids (prompt excluded).
    Raises:
      ConfigError: empty prompt, length < 1, temperature < 0, top_k < 1.
    """
    prompt = np.asarray(prompt, np.int32).reshape(-1)
    _check_args(prompt.size, length, temperature, top_k, num)
    batch = jnp.asarray(np.broadcast_to(prompt, (num, prompt.size)))
    fn = _generator(model, int(length), top_k)
    return np.asarray(fn(params, batch, rng, jnp.asarray(temperature, jnp.float32)))


def _check_args(prompt_size: int, length: int, temperature: float, top_k: int | None,
                num: int) -> None:
    problems = []
    if prompt_size == 0:
        problems.append("prompt: must hold at least one character")
    if length < 1:
        problems.append(f"length: must be >= 1, got {length}")
    if not temperature >= 0:
        problems.append(f"temperature: must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        problems.append(f"top_k: must be >= 1, got {top_k}")
    if num < 1:
        problems.append(f"num: must be >= 1, got {num}")
    if problems:
        raise ConfigError(problems, "<sample>")


def load_model(run_dir: str | Path, which: str = "best"):
    """``(model, params, vocab, config, epoch)`` of a language-model run,
    read from the run directory alone (the corpus is not needed).

    Raises:
      CheckpointError: not a run directory, or no checkpoint.
      DataError: no ``vocab.json`` (not a language model).
    """
    from jaxdl import experiment, models, optim
    from jaxdl.algorithms.supervised import init_state
    from jaxdl.data.text import Vocab

    run_dir = Path(run_dir)
    cfg = experiment.run_config(run_dir)
    vocab = Vocab.load(run_dir / "vocab.json")
    ckpt_dir = experiment.checkpoint_dir(run_dir, which)
    model = models.make(cfg.model, len(vocab), vocab=len(vocab), sequence_output=True)
    tx = optim.make(cfg.optim, 1, cfg.train.epochs)
    sample = jnp.zeros((1, cfg.data.seq_len), jnp.int32)
    state, epoch = experiment.restore_state(
        ckpt_dir, which, lambda: init_state(model, tx, jax.random.key(0), sample))
    return model, state.params, vocab, cfg, epoch


def sample_run(run_dir: str | Path, *, prompt: str = "\n", length: int = 300,
               temperature: float = 0.8, top_k: int | None = None, seed: int = 0,
               num: int = 1, which: str = "best") -> list[str]:
    """Text generated by a run's best (or latest) checkpoint.

    Returns:
      ``num`` strings, each the prompt followed by ``length`` characters.
    Raises:
      DataError: a prompt character the vocabulary does not hold.
    """
    _check_args(len(prompt), length, temperature, top_k, num)
    model, params, vocab, _, _ = load_model(run_dir, which)
    ids = generate(model, params, vocab.encode(prompt), length, jax.random.key(seed),
                   temperature=temperature, top_k=top_k, num=num)
    return [prompt + vocab.decode(row) for row in ids]
