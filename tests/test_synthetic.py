"""Synthetic distractors: fitted on real descriptors (the demo gallery), deterministic, realistic norms."""

from __future__ import annotations

import numpy as np
import pytest

from index import synthetic


@pytest.fixture(scope="module")
def real(demo_rows):
    """The demo gallery's descriptors and the identity of each row."""
    descriptors, entries = demo_rows
    return descriptors, [e.identity for e in entries]


def test_generate_is_deterministic_per_seed_and_row(real):
    model = synthetic.fit(*real)
    a = synthetic.generate(model, 1000, seed=3)
    assert a.shape == (1000, 128) and a.dtype == np.float32
    assert np.array_equal(a, synthetic.generate(model, 1000, seed=3))
    assert not np.allclose(a, synthetic.generate(model, 1000, seed=4))
    # a row is the same whether made alone, in a range or in a longer run crossing a chunk border
    border = synthetic.CHUNK_GROUPS * model.photos_per_identity
    long = synthetic.generate(model, border + 50, seed=3)
    assert np.array_equal(long[:1000], a)
    assert np.array_equal(synthetic.generate(model, 100, seed=3, start=border - 50), long[border - 50 : border + 50])


def test_synthetic_descriptors_look_like_real_ones(real):
    descriptors, identities = real
    model = synthetic.fit(descriptors, identities)
    fake = synthetic.generate(model, 5000, seed=0)
    real_norms, fake_norms = np.linalg.norm(descriptors, axis=1), np.linalg.norm(fake, axis=1)
    assert abs(np.median(real_norms) - np.median(fake_norms)) < 0.02
    assert fake_norms.min() >= real_norms.min() - 1e-4 and fake_norms.max() <= real_norms.max() + 1e-4
    # a real face is as far from a synthetic one as from a real stranger (dlib: ~0.7-0.9)
    rng = np.random.default_rng(0)
    to_fake = np.linalg.norm(descriptors[rng.integers(0, len(descriptors), 2000)] - fake[:2000], axis=1)
    assert 0.65 < np.median(to_fake) < 0.95
    assert np.all(np.isfinite(fake))


def test_model_round_trips_through_a_file(real, tmp_path):
    model = synthetic.fit(*real)
    model.save(tmp_path / "model.npz")
    again = synthetic.load(tmp_path / "model.npz")
    assert again.photos_per_identity == model.photos_per_identity and again.fitted_on == model.fitted_on
    assert np.array_equal(synthetic.generate(again, 300, seed=9), synthetic.generate(model, 300, seed=9))


def test_fit_refuses_too_few_descriptors():
    with pytest.raises(ValueError, match="at least 256"):
        synthetic.fit(np.zeros((10, 128), np.float32))
