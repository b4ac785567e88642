"""Corruptions of Zhang et al. (2017): exact fractions, both label-noise conventions, determinism."""
import numpy as np
import pytest

from genlab.data import corrupt_labels, gaussian_inputs, random_pixels, shuffled_pixels
from genlab.errors import UserError

LABELS = np.random.default_rng(0).integers(0, 10, 20000)


@pytest.mark.parametrize("p", [0.0, 0.2, 0.5, 1.0])
def test_uniform_mode_redraws_a_fraction_p_and_may_keep_the_true_label(p):
    new, selected = corrupt_labels(LABELS, p, 10, seed=1, mode="uniform")
    assert abs(selected.mean() - p) < 0.015
    wrong = (new != LABELS).mean()
    assert abs(wrong - p * 0.9) < 0.015          # a redraw hits the true class 1/K of the time
    assert np.array_equal(new[~selected], LABELS[~selected])
    if p == 1.0:
        assert selected.all()
        assert abs(np.bincount(new, minlength=10) / len(new) - 0.1).max() < 0.01


@pytest.mark.parametrize("p", [0.15, 0.6, 1.0])
def test_other_mode_makes_every_selected_label_wrong(p):
    new, selected = corrupt_labels(LABELS, p, 10, seed=2, mode="other")
    assert np.array_equal(new != LABELS, selected)
    assert abs(selected.mean() - p) < 0.015
    # the wrong class is uniform over the 9 others
    shift = (new[selected] - LABELS[selected]) % 10
    assert set(np.unique(shift)) == set(range(1, 10))


def test_label_corruption_is_determined_by_the_seed():
    a, _ = corrupt_labels(LABELS, 0.4, 10, seed=7)
    b, _ = corrupt_labels(LABELS, 0.4, 10, seed=7)
    c, _ = corrupt_labels(LABELS, 0.4, 10, seed=8)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_out_of_range_p_is_refused(p):
    with pytest.raises(UserError, match="p="):
        corrupt_labels(LABELS, p, 10, seed=0)


def test_shuffled_pixels_apply_one_permutation_to_all_examples():
    x = np.random.default_rng(0).random((50, 1, 4, 4)).astype(np.float32)
    s = shuffled_pixels(x, seed=3)
    flat, sflat = x.reshape(50, -1), s.reshape(50, -1)
    perm = [int(np.where(flat[0] == v)[0][0]) for v in sflat[0]]
    assert np.array_equal(sflat, flat[:, perm])
    assert np.array_equal(shuffled_pixels(x, 3), s) and s.shape == x.shape


def test_random_pixels_permute_each_example_differently():
    x = np.arange(30 * 16, dtype=np.float32).reshape(30, 1, 4, 4)
    r = random_pixels(x, seed=4).reshape(30, -1)
    flat = x.reshape(30, -1)
    assert all(np.array_equal(np.sort(r[i]), flat[i]) for i in range(30))     # same pixels per image
    orders = {tuple(np.argsort(r[i] - flat[i, 0])) for i in range(30)}
    assert len(orders) == 30                                                  # a different order each
    assert np.array_equal(random_pixels(x, 4).reshape(30, -1), r)


def test_gaussian_inputs_match_mean_and_variance_per_coordinate():
    rng = np.random.default_rng(0)
    x = (rng.random((20000, 6)) * np.arange(1, 7) + np.arange(6)).astype(np.float32)
    g = gaussian_inputs(x, seed=5)
    np.testing.assert_allclose(g.mean(0), x.mean(0), atol=0.02)
    np.testing.assert_allclose(g.std(0), x.std(0), rtol=0.03)
    assert not np.allclose(g, x)
