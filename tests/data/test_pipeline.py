"""Host-side pipeline: splits, normalisation fitted on the training split."""

import numpy as np
import pytest

from jaxdl import config
from jaxdl import data as data_lib
from jaxdl.data.pipeline import Split, fit_normalizer, seeded_rng, split_off


def _split(n=100, d=3):
    rng = np.random.default_rng(0)
    return Split(rng.normal(size=(n, d)).astype(np.float32), np.arange(n, dtype=np.int32))


def test_split_off_is_a_deterministic_partition():
    s = _split()
    kept, held = split_off(s, 0.2, seeded_rng(7, "val"))
    assert len(kept) == 80 and len(held) == 20
    assert sorted(np.r_[kept.y, held.y].tolist()) == list(range(100))
    kept2, held2 = split_off(s, 0.2, seeded_rng(7, "val"))
    np.testing.assert_array_equal(held.y, held2.y)
    _, held3 = split_off(s, 0.2, seeded_rng(8, "val"))
    assert not np.array_equal(held.y, held3.y)


def test_split_off_zero_and_too_small():
    kept, held = split_off(_split(10), 0.0, seeded_rng(0, "val"))
    assert len(kept) == 10 and len(held) == 0
    with pytest.raises(ValueError, match="empty split"):
        split_off(_split(3), 0.01, seeded_rng(0, "val"))


def test_standardize_tables_per_feature_from_train_only():
    train = np.array([[0.0, 10.0], [2.0, 30.0]], np.float32)
    norm = fit_normalizer(train, "standardize", image=False)
    z = norm(train)
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-6)
    np.testing.assert_allclose(z.std(axis=0), 1.0, atol=1e-6)
    # A test point is transformed with the training statistics, not its own.
    np.testing.assert_allclose(norm(np.array([[4.0, 50.0]], np.float32)), [[3.0, 3.0]],
                               atol=1e-5)


def test_unit_and_none_modes():
    images = np.array([[[0, 255], [51, 102]]], np.uint8)
    np.testing.assert_allclose(fit_normalizer(images, "unit", image=True)(images),
                               images / 255.0, atol=1e-7)
    table = np.array([[1.0, -2.0], [3.0, 2.0]], np.float32)
    np.testing.assert_allclose(fit_normalizer(table, "unit", image=False)(table),
                               [[0, 0], [1, 1]], atol=1e-7)
    np.testing.assert_array_equal(fit_normalizer(table, "none", image=False)(table), table)


def test_image_standardize_uses_one_global_mean_and_std():
    images = np.random.default_rng(0).integers(0, 256, size=(20, 4, 4)).astype(np.uint8)
    norm = fit_normalizer(images, "standardize", image=True)
    assert norm.mean.shape == () and norm.std.shape == ()
    z = norm(images)
    assert abs(float(z.mean())) < 1e-5 and abs(float(z.std()) - 1.0) < 1e-4


def test_constant_feature_does_not_divide_by_zero():
    train = np.array([[1.0, 5.0], [1.0, 7.0]], np.float32)
    for mode in ("unit", "standardize"):
        assert np.isfinite(fit_normalizer(train, mode, image=False)(train)).all()


def test_load_fits_statistics_on_the_training_split_only():
    cfg = config.from_dict({"data": {"name": "linear", "n_samples": 200, "val_fraction": 0.25,
                                     "normalize": "standardize"},
                            "train": {"batch_size": 8, "monitor": "val_loss"}})
    ds = data_lib.load(cfg.data, 3)
    np.testing.assert_allclose(ds.train.x.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(ds.train.x.std(axis=0), 1.0, atol=1e-4)
    assert np.abs(ds.val.x.mean(axis=0)).max() > 1e-3     # not refitted on validation
    assert ds.task == "regression" and ds.outputs == 1
    # Same seed, same split; another seed, another split.
    np.testing.assert_array_equal(data_lib.load(cfg.data, 3).val.y, ds.val.y)
    assert not np.array_equal(data_lib.load(cfg.data, 4).val.y, ds.val.y)
