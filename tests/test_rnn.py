"""RNN and LSTM layers: cell equations against numpy, scan against a Python
loop, masking, bidirectional reading, carries, gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxdl.models.rnn import RNN, Recurrent, reverse_sequences


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def numpy_run(cell, params, xs, h0=None, c0=None):
    """Reference: the cell equations step by step in numpy."""
    w_ih = np.asarray(params["ih"]["kernel"], np.float64)
    b = np.asarray(params["ih"]["bias"], np.float64)
    w_hh = np.asarray(params["hh"], np.float64)
    batch, steps, _ = xs.shape
    hidden = w_hh.shape[0]
    h = np.zeros((batch, hidden)) if h0 is None else h0
    c = np.zeros((batch, hidden)) if c0 is None else c0
    ys = []
    for t in range(steps):
        z = xs[:, t] @ w_ih + b + h @ w_hh
        if cell == "lstm":
            i, f, g, o = np.split(z, 4, axis=-1)
            c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
            h = sigmoid(o) * np.tanh(c)
        else:
            h = np.tanh(z)
        ys.append(h)
    return (c, h), np.stack(ys, 1)


@pytest.fixture
def xs():
    return np.random.default_rng(0).normal(size=(3, 7, 5)).astype(np.float32)


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_params_and_shapes(cell, xs):
    layer = Recurrent(cell, hidden=4)
    params = layer.init(jax.random.key(0), xs)["params"]
    g = 4 if cell == "lstm" else 1
    assert params["ih"]["kernel"].shape == (5, 4 * g)
    assert params["ih"]["bias"].shape == (4 * g,)
    assert params["hh"].shape == (4, 4 * g)
    if cell == "lstm":   # forget-gate bias starts at 1
        np.testing.assert_array_equal(params["ih"]["bias"], [0] * 4 + [1] * 4 + [0] * 8)
    carry, ys = layer.apply({"params": params}, xs)
    assert ys.shape == (3, 7, 4) and ys.dtype == jnp.float32


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_one_step_matches_the_equations(cell, xs):
    layer = Recurrent(cell, hidden=4)
    params = layer.init(jax.random.key(1), xs)["params"]
    # Nonzero biases so every term counts.
    params = jax.tree.map(lambda p: p + 0.1, params)
    carry, ys = layer.apply({"params": params}, xs[:, :1])
    (c, h), ref = numpy_run(cell, params, xs[:, :1].astype(np.float64))
    np.testing.assert_allclose(ys, ref, rtol=1e-5, atol=1e-6)
    if cell == "lstm":
        np.testing.assert_allclose(carry[0], c, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
@pytest.mark.parametrize("unroll", [1, 3])
def test_scan_equals_a_python_loop(cell, unroll, xs):
    layer = Recurrent(cell, hidden=6, unroll=unroll)
    params = layer.init(jax.random.key(2), xs)["params"]
    carry, ys = layer.apply({"params": params}, xs)
    (c, h), ref = numpy_run(cell, params, xs.astype(np.float64))
    np.testing.assert_allclose(ys, ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(carry[1] if cell == "lstm" else carry, h, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_masking_ignores_padded_steps(cell, xs):
    layer = Recurrent(cell, hidden=4)
    params = layer.init(jax.random.key(3), xs)["params"]
    lengths = jnp.array([7, 3, 1])
    garbage = xs.copy()
    garbage[1, 3:] = 1e3          # padding content must not matter
    garbage[2, 1:] = -1e3
    carry, ys = layer.apply({"params": params}, garbage, lengths)
    for b, n in enumerate([7, 3, 1]):
        cb, yb = layer.apply({"params": params}, xs[b:b + 1, :n])
        np.testing.assert_allclose(ys[b, :n], yb[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(ys[b, n:], 0.0)
        for full, part in zip(jax.tree.leaves(carry), jax.tree.leaves(cb), strict=True):
            np.testing.assert_allclose(full[b], part[0], rtol=1e-5, atol=1e-6)


def test_reverse_sequences():
    x = jnp.arange(2 * 4).reshape(2, 4)[..., None]
    out = reverse_sequences(x, jnp.array([4, 2]))[..., 0]
    np.testing.assert_array_equal(out, [[3, 2, 1, 0], [5, 4, 6, 7]])
    np.testing.assert_array_equal(reverse_sequences(x, None)[..., 0], [[3, 2, 1, 0], [7, 6, 5, 4]])


def test_bidirectional_reads_each_sequence_backwards_within_its_length(xs):
    model = RNN("lstm", hidden=4, layers=1, outputs=2, bidirectional=True, sequence_output=True)
    lengths = jnp.array([7, 4, 2])
    params = model.init(jax.random.key(4), xs, lengths=lengths)["params"]
    assert set(params) == {"layer0_fwd", "layer0_bwd", "head"}
    out = model.apply({"params": params}, xs, lengths=lengths)
    assert out.shape == (3, 7, 2)
    # The backward layer alone on a reversed, truncated sequence.
    back = Recurrent("lstm", 4)
    b = 1
    _, yb = back.apply({"params": params["layer0_bwd"]}, xs[b:b + 1, :4][:, ::-1])
    _, yf = back.apply({"params": params["layer0_fwd"]}, xs[b:b + 1, :4])
    feats = jnp.concatenate([yf[0], yb[0][::-1]], -1)
    head = params["head"]
    np.testing.assert_allclose(out[b, :4], feats @ head["kernel"] + head["bias"],
                               rtol=1e-5, atol=1e-5)


def test_stacked_language_model_shapes_and_carry_continuation():
    model = RNN("lstm", hidden=8, layers=2, outputs=11, vocab=11, embed=5,
                sequence_output=True)
    tokens = jax.random.randint(jax.random.key(0), (2, 10), 0, 11)
    params = model.init(jax.random.key(1), tokens)["params"]
    assert set(params) == {"embed", "layer0", "layer1", "head"}
    assert params["layer1"]["ih"]["kernel"].shape == (8, 32)
    full = model.apply({"params": params}, tokens)
    assert full.shape == (2, 10, 11)
    # Carrying the state across calls equals one call over the whole sequence.
    a, carry = model.apply({"params": params}, tokens[:, :6], return_carry=True)
    b = model.apply({"params": params}, tokens[:, 6:], carry=carry)
    np.testing.assert_allclose(jnp.concatenate([a, b], 1), full, rtol=1e-5, atol=1e-5)


def test_last_state_head_for_classification(xs):
    model = RNN("rnn", hidden=6, layers=2, outputs=3)
    params = model.init(jax.random.key(5), xs)["params"]
    out = model.apply({"params": params}, xs)
    assert out.shape == (3, 3)
    seq = RNN("rnn", hidden=6, layers=2, outputs=3, sequence_output=True)
    per_step = seq.apply({"params": params}, xs)
    np.testing.assert_allclose(out, per_step[:, -1], rtol=1e-5, atol=1e-6)


def test_dropout_between_layers_only_in_training(xs):
    model = RNN("lstm", hidden=6, layers=2, outputs=1)
    params = model.init(jax.random.key(6), xs)["params"]
    a = model.apply({"params": params}, xs, train=False, dropout_rate=0.5)
    b = model.apply({"params": params}, xs)
    np.testing.assert_array_equal(a, b)
    c = model.apply({"params": params}, xs, train=True, dropout_rate=0.5,
                    rngs={"dropout": jax.random.key(0)})
    assert not np.allclose(a, c)
    d = model.apply({"params": params}, xs, train=True, dropout_rate=0.0,
                    rngs={"dropout": jax.random.key(0)})
    np.testing.assert_allclose(b, d, rtol=1e-6)


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_gradients_match_finite_differences(cell):
    with jax.enable_x64(True):
        xs = jnp.asarray(np.random.default_rng(1).normal(size=(2, 4, 3)))
        layer = Recurrent(cell, hidden=3)
        params = layer.init(jax.random.key(7), xs)["params"]
        params = jax.tree.map(lambda p: p.astype(jnp.float64), params)

        def loss(params, xs):
            _, ys = layer.apply({"params": params}, xs, jnp.array([4, 2]))
            return jnp.sum(ys ** 2)

        check_grads(loss, (params, xs), order=1, modes=("rev",), atol=1e-6, rtol=1e-6)


def test_bad_arguments():
    x = jnp.zeros((1, 2, 3))
    with pytest.raises(ValueError, match="unknown cell 'gru'; valid: rnn, lstm"):
        RNN("gru").init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="layers must be >= 1"):
        RNN("lstm", layers=0).init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="an initial carry needs a unidirectional RNN"):
        m = RNN("lstm", hidden=2, bidirectional=True)
        m.init(jax.random.key(0), x, carry=[(jnp.zeros((1, 2)),) * 2])


@pytest.mark.parametrize("B", [3, 16])   # one chain; two chains on CPU (lstm_chains)
def test_hand_written_lstm_backward_equals_autodiff(B):
    from jaxdl.models.rnn import _lstm_forward, lstm_chains, lstm_scan

    if B == 16 and jax.default_backend() == "cpu":
        assert lstm_chains(B) == 2
    k = jax.random.split(jax.random.key(7), 5)
    T, H = 6, 4
    w = jax.random.normal(k[0], (H, 4 * H)) * 0.5
    zx = jax.random.normal(k[1], (T, B, 4 * H))
    c0, h0 = jax.random.normal(k[2], (B, H)), jax.random.normal(k[3], (B, H))
    probe = jax.random.normal(k[4], (T, B, H))

    def loss(scan):
        def f(w, zx, c0, h0):
            hs, (c, h) = scan(w, zx, c0, h0)
            # Cotangents on every output: all steps and both final states.
            return jnp.sum(hs * probe) + jnp.sum(c ** 2) + 0.5 * jnp.sum(h)
        return f

    def autodiff(w, zx, c0, h0):
        (c, h), hs, _ = _lstm_forward(w, zx, c0, h0, None, 1)
        return hs, (c, h)

    mine = jax.grad(loss(lambda *a: lstm_scan(*a, 1)), argnums=(0, 1, 2, 3))(w, zx, c0, h0)
    ref = jax.grad(loss(autodiff), argnums=(0, 1, 2, 3))(w, zx, c0, h0)
    for a, b in zip(mine, ref, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("B", [3, 16])     # one chain; two chains on CPU
@pytest.mark.parametrize("rows", [3, 9])   # <= hidden: one-hot matmul; > hidden: scatter-add
def test_lstm_scan_over_token_ids_equals_autodiff_of_the_lookup(rows, B):
    from jaxdl.models.rnn import _lstm_forward, lstm_scan

    k = jax.random.split(jax.random.key(8), 6)
    T, H = 5, 4
    w = jax.random.normal(k[0], (H, 4 * H)) * 0.5
    table = jax.random.normal(k[1], (rows, 4 * H))
    ids = jax.random.randint(k[2], (T, B), -rows, rows)   # negative ids count from the end
    c0, h0 = jax.random.normal(k[3], (B, H)), jax.random.normal(k[4], (B, H))
    probe = jax.random.normal(k[5], (T, B, H))

    def loss(w, table, c0, h0, scan):
        hs, (c, h) = scan(w, table, c0, h0)
        return jnp.sum(hs * probe) + jnp.sum(c ** 2) + 0.5 * jnp.sum(h)

    def looked_up(w, table, c0, h0):   # autodiff through table[ids] (numpy indexing)
        (c, h), hs, _ = _lstm_forward(w, table[ids], c0, h0, None, 1)
        return hs, (c, h)

    args = (w, table, c0, h0)
    mine = jax.grad(lambda *a: loss(*a, lambda *b: lstm_scan(*b, 1, ids)), argnums=(0, 1, 2, 3))
    ref = jax.grad(lambda *a: loss(*a, looked_up), argnums=(0, 1, 2, 3))
    np.testing.assert_allclose(lstm_scan(*args, ids=ids)[0], looked_up(*args)[0], rtol=1e-6)
    for a, b in zip(mine(*args), ref(*args), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


def _embed_then_project(model, params, ids):
    """``model``'s output computed the plain way: look the tokens up, then
    run each layer on the embedded sequence."""
    x = params["embed"]["embedding"][ids].swapaxes(0, 1)
    for i in range(model.layers):
        _, x = Recurrent(model.cell, model.hidden, model.activation, time_major=True).apply(
            {"params": params[f"layer{i}"]}, x)
    return x.swapaxes(0, 1) @ params["head"]["kernel"] + params["head"]["bias"]


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_token_model_projects_the_table_with_the_same_numbers(cell):
    """RNN(vocab=...) feeds layer 0 the embedding table and the ids when the
    vocabulary is smaller than the batch's tokens; a batch with fewer tokens
    than the vocabulary takes the plain lookup. Both give the outputs and
    gradients of embedding first and projecting after."""
    vocab = 5
    model = RNN(cell, hidden=6, layers=2, outputs=vocab, sequence_output=True, vocab=vocab,
                embed=3)
    ids = jax.random.randint(jax.random.key(1), (3, 4), 0, vocab)
    params = model.init(jax.random.key(0), ids)["params"]

    def loss(f):
        return lambda p: jnp.sum(jnp.sin(f(p)))

    np.testing.assert_allclose(model.apply({"params": params}, ids),
                               _embed_then_project(model, params, ids), rtol=1e-5, atol=1e-6)
    mine = jax.grad(loss(lambda p: model.apply({"params": p}, ids)))(params)
    ref = jax.grad(loss(lambda p: _embed_then_project(model, p, ids)))(params)
    for a, b in zip(jax.tree.leaves(mine), jax.tree.leaves(ref), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)

def test_out_of_range_token_reads_nan_on_both_lookup_paths():
    """flax.linen.Embed gives NaN for an id past the vocabulary; the
    projected-table path must not clamp it to a real row instead."""
    vocab = 5
    model = RNN("lstm", hidden=4, outputs=vocab, sequence_output=True, vocab=vocab, embed=3)
    ids = jnp.zeros((2, 4), jnp.int32).at[1, 2].set(vocab)   # 8 tokens > 5: table path
    params = model.init(jax.random.key(0), ids)
    table_path = model.apply(params, ids)
    plain_path = model.apply(params, ids[1:, :])               # 4 tokens: plain lookup
    assert np.isnan(table_path[1, 2:]).all() and np.isfinite(table_path[0]).all()
    assert np.isnan(plain_path[0, 2:]).all() and np.isfinite(plain_path[0, :2]).all()


@pytest.mark.parametrize("bidirectional", [False, True])
def test_table_path_equals_plain_lookup_per_sequence(bidirectional):
    """A batch of 3 sequences (12 tokens > vocabulary 5) takes the projected
    table path; each sequence alone (4 tokens) the plain lookup: same
    outputs, with lengths and both directions."""
    vocab = 5
    model = RNN("lstm", hidden=4, layers=2, outputs=2, vocab=vocab, embed=3,
                bidirectional=bidirectional)
    ids = jax.random.randint(jax.random.key(2), (3, 4), 0, vocab)
    lengths = jnp.array([4, 2, 3])
    params = model.init(jax.random.key(0), ids)
    batch = model.apply(params, ids, lengths=lengths)
    for j in range(3):
        alone = model.apply(params, ids[j:j + 1], lengths=lengths[j:j + 1])
        np.testing.assert_allclose(batch[j:j + 1], alone, rtol=1e-5, atol=1e-6)
