"""Recurrent networks: Elman RNN and LSTM layers scanned over time, stacked,
optionally bidirectional, with masking for variable-length sequences.

Equations (``x`` the input, ``h`` the hidden state, ``c`` the LSTM cell)::

    Elman:  h' = act(x W_ih + b_ih + h W_hh)
    LSTM:   [i, f, g, o] = x W_ih + b_ih + h W_hh          (4 * hidden columns)
            c' = sigmoid(f) * c + sigmoid(i) * tanh(g)
            h' = sigmoid(o) * tanh(c')

The input projection ``x W_ih + b_ih`` of every time step is one matmul
before the scan; only ``h W_hh`` runs inside it. With token inputs and a
vocabulary smaller than the batch's tokens, the first layer projects the
embedding table instead and each step looks its rows up (same numbers).
The forget-gate bias starts at 1 (Jozefowicz et al., 2015).

Unmasked LSTM layers (the language-model case) run through
:func:`lstm_scan`, whose backward pass is written by hand: the forward scan
keeps the cell states and activated gates, the backward scan does one
``dz @ W_hh^T`` per step, and ``dW_hh`` (with the token table's gradient,
for token inputs and a vocabulary no larger than the hidden size) comes
from large matmuls after it, one per batch chain, instead of a small one
accumulated every step. On CPU an even batch of 16 or more runs as two
independent chains per step (:func:`lstm_chains`). Measured on XLA CPU
(2 cores, batch 64, hidden 256, 100 steps, ``benchmarks/lstm_speed.py
--autodiff``) the whole char-LSTM train step is 1.43x faster than with
JAX's autodiff of the same scan (99.7 vs 142.8 ms); the gradients agree
with autodiff to float32 rounding (tested).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdl.models.layers import Dropout, activation

__all__ = ["CELLS", "RNN", "Recurrent", "lstm_chains", "lstm_scan", "reverse_sequences",
           "take_rows"]

CELLS = ("rnn", "lstm")

Carry = Any
"""Elman: ``h [batch, hidden]``; LSTM: ``(c, h)``, each ``[batch, hidden]``."""


def reverse_sequences(x: jax.Array, lengths: jax.Array | None, *,
                      time_major: bool = False) -> jax.Array:
    """Reverse each sequence of ``x [batch, time, ...]`` (``[time, batch,
    ...]`` when ``time_major``) within its length; padding stays where it
    is. ``lengths`` None: reverse the whole time axis."""
    if time_major:
        return jnp.swapaxes(reverse_sequences(jnp.swapaxes(x, 0, 1), lengths), 0, 1)
    if lengths is None:
        return x[:, ::-1]
    t = jnp.arange(x.shape[1])[None, :]
    lengths = jnp.asarray(lengths)[:, None]
    idx = jnp.where(t < lengths, lengths - 1 - t, t)
    idx = idx.reshape(idx.shape + (1,) * (x.ndim - 2))
    return jnp.take_along_axis(x, idx, axis=1)


def take_rows(table: jax.Array, ids: jax.Array) -> jax.Array:
    """``table[ids]`` along the first axis with ``flax.linen.Embed``'s rules:
    negative ids count from the end, ids past the end give NaN rows."""
    return jnp.take(table, ids, axis=0, mode="fill", fill_value=jnp.nan)


def lstm_chains(batch: int) -> int:
    """Independent batch slices :func:`lstm_scan` runs side by side in each
    step: 2 on CPU for batches of at least 16 (even), else 1.

    XLA's CPU runtime runs the independent operations of a loop body
    concurrently; two half-batch recurrences (each its own matmul and gate
    fusions) keep two cores busier than one full-batch chain, whose small
    per-step operations mostly run on one core. On 2 cores a probe of the
    char-LSTM forward scan (``benchmarks/lstm_speed.py``'s sizes) measured
    30 ms with one chain, 26 ms with two and 29 ms with four. Accelerators
    take one chain (every kernel is a launch there). Results agree across
    chain counts to float rounding (the weight gradient sums one matmul per
    chain). The count follows JAX's default backend: a program compiled for
    another backend gets a count that is only slower there, never wrong.
    """
    return 2 if jax.default_backend() == "cpu" and batch >= 16 and batch % 2 == 0 else 1


def _chain_slices(batch: int, chains: int) -> list[slice]:
    """The batch rows of each of ``chains`` equal slices."""
    part = batch // chains
    return [slice(j * part, (j + 1) * part) for j in range(chains)]


def _lstm_forward(w_hh, zx, c0, h0, ids, unroll, chains=1):
    """The LSTM scan, time-major, the batch in ``chains`` independent slices.
    Also returns what the backward pass needs, per chain: the cell states and
    the four activated gates, each ``[time, batch / chains, hidden]`` (four
    stacked outputs are written faster by XLA CPU than one ``4 * hidden``
    wide one)."""
    hidden = h0.shape[-1]
    rows = _chain_slices(h0.shape[0], chains)
    # sigmoid(x) = (1 + tanh(x / 2)) / 2: one tanh over all four gates.
    scale = jnp.where((jnp.arange(4 * hidden) // hidden) == 2, 1.0, 0.5).astype(zx.dtype)

    def cell(c, h, z_t):
        u = jnp.tanh((z_t + h @ w_hh) * scale)
        s = 0.5 * u + 0.5
        i, f, g, o = s[:, :hidden], s[:, hidden:2 * hidden], u[:, 2 * hidden:3 * hidden], \
            s[:, 3 * hidden:]
        c_new = f * c + i * g
        h_new = o * jnp.tanh(c_new)
        return (c_new, h_new), (h_new, c_new, i, f, g, o)

    def step(carry, x_t):
        # zx is a table of rows to look up when the step reads token ids.
        new, outs = zip(*(cell(*carry[j], x_t[r] if ids is None else take_rows(zx, x_t[r]))
                          for j, r in enumerate(rows)), strict=True)
        return new, outs

    carry0 = tuple((c0[r], h0[r]) for r in rows)
    carry, outs = jax.lax.scan(step, carry0, zx if ids is None else ids, unroll=unroll)
    c_t, h_t = (jnp.concatenate(parts, axis=0) for parts in zip(*carry, strict=True))
    hs = jnp.concatenate([out[0] for out in outs], axis=1)
    return (c_t, h_t), hs, tuple(out[1:] for out in outs)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def lstm_scan(w_hh: jax.Array, zx: jax.Array, c0: jax.Array, h0: jax.Array,
              unroll: int = 1, ids: jax.Array | None = None
              ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """An LSTM over time with a hand-written backward pass.

    The batch runs as :func:`lstm_chains` independent slices per step.

    Args:
      w_hh: ``[hidden, 4 * hidden]`` recurrent weights (gates i, f, g, o).
      zx: ``[time, batch, 4 * hidden]`` input projections (bias included);
        with ``ids``, a table ``[vocab, 4 * hidden]`` of projected token rows.
      c0, h0: ``[batch, hidden]`` initial cell and hidden state.
      unroll: scan unrolling.
      ids: ``[time, batch]`` int token ids: step ``t`` reads ``zx[ids[t]]``
        (as ``flax.linen.Embed`` does: negative ids count from the end, ids
        past it read NaN). The table's gradient comes out of the matmuls
        that give ``w_hh``'s (one-hot ids appended to the hidden states)
        when ``vocab <= hidden``, else from a scatter-add.
    Returns:
      ``(hs [time, batch, hidden], (c_T, h_T))``.
    """
    (c_t, h_t), hs, _ = _lstm_forward(w_hh, zx, c0, h0, ids, unroll,
                                      lstm_chains(h0.shape[0]))
    return hs, (c_t, h_t)


def _lstm_scan_fwd(w_hh, zx, c0, h0, unroll, ids):
    (c_t, h_t), hs, saved = _lstm_forward(w_hh, zx, c0, h0, ids, unroll,
                                          lstm_chains(h0.shape[0]))
    # With ids, zx is the (small) table; its row count sizes the gradient.
    return (hs, (c_t, h_t)), (w_hh, hs, c0, h0, ids, zx if ids is not None else None, saved)


def _lstm_scan_bwd(unroll, residuals, grads):
    w_hh, hs, c0, h0, ids, table, saved = residuals
    d_hs, (d_ct, d_ht) = grads
    hidden = h0.shape[-1]
    rows = _chain_slices(h0.shape[0], len(saved))
    per_chain = tuple((cs, jnp.concatenate([c0[r][None], cs[:-1]], axis=0), *gates)
                      for r, (cs, *gates) in zip(rows, saved, strict=True))

    w_t = w_hh.T   # transposed once: measured faster per step than a transposed dot

    def cell(dh, dc, dh_out, c_t, c_p, i, f, g, o):
        dh = dh + dh_out
        tc = jnp.tanh(c_t)
        dc = dc + dh * o * (1.0 - tc * tc)
        # d(pre-activation) of the gates i, f, g, o.
        dz = jnp.concatenate([dc * g * i * (1.0 - i), dc * c_p * f * (1.0 - f),
                              dc * i * (1.0 - g * g), dh * tc * o * (1.0 - o)], axis=-1)
        return (dz @ w_t, dc * f), dz

    def step(carry, inp):
        dh_out, chain_inputs = inp
        new, dz = zip(*(cell(*carry[j], dh_out[r], *chain_inputs[j])
                        for j, r in enumerate(rows)), strict=True)
        return new, dz

    carry0 = tuple((d_ht[r], d_ct[r]) for r in rows)
    carry, dzs = jax.lax.scan(step, carry0, (d_hs, per_chain), reverse=True, unroll=unroll)
    dh0, dc0 = (jnp.concatenate(parts, axis=0) for parts in zip(*carry, strict=True))
    h_prev = jnp.concatenate([h0[None], hs[:-1]], axis=0)
    flat = [dz.reshape(-1, 4 * hidden) for dz in dzs]

    def h_rows(r):
        return h_prev[:, r].reshape(-1, hidden)

    if ids is not None:
        vocab = table.shape[0]
        ids = jnp.where(ids < 0, ids + vocab, ids)    # the rows the forward pass read
        if vocab <= hidden:
            d = sum(jnp.concatenate([h_rows(r), jax.nn.one_hot(ids[:, r].reshape(-1), vocab,
                                                               dtype=hs.dtype)], axis=-1).T @ dz
                    for r, dz in zip(rows, flat, strict=True))
            return d[:hidden], d[hidden:], dc0, dh0, None
    d_w = sum(h_rows(r).T @ dz for r, dz in zip(rows, flat, strict=True))
    if ids is None:
        return d_w, jnp.concatenate(dzs, axis=1), dc0, dh0, None
    d_table = jnp.zeros((vocab, 4 * hidden), hs.dtype)
    for r, dz in zip(rows, flat, strict=True):
        d_table = d_table.at[ids[:, r].reshape(-1)].add(dz)
    return d_w, d_table, dc0, dh0, None


lstm_scan.defvjp(_lstm_scan_fwd, _lstm_scan_bwd)


def _bias_init(cell: str, hidden: int):
    def init(key, shape, dtype=jnp.float32):
        b = jnp.zeros(shape, dtype)
        if cell == "lstm":
            b = b.at[hidden:2 * hidden].set(1.0)   # forget gate
        return b
    return init


class Recurrent(nn.Module):
    """One recurrent layer run over time with ``lax.scan``.

    Attributes:
      cell: ``rnn`` (Elman) or ``lstm``.
      hidden: hidden size.
      activation: Elman nonlinearity (LSTM gates are fixed).
      unroll: time steps per scan iteration (a speed knob; same numbers).
      time_major: inputs and outputs are ``[time, batch, ...]`` (saves two
        transposes; :class:`RNN` runs its stack this way).

    Params: ``ih/kernel [in, g * hidden]``, ``ih/bias [g * hidden]``,
    ``hh [hidden, g * hidden]`` with ``g`` 1 (Elman) or 4 (LSTM, gate order
    i, f, g, o).

    Call:
      xs: ``[batch, time, features]`` float.
      lengths: ``[batch]`` int valid steps per sequence (None: all). Past its
        length a sequence's state stops changing and its outputs are 0.
      carry: initial state (None: zeros).
      ids: token ids ``[batch, time]`` (``[time, batch]`` when time-major).
        Then ``xs`` is a lookup table ``[vocab, features]`` and the layer
        reads ``xs[ids]``: the input projection is applied to the ``vocab``
        table rows and the projected rows are looked up, the same numbers
        for fewer operations whenever ``vocab < batch * time``.
    Returns:
      ``(carry, ys)``: the state after each sequence's last valid step, and
      hidden states ``[batch, time, hidden]``.
    """

    cell: str = "lstm"
    hidden: int = 128
    activation: str = "tanh"
    unroll: int = 1
    time_major: bool = False

    def initial_carry(self, batch: int, dtype: Any = jnp.float32) -> Carry:
        h = jnp.zeros((batch, self.hidden), dtype)
        return (h, h) if self.cell == "lstm" else h

    @nn.compact
    def __call__(self, xs: jax.Array, lengths: jax.Array | None = None,
                 carry: Carry | None = None, *, ids: jax.Array | None = None
                 ) -> tuple[Carry, jax.Array]:
        if self.cell not in CELLS:
            raise ValueError(f"unknown cell {self.cell!r}; valid: {', '.join(CELLS)}")
        seq = xs if ids is None else ids
        steps, batch = seq.shape[:2] if self.time_major else seq.shape[1::-1]
        g = 4 if self.cell == "lstm" else 1
        width = g * self.hidden
        zx = nn.Dense(width, name="ih", bias_init=_bias_init(self.cell, self.hidden))(xs)
        if not self.time_major:                           # to [time, batch, ...]
            if ids is None:
                zx = jnp.swapaxes(zx, 0, 1)
            else:
                ids = jnp.swapaxes(ids, 0, 1)
        w_hh = self.param("hh", nn.initializers.orthogonal(column_axis=-1),
                          (self.hidden, width), jnp.float32)
        if carry is None:
            carry = self.initial_carry(batch, zx.dtype)
        out = (lambda ys: ys) if self.time_major else (lambda ys: jnp.swapaxes(ys, 0, 1))
        if lengths is None:
            mask = None
        else:
            mask = (jnp.arange(steps)[:, None] < jnp.asarray(lengths)[None, :])[..., None]
        act = activation(self.activation)
        lstm = self.cell == "lstm"

        def step(carry, inp):
            z_t, m_t = inp if mask is not None else (inp, None)
            h = carry[1] if lstm else carry
            z = z_t + h @ w_hh
            if lstm:
                i, f, gg, o = jnp.split(z, 4, axis=-1)
                c = nn.sigmoid(f) * carry[0] + nn.sigmoid(i) * jnp.tanh(gg)
                h_new = nn.sigmoid(o) * jnp.tanh(c)
                new = (c, h_new)
            else:
                h_new = act(z)
                new = h_new
            if m_t is not None:
                new = jax.tree.map(lambda n, o: jnp.where(m_t, n, o), new, carry)
                h_new = jnp.where(m_t, h_new, 0.0)
            return new, h_new

        if lstm and mask is None:
            c0, h0 = carry
            ys, carry = lstm_scan(w_hh, zx, c0.astype(zx.dtype), h0.astype(zx.dtype),
                                  self.unroll, ids)
            return carry, out(ys)
        if ids is not None:
            zx = take_rows(zx, ids)                       # [time, batch, g * hidden]
        inputs = (zx, mask) if mask is not None else zx
        carry, ys = jax.lax.scan(step, carry, inputs, unroll=self.unroll)
        return carry, out(ys)


class RNN(nn.Module):
    """A stack of recurrent layers with a dense head.

    Attributes:
      cell: ``rnn`` (Elman) or ``lstm``.
      hidden: hidden size of each layer (per direction).
      layers: stacked layers.
      outputs: size of the head: classes, vocabulary, or regression targets.
      bidirectional: each layer also reads the sequence backwards (within
        each sequence's length); the directions' outputs are concatenated.
      sequence_output: a head output for every step (language models,
        sequence-to-sequence regression) instead of one from the last state.
      vocab: token-id inputs with an embedding of ``embed`` units (None:
        float features).
      embed: embedding size.
      dropout: dropout between layers and before the head (rate is a call
        input, 0 included, as in :class:`~jaxdl.models.layers.Dropout`).
      activation: Elman nonlinearity.
      unroll: scan unrolling (speed only).

    Call:
      x: ``[batch, time, features]`` float (``[batch, time]`` gets one
        feature; ``[batch, time, a, b, ...]`` is flattened to ``a * b * ...``
        features, so a ``[batch, 28, 28]`` image is read row by row), or
        ``[batch, time]`` int token ids when ``vocab`` is set.
      lengths: ``[batch]`` valid steps (None: all).
      carry: per-layer initial states, as returned with ``return_carry``
        (None: zeros). Not allowed with ``bidirectional``.
      train, dropout_rate: dropout on when ``train``.
      return_carry: also return the per-layer final states (generation
        carries them from one call to the next).
    Returns:
      ``[batch, time, outputs]`` with ``sequence_output``, else
      ``[batch, outputs]`` from the last valid step's state (both directions'
      final states when bidirectional); with ``return_carry``,
      ``(output, carries)``.
    """

    cell: str = "lstm"
    hidden: int = 128
    layers: int = 1
    outputs: int = 1
    bidirectional: bool = False
    sequence_output: bool = False
    vocab: int | None = None
    embed: int = 64
    dropout: bool = True
    activation: str = "tanh"
    unroll: int = 1

    @nn.compact
    def __call__(self, x: jax.Array, *, lengths: jax.Array | None = None,
                 carry: list[Carry] | None = None, train: bool = False,
                 dropout_rate: jax.Array | float = 0.0, return_carry: bool = False):
        if self.cell not in CELLS:
            raise ValueError(f"unknown cell {self.cell!r}; valid: {', '.join(CELLS)}")
        if self.layers < 1:
            raise ValueError(f"layers must be >= 1, got {self.layers}")
        if carry is not None and self.bidirectional:
            raise ValueError("an initial carry needs a unidirectional RNN")
        # The stack runs time-major ([time, batch, ...]): the inputs are
        # transposed once (token ids or raw features: small) rather than each
        # layer's 4 * hidden input projections.
        ids = None
        if self.vocab is not None:
            embed = nn.Embed(self.vocab, self.embed, name="embed")
            ids = jnp.swapaxes(x, 0, 1)
            if self.vocab < ids.size:
                # The first layer projects the embedding table and looks up
                # the projected rows (Recurrent's ``ids``): same numbers,
                # and on XLA CPU the train step of the char-LSTM benchmark
                # loses the gather-then-project forward and its backward.
                x = embed(jnp.arange(self.vocab))
            else:
                x, ids = embed(ids), None
        else:
            if x.ndim == 2:
                x = x[..., None]
            elif x.ndim > 3:
                x = x.reshape(*x.shape[:2], -1)
            x = jnp.swapaxes(x, 0, 1)
        x = x.astype(jnp.float32)
        carries, last = [], None
        for i in range(self.layers):
            if i > 0 and self.dropout:
                x = Dropout()(x, dropout_rate, deterministic=not train)
            layer = Recurrent(self.cell, self.hidden, self.activation, self.unroll,
                              time_major=True,
                              name=f"layer{i}" if not self.bidirectional else f"layer{i}_fwd")
            c, ys = layer(x, lengths, None if carry is None else carry[i], ids=ids)
            carries.append(c)
            h_last = c[1] if self.cell == "lstm" else c
            if self.bidirectional:
                back = Recurrent(self.cell, self.hidden, self.activation, self.unroll,
                                 time_major=True, name=f"layer{i}_bwd")
                if ids is None:
                    cb, yb = back(reverse_sequences(x, lengths, time_major=True), lengths)
                else:
                    cb, yb = back(x, lengths, ids=reverse_sequences(ids, lengths,
                                                                     time_major=True))
                ys = jnp.concatenate([ys, reverse_sequences(yb, lengths, time_major=True)],
                                     axis=-1)
                h_last = jnp.concatenate([h_last, cb[1] if self.cell == "lstm" else cb], -1)
            x, last, ids = ys, h_last, None
        feats = x if self.sequence_output else last
        if self.dropout:
            feats = Dropout()(feats, dropout_rate, deterministic=not train)
        out = nn.Dense(self.outputs, name="head")(feats)
        if self.sequence_output:
            out = jnp.swapaxes(out, 0, 1)
        return (out, carries) if return_carry else out
