"""Generalization measures checked against closed forms on linear models and tiny ReLU nets."""

from __future__ import annotations

import copy
import itertools
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from genlab.errors import UserError
from genlab.probes.measures import (
    compute_measures,
    keskar_sharpness,
    margin,
    output_margins,
    path_norm,
    rank_measures,
    sharpness_sigma,
    spectral_product,
    worst_case_alpha,
)
from genlab.probes.ranking import one_at_a_time_taus


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _linear(d_in: int, d_out: int, seed: int = 0) -> nn.Linear:
    layer = nn.Linear(d_in, d_out)
    g = _generator(seed)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(d_out, d_in, generator=g))
        layer.bias.copy_(torch.randn(d_out, generator=g))
    return layer


def _two_layer_relu(d_in: int, hidden: int, d_out: int, seed: int = 0) -> nn.Sequential:
    return nn.Sequential(_linear(d_in, hidden, seed), nn.ReLU(), _linear(hidden, d_out, seed + 1))


def _classification_data(n: int, d: int, classes: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = _generator(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, classes, (n,), generator=g)


def _sum_of_squared_errors(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return (outputs - targets).pow(2).sum(dim=1).mean()


# ---------------------------------------------------------------- norm products and path norm


def test_linear_model_norm_products_are_norms_of_w():
    layer = _linear(7, 4)
    x, y = _classification_data(20, 7, 4)
    measures = compute_measures(layer, (x, y), sharpness=False)
    w = layer.weight.detach().double().numpy()
    assert measures["spectral_product"] == pytest.approx(np.linalg.svd(w, compute_uv=False)[0], rel=1e-9)
    assert measures["frobenius_product"] == pytest.approx(np.sqrt((w**2).sum()), rel=1e-9)
    assert measures["params"] == 7 * 4 + 4  # the count includes the biases
    assert measures["l2_norm"] == pytest.approx(np.linalg.norm(w), rel=1e-9)  # the norm does not (Jiang et al.)


def _numpy_layers(net: nn.Sequential) -> list[np.ndarray]:
    return [m.weight.detach().double().numpy() for m in net if isinstance(m, nn.Linear)]


def test_norms_and_spectral_bounds_of_a_tiny_net_match_a_hand_computation_on_the_weights_only():
    init = _two_layer_relu(4, 6, 3, seed=11)
    trained = _two_layer_relu(4, 6, 3, seed=12)
    x, y = _classification_data(30, 4, 3, seed=13)
    with torch.no_grad():
        y = trained(x).argmax(dim=1)  # positive margin, so the margin-normalized measures are defined
    m = compute_measures(trained, (x, y), init_model=init, sharpness=False)
    w, w0 = _numpy_layers(trained), _numpy_layers(init)
    spec = [np.linalg.svd(a, compute_uv=False)[0] for a in w]
    fro_sq = [float((a ** 2).sum()) for a in w]
    logits = trained(x).detach().double().numpy()
    true = logits[np.arange(30), y.numpy()]
    others = np.where(np.eye(3, dtype=bool)[y.numpy()], -np.inf, logits).max(axis=1)
    gamma = float(np.percentile(true - others, 10))  # numpy's default interpolation is linear, as torch's
    assert m["margin"] == pytest.approx(gamma, rel=1e-6)
    assert m["l2_norm"] == pytest.approx(math.sqrt(sum(fro_sq)), rel=1e-9)
    assert m["dist_from_init"] == pytest.approx(math.sqrt(sum(float(((a - b) ** 2).sum()) for a, b in zip(w, w0))),
                                                rel=1e-9)
    prod_spec_sq = float(np.prod(spec)) ** 2
    assert m["spectral_over_margin"] == pytest.approx(prod_spec_sq / gamma ** 2, rel=1e-6)  # prod.of.spec/margin
    assert m["spectral_orig"] == pytest.approx(  # spec.orig: times the summed stable ranks
        prod_spec_sq * sum(f / s ** 2 for f, s in zip(fro_sq, spec)) / gamma ** 2, rel=1e-6)
    assert m["spectral_init"] == pytest.approx(  # spec.init: times the summed moved-distance ratios
        prod_spec_sq * sum(float(((a - b) ** 2).sum()) / s ** 2 for a, b, s in zip(w, w0, spec)) / gamma ** 2,
        rel=1e-6)
    assert m["sum_of_frobenius_over_margin"] == pytest.approx(2 * (np.prod(fro_sq) / gamma ** 2) ** 0.5, rel=1e-6)


def test_spectral_product_multiplies_layers_and_reshapes_conv_kernels():
    net = nn.Sequential(nn.Conv2d(2, 3, kernel_size=3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 5))
    kernel = net[0].weight.detach().double().numpy().reshape(3, 2 * 9)
    dense = net[3].weight.detach().double().numpy()
    expected = np.linalg.svd(kernel, compute_uv=False)[0] * np.linalg.svd(dense, compute_uv=False)[0]
    assert spectral_product(net) == pytest.approx(expected, rel=1e-9)


def test_path_norm_of_linear_model_is_sum_of_squared_weights_with_biases_only_on_request():
    layer = _linear(6, 3)
    weights = float(layer.weight.detach().double().pow(2).sum())
    assert path_norm(layer, (6,)) == pytest.approx(weights, rel=1e-12)
    expected = weights + float(layer.bias.detach().double().pow(2).sum())
    assert path_norm(layer, (6,), biases=True) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("nonnegative", [True, False])
def test_path_norm_of_two_layer_relu_net_equals_brute_force_path_sum(nonnegative: bool):
    net = _two_layer_relu(3, 4, 2, seed=3)
    if nonnegative:
        with torch.no_grad():
            for p in net.parameters():
                p.abs_()
    w1, b1 = net[0].weight.detach().double(), net[0].bias.detach().double()
    w2, b2 = net[2].weight.detach().double(), net[2].bias.detach().double()
    brute = 0.0
    for i, j, k in itertools.product(range(3), range(4), range(2)):
        brute += float(w1[j, i] ** 2 * w2[k, j] ** 2)  # input i -> hidden j -> output k
    assert path_norm(net, (3,)) == pytest.approx(brute, rel=1e-12)  # weights only (Jiang et al.)
    for j, k in itertools.product(range(4), range(2)):
        brute += float(b1[j] ** 2 * w2[k, j] ** 2)  # bias unit of layer 1 -> hidden j -> output k
    brute += float(b2.pow(2).sum())  # bias unit of layer 2 -> output k
    assert path_norm(net, (3,), biases=True) == pytest.approx(brute, rel=1e-12)


def test_path_norm_of_convolution_equals_path_norm_of_its_unrolled_matrix():
    conv = nn.Conv1d(2, 3, kernel_size=3, padding=1, stride=2, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=_generator(5)))
        basis = torch.eye(2 * 9).reshape(18, 2, 9)
        unrolled = conv(basis).reshape(18, -1)  # row = input unit, column = output unit
    assert path_norm(conv, (2, 9)) == pytest.approx(float(unrolled.double().pow(2).sum()), rel=1e-9)


# ---------------------------------------------------------------- margin


def test_margin_is_tenth_percentile_of_hand_computed_margins():
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 5.0, 4.5], [1.0, 2.0, 0.0], [0.0, 0.0, 2.0], [7.0, 0.0, 6.0]])
    labels = torch.tensor([0, 1, 0, 2, 0])
    expected_margins = torch.tensor([2.0, 0.5, -1.0, 2.0, 1.0])
    torch.testing.assert_close(output_margins(logits, labels), expected_margins)
    # sorted: -1, 0.5, 1, 2, 2; 10th percentile at position 0.1 * 4 = 0.4: -1 + 0.4 * 1.5
    assert margin(logits, labels) == pytest.approx(-0.4)


def test_compute_measures_margin_uses_the_models_logits():
    doubling = nn.Linear(3, 3)
    with torch.no_grad():
        doubling.weight.copy_(2.0 * torch.eye(3))
        doubling.bias.zero_()
    x = torch.tensor([[4.0, 1.0, 0.0]] * 9 + [[0.0, 1.0, 0.5]])
    y = torch.tensor([0] * 9 + [1])
    measures = compute_measures(doubling, (x, y), sharpness=False)
    # logits 2x: margins nine of 6.0 and one of 1.0; 10th percentile at position 0.9 -> 1 + 0.9 * 5
    assert measures["margin"] == pytest.approx(5.5)
    assert measures["spectral_over_margin"] == pytest.approx(2.0**2 / 5.5**2)
    assert measures["frobenius_over_margin"] == pytest.approx(12.0 / 5.5**2)
    assert measures["path_norm_over_margin"] == pytest.approx(12.0 / 5.5**2)


# ---------------------------------------------------------------- sharpness


def _least_squares_fit(d: int, k: int, n: int, seed: int = 0) -> tuple[nn.Linear, torch.Tensor, torch.Tensor]:
    """A linear model at the least-squares optimum of noisy linear data: the residuals are then
    orthogonal to the inputs, so weight noise changes the loss only through its quadratic term."""
    g = _generator(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) * torch.linspace(0.5, 2.0, d, dtype=torch.float64)
    targets = x @ torch.randn(d, k, generator=g, dtype=torch.float64) + 0.3 * torch.randn(n, k, generator=g,
                                                                                          dtype=torch.float64)
    design = torch.cat([x, torch.ones(n, 1, dtype=torch.float64)], dim=1)
    solution = torch.linalg.lstsq(design, targets).solution
    layer = nn.Linear(d, k).double()
    with torch.no_grad():
        layer.weight.copy_(solution[:d].T)
        layer.bias.copy_(solution[d])
    return layer, x, targets


def test_isotropic_sharpness_matches_closed_form_for_linear_regression():
    # E ||(W + s N) x + (b + s n) - t||^2 = ||W x + b - t||^2 + s^2 * K * (||x||^2 + 1), so the
    # mean loss rises by s^2 K (mean ||x||^2 + 1) and the allowed rise `delta` gives s* below.
    layer, x, targets = _least_squares_fit(d=5, k=3, n=200)
    delta = 0.5
    analytic = math.sqrt(delta / (3 * (float(x.pow(2).sum(dim=1).mean()) + 1.0)))
    found = sharpness_sigma(layer, x, targets, _sum_of_squared_errors, target_increase=delta, draws=200, steps=8,
                            seed=1)
    assert found == pytest.approx(analytic, rel=0.05)


def test_magnitude_aware_sharpness_matches_closed_form_for_linear_regression():
    # Noise std s * (|w_ki| + eps) on weight w_ki (input i, with i = d the bias and x_d = 1):
    # the mean loss rises by s^2 * sum_{k,i} (|w_ki| + eps)^2 * mean(x_i^2).
    layer, x, targets = _least_squares_fit(d=5, k=3, n=200, seed=2)
    delta, eps = 0.5, 0.3
    scale_sq = torch.cat([layer.weight, layer.bias.unsqueeze(1)], dim=1).detach().abs().add(eps).pow(2)
    second_moments = torch.cat([x.pow(2).mean(dim=0), torch.ones(1, dtype=torch.float64)])
    analytic = math.sqrt(delta / float((scale_sq * second_moments).sum()))
    found = sharpness_sigma(
        layer, x, targets, _sum_of_squared_errors, target_increase=delta,
        magnitude_aware=True, magnitude_eps=eps, draws=200, steps=8, seed=3,
    )
    assert found == pytest.approx(analytic, rel=0.05)


def test_magnitude_aware_sharpness_is_invariant_to_relu_layer_rescaling_but_isotropic_is_not():
    # Scaling layer 1 (weights and bias) by c and layer 2 weights by 1/c leaves a ReLU net's
    # function unchanged; with eps = 0 the magnitude-aware noise rescales with it (Jiang et al.).
    net = _two_layer_relu(4, 16, 3, seed=7)
    rescaled = copy.deepcopy(net)
    with torch.no_grad():
        rescaled[0].weight.mul_(4.0)
        rescaled[0].bias.mul_(4.0)
        rescaled[2].weight.div_(4.0)
    x, y = _classification_data(100, 4, 3, seed=8)
    cross_entropy = nn.functional.cross_entropy
    settings = dict(target_increase=0.2, draws=3, steps=6, seed=0)

    def sigmas(model: nn.Module, magnitude_aware: bool) -> float:
        return sharpness_sigma(model, x, y, cross_entropy, magnitude_aware=magnitude_aware, magnitude_eps=0.0,
                               **settings)

    assert sigmas(rescaled, True) == pytest.approx(sigmas(net, True), rel=1e-3)
    assert abs(math.log(sigmas(rescaled, False) / sigmas(net, False))) > 0.1


def test_sharpness_is_reproducible_and_grows_with_the_allowed_increase():
    net = _two_layer_relu(4, 8, 3, seed=1)
    x, y = _classification_data(60, 4, 3)
    loss = nn.functional.cross_entropy
    first = sharpness_sigma(net, x, y, loss, target_increase=0.1, draws=2, steps=5, seed=4)
    again = sharpness_sigma(net, x, y, loss, target_increase=0.1, draws=2, steps=5, seed=4)
    looser = sharpness_sigma(net, x, y, loss, target_increase=0.5, draws=2, steps=5, seed=4)
    assert first == again
    assert looser > first


def test_compute_measures_reports_inverse_squared_sigmas():
    net = _two_layer_relu(5, 12, 3)
    x, _ = _classification_data(80, 5, 3)
    with torch.no_grad():
        y = net(x).argmax(dim=1)  # labels the net fits perfectly, so its error can rise by 0.1
    measures = compute_measures(net, (x, y), sharpness_draws=2, sharpness_steps=4, sharpness_points=50,
                                worst_case_points=50, worst_case_steps=3, worst_case_bisections=2)
    assert measures["train_acc"] == 1.0
    # a worst-case perturbation hurts at least as much as a random one of the same size, so the box
    # the error tolerates is smaller than the Gaussian std it tolerates (both on the same 0.1 rise)
    assert measures["worst_case_alpha"] < measures["sharpness_sigma"]
    assert measures["worst_case_mag_alpha"] < measures["magnitude_aware_sigma"]
    skipped = compute_measures(net, (x, y), worst_case=False, sharpness_points=50, sharpness_draws=1)
    assert math.isnan(skipped["keskar_sharpness"]) and math.isnan(skipped["worst_case_sharpness"])
    assert skipped["pacbayes_sharpness"] > 0


# ---------------------------------------------------------------- worst-case sharpness


def _bias_only_classifier(margins: torch.Tensor) -> nn.Linear:
    """Two classes, logit difference f_0 - f_1 = x_0 + b_0 - b_1 with only the biases trainable."""
    layer = nn.Linear(2, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
        layer.bias.copy_(torch.tensor([0.3, -0.2]))
    layer.weight.requires_grad_(False)
    return layer


def test_worst_case_alpha_equals_the_radius_that_flips_the_allowed_fraction_of_points():
    # every label 0 with margins m_i = x_i0 + 0.5 > 0; in the box |d_i| <= alpha the worst shift
    # lowers every margin by 2 alpha (d_0 = -alpha, d_1 = +alpha), flipping the points with m_i < 2 alpha;
    # at most 10% of 50 points may flip, so alpha* = m_(6) / 2 (the 6th smallest margin).
    # Magnitude-aware, the box is alpha (|b_i| + eps): the shift is alpha (|b_0| + |b_1| + 2 eps).
    x = torch.stack([torch.linspace(0.1, 2.0, 50)[torch.randperm(50, generator=_generator(3))] - 0.5,
                     torch.zeros(50)], dim=1)
    y = torch.zeros(50, dtype=torch.long)
    layer = _bias_only_classifier(x[:, 0])
    sixth = float(torch.sort(x[:, 0] + 0.5).values[5])
    bisections = 6
    precision = 4.0 ** (2.0 ** -(bisections + 1))
    found = worst_case_alpha(layer, x, y, target_increase=0.1, steps=5, bisections=bisections)
    assert sixth / 2 / precision <= found <= sixth / 2 * precision
    eps = 1e-3
    found_mag = worst_case_alpha(layer, x, y, target_increase=0.1, steps=5, bisections=bisections,
                                 magnitude_aware=True, magnitude_eps=eps)
    expected = sixth / (0.3 + 0.2 + 2 * eps)
    assert expected / precision <= found_mag <= expected * precision


def test_keskar_sharpness_matches_a_brute_force_search_over_the_box_vertices():
    # the cross-entropy of a linear classifier is convex in its parameters, so its max over a box
    # is at one of the 2^6 vertices: brute force gives the exact phi(eps) the ascent must reach.
    layer = nn.Linear(2, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.5, -0.5], [-1.0, 1.0]]))
        layer.bias.copy_(torch.tensor([0.2, -0.1]))
    x = torch.randn(40, 2, generator=_generator(0))
    y = layer(x).argmax(dim=1)
    y = torch.where(torch.rand(40, generator=_generator(1)) < 0.1, 1 - y, y)
    theta = torch.cat([layer.weight.detach().flatten(), layer.bias.detach()]).double()

    def cross_entropy(t: torch.Tensor) -> float:
        return float(nn.functional.cross_entropy(x.double() @ t[:4].reshape(2, 2).T + t[4:], y))

    base = cross_entropy(theta)
    for eps in (5e-4, 2e-3):
        radii = eps * (theta.abs() + 1.0)
        worst = max(cross_entropy(theta + torch.tensor(signs, dtype=torch.float64) * radii)
                    for signs in itertools.product((-1.0, 1.0), repeat=6))
        brute = 100.0 * (worst - base) / (1.0 + base)
        assert keskar_sharpness(layer, x, y, eps=eps, steps=10) == pytest.approx(brute, rel=1e-3)


# ---------------------------------------------------------------- compute_measures contract


def test_compute_measures_leaves_the_callers_model_untouched():
    net = nn.Sequential(nn.Linear(6, 10), nn.BatchNorm1d(10), nn.ReLU(), nn.Dropout(0.5), nn.Linear(10, 3))
    net.train()
    x, y = _classification_data(64, 6, 3)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    rng_before = torch.random.get_rng_state()
    compute_measures(
        net, (x, y), init_model=copy.deepcopy(net), sharpness_criterion="loss", sharpness_draws=2, sharpness_steps=3
    )
    after = net.state_dict()
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert torch.equal(value, after[key]), key
    assert net.training and all(m.training for m in net.modules())
    assert torch.equal(torch.random.get_rng_state(), rng_before)


def test_distance_from_init_is_the_l2_norm_of_the_weight_change():
    init = _two_layer_relu(3, 5, 2)
    trained = copy.deepcopy(init)
    with torch.no_grad():
        trained[0].weight[1, 2] += 3.0
        trained[2].weight[0, 4] += 4.0
        trained[2].bias[0] -= 12.0  # biases are not part of the distance (Jiang et al.: weights only)
    x, y = _classification_data(10, 3, 2)
    assert compute_measures(trained, (x, y), init_model=init, sharpness=False)["dist_from_init"] == pytest.approx(5.0)
    assert math.isnan(compute_measures(trained, (x, y), sharpness=False)["dist_from_init"])


def test_train_loss_and_accuracy_are_evaluated_with_dropout_off():
    net = nn.Sequential(nn.Linear(4, 3), nn.Dropout(0.9))
    x, y = _classification_data(50, 4, 3)
    measures = compute_measures(net, (x, y), sharpness=False)
    with torch.no_grad():
        logits = net[0](x)
    assert measures["train_loss"] == pytest.approx(float(nn.functional.cross_entropy(logits, y)), rel=1e-6)
    assert measures["train_acc"] == pytest.approx(float((logits.argmax(1) == y).float().mean()))


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ((torch.zeros(3, 2),), "data"),
        ((torch.zeros(3, 2), torch.zeros(3)), "data"),
        ((torch.zeros(3, 2), torch.tensor([0, 1])), "data"),
        ((torch.zeros(3, 2), torch.tensor([0, 1, 5])), "data"),
    ],
)
def test_bad_data_raises_user_error_naming_the_field(data, field):
    with pytest.raises(UserError, match=field):
        compute_measures(nn.Linear(2, 3), data, sharpness=False)


def test_init_model_of_another_architecture_is_a_user_error():
    x, y = _classification_data(5, 2, 3)
    with pytest.raises(UserError, match="init_model"):
        compute_measures(nn.Linear(2, 3), (x, y), init_model=nn.Linear(3, 3), sharpness=False)


# ---------------------------------------------------------------- rank_measures


def _tau_b_by_pair_counting(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's tau-b from its definition: (concordant - discordant) / sqrt((n0 - ties_a)(n0 - ties_b))."""
    concordant = discordant = ties_a = ties_b = 0
    for i, j in itertools.combinations(range(len(a)), 2):
        da, db = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
        ties_a += da == 0
        ties_b += db == 0
        if da and db:
            concordant += da == db
            discordant += da != db
    pairs = len(a) * (len(a) - 1) // 2
    return (concordant - discordant) / math.sqrt((pairs - ties_a) * (pairs - ties_b))


def test_rank_measures_tau_is_kendalls_tau_b_counted_by_hand_with_ties_and_missing_values():
    rng = np.random.default_rng(5)
    gap = np.round(rng.normal(size=25), 1)                 # rounding makes ties
    measure = np.round(gap + rng.normal(scale=0.8, size=25), 1)
    measure[[3, 17]] = np.nan                             # undefined for two models: left out
    table = pd.DataFrame({"gen_gap": gap, "m": measure})
    row = rank_measures(table).iloc[0]
    keep = np.isfinite(measure)
    assert row["n"] == 23
    assert row["tau"] == pytest.approx(_tau_b_by_pair_counting(measure[keep], gap[keep]), abs=1e-12)


def test_rank_measures_orders_by_signed_tau_so_an_anti_correlated_measure_ranks_last():
    gap = np.array([0.05, 0.30, 0.12, 0.50, 0.21, 0.02, 0.40])
    table = pd.DataFrame({"gen_gap": gap, "anti": -gap, "weak": [0.1, 0.2, 0.0, 0.3, 0.5, 0.4, 0.6]})
    assert list(rank_measures(table)["measure"]) == ["weak", "anti"]
    assert list(rank_measures(table, order="absolute")["measure"]) == ["anti", "weak"]


def test_one_at_a_time_taus_use_the_base_models_and_one_axis_each():
    table = pd.DataFrame({
        "axis": ["base", "base", "width", "width", "depth", "depth"],
        "gen_gap": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        "m": [1.0, 2.0, 3.0, 4.0, -5.0, -6.0],   # tracks the gap along width, backwards along depth
    })
    row = one_at_a_time_taus(table, ["m"]).loc["m"]
    assert row["tau_width"] == pytest.approx(1.0)
    # depth group: base (1, 2) and depth (-5, -6): measure order -6 < -5 < 1 < 2, gap order 6 > 5 > 1 < 2
    assert row["tau_depth"] == pytest.approx(_tau_b_by_pair_counting(np.array([1.0, 2.0, -5.0, -6.0]),
                                                                     np.array([1.0, 2.0, 5.0, 6.0])))
    assert row["granulated_tau"] == pytest.approx((row["tau_width"] + row["tau_depth"]) / 2)


def test_rank_measures_gives_tau_one_for_the_gap_and_minus_one_for_its_negation():
    gap = np.array([0.05, 0.30, 0.12, 0.50, 0.21, 0.02, 0.40])
    noise = np.random.default_rng(0).normal(size=gap.size)
    table = pd.DataFrame({"noise": noise, "same": np.exp(gap), "negated": -gap, "gen_gap": gap,
                          "name": list("abcdefg")})
    ranked = rank_measures(table, order="absolute")
    assert list(ranked.columns) == ["measure", "tau", "p_value", "n"]
    assert set(ranked["measure"][:2]) == {"same", "negated"}
    taus = dict(zip(ranked["measure"], ranked["tau"]))
    assert taus["same"] == pytest.approx(1.0)
    assert taus["negated"] == pytest.approx(-1.0)
    assert abs(taus["noise"]) < 1.0
    assert ranked["p_value"].iloc[0] < 0.01


def test_granulated_tau_averages_within_single_hyperparameter_changes():
    # gap rises with width and with depth; the measure rises with width but falls with depth.
    grid = pd.DataFrame(list(itertools.product([1, 2, 3], [0, 1])), columns=["width", "depth"])
    grid["gen_gap"] = grid["width"] + 10 * grid["depth"]
    grid["measure"] = grid["width"] - 10 * grid["depth"]
    row = rank_measures(grid, hyperparameters=["width", "depth"]).iloc[0]
    assert row["tau_width"] == pytest.approx(1.0)
    assert row["tau_depth"] == pytest.approx(-1.0)
    assert row["granulated_tau"] == pytest.approx(0.0)


def test_rank_measures_without_the_gap_column_is_a_user_error():
    with pytest.raises(UserError, match="gap_column"):
        rank_measures(pd.DataFrame({"a": [1.0, 2.0]}))
