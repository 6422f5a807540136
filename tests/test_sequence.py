"""Sequence tasks: character text, sine sequences, sequence losses, windowed
training batches, sampling, and the configs and CLI around them."""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl import config, data, losses, models, optim
from jaxdl.algorithms.supervised import Engine, Task
from jaxdl.data import synthetic, text
from jaxdl.data.text import Vocab
from jaxdl.errors import ConfigError, DataError
from jaxdl.generate import generate, pick
from tests.helpers import Server, jaxdl


def lm_cfg(**overrides) -> config.Config:
    """A tiny language model on the first 40 windows of tiny Shakespeare."""
    base = {
        "name": "tiny_lm", "seed": 0,
        "data": {"name": "shakespeare", "seq_len": 20, "val_fraction": 0.01,
                 "test_fraction": 0.01, "train_limit": 40},
        "model": {"name": "lstm", "depth": 1, "width": 16, "embed": 8},
        "optim": {"name": "adam", "learning_rate": 0.01},
        "train": {"epochs": 2, "batch_size": 8, "eval_batch_size": 200, "progress": False},
        "sample": {"prompt": "First", "length": 40, "temperatures": [0.0, 1.0]},
    }
    cfg = config.from_dict(base)
    return cfg.replace(overrides) if overrides else cfg


# ---------------------------------------------------------------- vocabulary


def test_vocab_round_trip_and_file(tmp_path):
    v = Vocab.build("hello world\n", "abc")
    assert v.chars == ("\n", " ", "d", "e", "h", "l", "o", "r", "w")
    ids = v.encode("world hello")
    assert ids.dtype == np.int32 and v.decode(ids) == "world hello"
    v.save(tmp_path / "vocab.json")
    again = Vocab.load(tmp_path / "vocab.json")
    assert again == v and again.decode(again.encode("hello")) == "hello"


def test_vocab_unknown_characters():
    v = Vocab.build("abc")
    with pytest.raises(DataError, match="not in the vocabulary: 'z'"):
        v.encode("abz")
    with_unk = Vocab((*v.chars, text.UNKNOWN))
    assert with_unk.decode(with_unk.encode("azb", unknown="map")) == "a\ufffdb"


def test_vocab_bad_files(tmp_path):
    with pytest.raises(DataError, match="is missing"):
        Vocab.load(tmp_path / "vocab.json")
    (tmp_path / "vocab.json").write_text("{not json")
    with pytest.raises(DataError, match="not a vocabulary file"):
        Vocab.load(tmp_path / "vocab.json")
    (tmp_path / "vocab.json").write_text(json.dumps({"chars": "aab"}))
    with pytest.raises(DataError, match="distinct"):
        Vocab.load(tmp_path / "vocab.json")


def test_windows_are_shifted_by_one():
    ids = np.arange(23, dtype=np.int32)
    x, y = text.windows(ids, 5)
    assert x.shape == y.shape == (4, 5)
    np.testing.assert_array_equal(x[1], [5, 6, 7, 8, 9])
    np.testing.assert_array_equal(y[1], [6, 7, 8, 9, 10])


# ---------------------------------------------------------------- datasets


def test_shakespeare_splits_are_contiguous_and_match_the_config(shakespeare_dir):
    cfg = lm_cfg(**{"data.train_limit": None, "data.seq_len": 100,
                    "data.val_fraction": 0.05, "data.test_fraction": 0.05})
    ds = data.load(cfg.data, cfg.seed)
    corpus = (shakespeare_dir / "tinyshakespeare" / "input.txt").read_text()
    v = ds.vocab
    assert len(v) == ds.outputs == 65 and ds.sequence and ds.window == 100
    chars = config.text_split_chars(len(corpus), cfg.data)
    n_train = len(ds.train) + 1
    assert n_train == chars["train"] and sum(chars.values()) == len(corpus)
    assert v.decode(ds.train.x[:50]) == corpus[:50]
    np.testing.assert_array_equal(ds.train.y[:-1], ds.train.x[1:])
    # validation starts where training ends, test where validation ends
    assert v.decode(ds.val.x[0]) == corpus[n_train: n_train + 100]
    test_start = n_train + chars["val"]
    assert v.decode(ds.test.x[0]) == corpus[test_start: test_start + 100]
    assert v.decode(ds.test.y[0]) == corpus[test_start + 1: test_start + 101]
    assert chars["test"] - 100 <= len(ds.test) * 100 < chars["test"]
    sizes = config.split_sizes(cfg.data)
    assert sizes == {"train": ds.epoch_examples, "val": len(ds.val), "test": len(ds.test)}
    assert ds.vocab.source_sha256 == text.CORPORA["shakespeare"]["sha256"]


def test_vocabulary_comes_from_the_training_split(shakespeare_dir):
    # The first 201 characters hold no 'Z' and no 'x'; later splits do, so
    # the vocabulary gains the unknown marker instead of peeking at them.
    ds = data.load(lm_cfg(**{"data.train_limit": 10}).data, 0)
    assert "Z" not in ds.vocab.chars and "x" not in ds.vocab.chars
    assert ds.vocab.chars[-1] == text.UNKNOWN
    unk = ds.vocab.index[text.UNKNOWN]
    assert (ds.val.x == unk).any() or (ds.test.x == unk).any()


def test_corpus_download_is_verified(shakespeare_dir, tmp_path, monkeypatch):
    body = (shakespeare_dir / "tinyshakespeare" / "input.txt").read_bytes()
    srv = Server()
    try:
        srv.add("/good/input.txt", body)
        srv.add("/bad/input.txt", body[:-10] + b"tampered!!")
        monkeypatch.setenv("JAXDL_MIRROR", srv.base + "/bad")
        with pytest.raises(DataError, match="checksum mismatch"):
            text.load_corpus("shakespeare", tmp_path)
        assert not (tmp_path / "tinyshakespeare" / "input.txt").exists()
        monkeypatch.setenv("JAXDL_MIRROR", srv.base + "/good")
        corpus, sha = text.load_corpus("shakespeare", tmp_path)
        assert len(corpus) == 1_115_394 and sha == text.CORPORA["shakespeare"]["sha256"]
        # A corrupt local copy is fetched again, never used.
        (tmp_path / "tinyshakespeare" / "input.txt").write_text("First Citizen: truncated")
        assert text.load_corpus("shakespeare", tmp_path)[0] == corpus
        assert srv.hits["/good/input.txt"] == 2
    finally:
        srv.close()


def test_sine_sequences_predict_the_clean_next_value():
    x, y = synthetic.sine_sequences(5, 30, 0.0, seed=1)
    assert x.shape == y.shape == (5, 30, 1) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 1:], y[:, :-1], atol=1e-6)
    noisy, clean = synthetic.sine_sequences(5, 30, 0.1, seed=1)
    np.testing.assert_array_equal(clean, y)
    assert 0.05 < np.std(noisy - x) < 0.15
    x2, _ = synthetic.sine_sequences(5, 30, 0.0, seed=2)
    assert not np.allclose(x, x2)


def test_sine_dataset_reports_the_repeat_last_baseline():
    cfg = config.from_dict({"data": {"name": "sine", "n_samples": 50, "seq_len": 12,
                                     "noise": 0.1},
                            "model": {"name": "rnn", "depth": 1},
                            "train": {"batch_size": 8}})
    ds = data.load(cfg.data, 0)
    assert ds.task == "regression" and ds.sequence and ds.train.x.shape[1:] == (12, 1)
    want = float(np.mean((ds.test.x - ds.test.y) ** 2))
    assert ds.baselines["test"]["repeat_last_mse"] == pytest.approx(want)
    assert cfg.data.test_fraction == 0.2 and len(ds.test) == 10


# ---------------------------------------------------------------- losses


def test_sequence_losses_average_over_time_then_examples():
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(3, 4, 5)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 5, (3, 4)), jnp.int32)
    flat = losses.cross_entropy(logits.reshape(12, 5), labels.reshape(12))
    assert float(losses.cross_entropy(logits, labels)) == pytest.approx(float(flat), rel=1e-6)
    w = jnp.asarray([1.0, 0.0, 1.0])
    keep = losses.cross_entropy(logits[jnp.asarray([0, 2])].reshape(8, 5),
                                labels[jnp.asarray([0, 2])].reshape(8))
    assert float(losses.cross_entropy(logits, labels, w)) == pytest.approx(float(keep), rel=1e-6)
    acc = float(jnp.mean(jnp.argmax(logits, -1) == labels))
    assert float(losses.accuracy(logits, labels)) == pytest.approx(acc)


# ---------------------------------------------------------------- engine


def test_window_batches_are_contiguous_slices_of_the_stream():
    stream = np.arange(1000, dtype=np.int32)
    model = models.make(config.ModelConfig(name="lstm", depth=1, width=4, embed=2), 1000,
                        vocab=1000, sequence_output=True)
    tx = optim.make(config.OptimConfig(), 10, 1)
    eng = Engine(model, tx, Task("classification"), batch_size=4, n_train=999,
                 steps_per_call=1, eval_batch_size=4, window=10)
    assert eng.steps_per_epoch == 99 // 4 and eng.n_starts == 990
    perm = eng._permutation_fn(jax.random.key(0))
    assert len(set(np.asarray(perm).tolist())) == perm.shape[0]        # no repeats
    xb, yb = eng._gather(jnp.asarray(stream[:-1]), jnp.asarray(stream[1:]), perm[:4])
    starts = np.asarray(perm[:4])
    np.testing.assert_array_equal(np.asarray(xb), starts[:, None] + np.arange(10))
    np.testing.assert_array_equal(np.asarray(yb), np.asarray(xb) + 1)
    with pytest.raises(ValueError, match="batch size 200 is larger"):
        Engine(model, tx, Task("classification"), batch_size=200, n_train=999,
               steps_per_call=1, eval_batch_size=4, window=10)


# ---------------------------------------------------------------- sampling


@pytest.fixture(scope="module")
def tiny_lm():
    model = models.RNN(cell="lstm", hidden=12, layers=2, outputs=7, vocab=7, embed=5,
                       sequence_output=True)
    params = model.init(jax.random.key(3), jnp.zeros((1, 4), jnp.int32))["params"]
    return model, params


def test_sampling_is_deterministic_per_key(tiny_lm):
    model, params = tiny_lm
    prompt = np.array([1, 2, 3])
    a = generate(model, params, prompt, 25, jax.random.key(0), temperature=1.0, num=3)
    b = generate(model, params, prompt, 25, jax.random.key(0), temperature=1.0, num=3)
    c = generate(model, params, prompt, 25, jax.random.key(1), temperature=1.0, num=3)
    assert a.shape == (3, 25) and a.dtype == np.int32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a[0], a[1])        # independent samples


def test_temperature_zero_is_greedy_decoding(tiny_lm):
    model, params = tiny_lm
    prompt = [4, 0, 2]
    got = generate(model, params, np.array(prompt), 12, jax.random.key(5), temperature=0.0)
    # Reference: re-run the whole sequence every step, take the argmax. The
    # model is causal, so right-padding to a fixed length (one compiled
    # program) leaves the logits at the last real position unchanged.
    apply = jax.jit(lambda ids: model.apply({"params": params}, ids))
    seq = list(prompt)
    for _ in range(12):
        padded = jnp.asarray([seq + [0] * (15 - len(seq))])
        seq.append(int(jnp.argmax(apply(padded)[0, len(seq) - 1])))
    assert got[0].tolist() == seq[len(prompt):]
    # top_k=1 and a near-zero temperature agree with greedy decoding too.
    np.testing.assert_array_equal(
        generate(model, params, np.array(prompt), 12, jax.random.key(6), top_k=1), got)
    np.testing.assert_array_equal(
        generate(model, params, np.array(prompt), 12, jax.random.key(6), temperature=1e-4), got)


def test_pick_respects_top_k_and_temperature():
    logits = jnp.log(jnp.asarray([[0.5, 0.3, 0.15, 0.05]]))
    keys = jax.random.split(jax.random.key(0), 4000)
    draws = np.asarray(jax.vmap(lambda k: pick(logits, k, 1.0, 2)[0])(keys))
    assert set(draws.tolist()) == {0, 1}
    assert abs(np.mean(draws == 0) - 0.5 / 0.8) < 0.03
    hot = np.asarray(jax.vmap(lambda k: pick(logits, k, 5.0)[0])(keys))
    p = np.array([0.5, 0.3, 0.15, 0.05]) ** (1 / 5)      # softmax(log p / T)
    assert abs(np.mean(hot == 3) - p[3] / p.sum()) < 0.03


def test_bad_sampling_arguments(tiny_lm):
    model, params = tiny_lm
    with pytest.raises(ConfigError) as e:
        generate(model, params, np.array([], np.int32), 0, jax.random.key(0),
                 temperature=-1.0, top_k=0)
    msg = str(e.value)
    for part in ("prompt: must hold", "length: must be >= 1", "temperature: must be >= 0",
                 "top_k: must be >= 1"):
        assert part in msg


# ---------------------------------------------------------------- configs


@pytest.mark.parametrize("tree, message", [
    ({"data": {"name": "shakespeare", "seq_len": 0}, "model": {"name": "lstm"}},
     "data.seq_len: must be >= 1, got 0"),
    ({"data": {"name": "sine"}, "model": {"name": "gru"}},
     "model.name: must be one of mlp, cnn, rnn, lstm, got 'gru'"),
    ({"data": {"name": "shakespeare"}, "model": {"name": "mlp"}},
     "shakespeare is sequence data"),
    ({"data": {"name": "spiral"}, "model": {"name": "rnn"}}, "rnn needs sequences"),
    ({"data": {"name": "sine"}, "model": {"name": "lstm", "bidirectional": True}},
     "must not read the future"),
    ({"data": {"name": "sine"}, "model": {"name": "lstm", "depth": 0}},
     "model.depth: lstm needs at least 1 recurrent layer"),
    ({"data": {"name": "sine"}, "model": {"name": "rnn"}, "optim": {"clip_norm": "big"}},
     "optim.clip_norm: expected a number > 0, auto or null, got 'big'"),
    ({"data": {"name": "shakespeare", "seq_len": 60_000}, "model": {"name": "lstm"}},
     "data.seq_len: the test split's 55770 characters hold no window of 60001"),
    ({"data": {"name": "sine", "n_samples": 100}, "model": {"name": "rnn"},
      "train": {"batch_size": 100}}, "train.batch_size: 100 is larger than the 72"),
])
def test_bad_sequence_configs(tree, message):
    with pytest.raises(ConfigError) as e:
        config.from_dict(tree)
    assert message in str(e.value)


def test_clipping_is_on_by_default_for_recurrent_models_only():
    lstm = config.from_dict({"data": {"name": "sine"}, "model": {"name": "lstm"}})
    mlp = config.from_dict({"data": {"name": "spiral"}})
    off = config.from_dict({"data": {"name": "sine"}, "model": {"name": "rnn"},
                            "optim": {"clip_norm": None}})
    assert lstm.optim.clip_norm == 1.0 and mlp.optim.clip_norm is None
    assert off.optim.clip_norm is None
    # "auto" resolves when the config is built: same experiment, same identity.
    explicit = config.from_dict({"data": {"name": "sine"}, "model": {"name": "lstm"},
                                 "optim": {"clip_norm": 1.0}})
    assert config.fingerprint(explicit) == config.fingerprint(lstm)
    assert optim.structure_key(config.OptimConfig()) == optim.structure_key(
        config.OptimConfig(clip_norm=None))


def test_replace_resolves_auto_defaults_again():
    lstm = config.Config().replace({"model.name": "lstm", "data.name": "sine"})
    assert lstm.optim.clip_norm == 1.0 and lstm.data.test_fraction == 0.2
    mlp = lstm.replace({"model.name": "mlp", "data.name": "spiral"})
    assert mlp.optim.clip_norm is None and mlp.data.test_fraction == 0.5
    fixed = lstm.replace({"optim": {"clip_norm": 2.0}})
    assert fixed.replace({"model.depth": 2}).optim.clip_norm == 2.0


def test_fingerprints_of_configs_from_before_sequence_models_are_unchanged(repo):
    # Measured with the code before issue 4: new fields at their defaults
    # must not move existing run directories or sweep studies.
    cfg = config.load(repo / "experiments" / "mnist_mlp.yaml")
    assert config.fingerprint(cfg) == "5c5d5b25077e2e57"


def test_bad_sample_settings():
    with pytest.raises(ConfigError) as e:
        lm_cfg(**{"sample.prompt": "", "sample.temperatures": []})
    assert "sample.prompt: must hold at least one character" in str(e.value)
    assert "sample.temperatures: must list at least one temperature" in str(e.value)


def test_a_prompt_outside_the_vocabulary_fails_before_training(shakespeare_dir, tmp_path):
    from jaxdl import experiment

    with pytest.raises(ConfigError, match="sample.prompt: characters not in the vocabulary"):
        experiment.run(lm_cfg(**{"sample.prompt": "Zebra"}), workdir=tmp_path / "run",
                       quiet=True)
    assert not (tmp_path / "run").exists()


def test_sampling_settings_do_not_change_the_fingerprint():
    a = lm_cfg()
    b = a.replace({"sample.prompt": "JULIET:", "sample.temperatures": [0.3]})
    assert config.fingerprint(a) == config.fingerprint(b)


def test_mnist_rows_as_sequences(mnist_dir):
    cfg = config.from_dict({"data": {"name": "mnist", "train_limit": 64, "val_fraction": 0.1},
                            "model": {"name": "lstm", "depth": 1, "width": 8,
                                      "bidirectional": True},
                            "train": {"batch_size": 32}})
    ds = data.load(cfg.data, 0)
    model = models.make(cfg.model, 10)
    out = model.apply(model.init(jax.random.key(0), jnp.asarray(ds.train.x[:2])),
                      jnp.asarray(ds.train.x[:2]))
    assert out.shape == (2, 10)


# ---------------------------------------------------------------- end to end


def test_language_model_trains_samples_and_restores(shakespeare_dir, tmp_path):
    from jaxdl import experiment

    res = experiment.run(lm_cfg(), workdir=tmp_path / "run", quiet=True)
    assert res.status == "completed"
    run = tmp_path / "run"
    vocab = Vocab.load(run / "vocab.json")
    samples = (run / "samples.txt").read_text()
    assert "=== temperature 0 ===\nFirst" in samples and "=== temperature 1 ===" in samples
    # Loss is in nats per character: a trained model beats the uniform guess.
    assert res.final["val"]["loss"] < np.log(len(vocab))
    scores = experiment.evaluate(run, splits=("train", "val"))
    assert scores["val"]["loss"] == pytest.approx(res.best["val"]["loss"], rel=1e-5)
    assert 0 < scores["train"]["loss"] < np.log(len(vocab))
    # The CLI samples from the best checkpoint, from the run directory alone.
    moved = tmp_path / "moved"
    shutil.copytree(run, moved)
    out = jaxdl("sample", moved, "--prompt", "Citizen:", "--length", "60", "--seed", "3",
                "--temperature", "0")
    assert out.stdout.startswith("Citizen:") and len(out.stdout.rstrip("\n")) >= 66
    again = jaxdl("sample", moved, "--prompt", "Citizen:", "--length", "60", "--seed", "4",
                  "--temperature", "0")
    assert again.stdout == out.stdout          # greedy: the key does not matter
    bad = jaxdl("sample", moved, "--prompt", "Citizen€", check=False)
    assert bad.returncode == 2 and "not in the vocabulary: '€'" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_sample_refuses_a_run_that_is_not_a_language_model(tmp_path):
    from jaxdl import experiment

    cfg = config.from_dict({"name": "s", "data": {"name": "sine", "n_samples": 40,
                                                  "seq_len": 8},
                            "model": {"name": "rnn", "depth": 1, "width": 4},
                            "train": {"epochs": 1, "batch_size": 8, "progress": False}})
    res = experiment.run(cfg, workdir=tmp_path / "sine", quiet=True)
    assert (tmp_path / "sine" / "predictions.png").stat().st_size > 0
    assert res.summary["baselines"]["test"]["repeat_last_mse"] > 0
    out = jaxdl("sample", tmp_path / "sine", check=False)
    assert out.returncode == 2 and "vocab.json is missing" in out.stderr
