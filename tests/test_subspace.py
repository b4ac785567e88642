"""Tests for genlab.probes.subspace: random-subspace training (Li et al. 2018)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from genlab.errors import UserError
from genlab.probes.subspace import (
    DenseProjection,
    FastfoodProjection,
    IdentityProjection,
    SparseProjection,
    SubspaceModel,
    fwht,
    make_projection,
)


def hadamard(length: int) -> torch.Tensor:
    return torch.from_numpy(scipy.linalg.hadamard(length).astype(np.float64))


def explicit_fastfood_matrix(projection: FastfoodProjection) -> torch.Tensor:
    """The [D, d] matrix sum_b S_b [H G_b Pi_b H B_b]_{:D}, built densely from the stored draws."""
    length = projection.L
    H = hadamard(length)
    blocks = []
    for b in range(projection.blocks):
        permutation = torch.zeros(length, length, dtype=torch.float64)
        permutation[torch.arange(length), projection.perm[b]] = 1.0  # (Pi v)_i = v[perm[i]]
        gauss = torch.diag(projection.gauss[b].double())
        signs = torch.diag(projection.signs[b].double())
        block = projection.scale[b].double() * (H @ gauss @ permutation @ H @ signs)
        blocks.append(block[: projection.D])
    return torch.cat(blocks, dim=1)[:, : projection.d]


def tiny_mlp(dtype: torch.dtype = torch.float64, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).to(dtype)


def flat_parameters(module: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


# ----------------------------------------------------------------------------- projections


def test_dense_columns_have_exactly_unit_norm_and_forward_is_matrix_product() -> None:
    projection = DenseProjection(300, 40, seed=3)
    norms = projection.matrix.double().norm(dim=0)
    assert torch.allclose(norms, torch.ones(40, dtype=torch.float64), atol=1e-6, rtol=0)
    x = torch.randn(40)
    assert torch.allclose(projection(x), projection.matrix @ x)
    assert projection.extra_memory_bytes() == 300 * 40 * 4


def test_projections_are_reproducible_from_seed() -> None:
    x = torch.randn(20)
    for name in ("dense", "sparse", "fastfood"):
        first = make_projection(name, 500, 20, seed=7)(x)
        again = make_projection(name, 500, 20, seed=7)(x)
        other = make_projection(name, 500, 20, seed=8)(x)
        assert torch.equal(first, again), name
        assert not torch.allclose(first, other), name


@pytest.mark.parametrize("length", [2**k for k in range(11)])
def test_fwht_matches_explicit_hadamard_and_is_its_own_inverse_up_to_length(length: int) -> None:
    x = torch.randn(3, length, dtype=torch.float64)
    transformed = fwht(x)
    assert torch.allclose(transformed, x @ hadamard(length).T, atol=1e-10)
    assert torch.allclose(fwht(transformed), length * x, atol=1e-9)


def test_fwht_leaves_input_untouched_and_handles_batch_shapes() -> None:
    x = torch.randn(2, 3, 64, dtype=torch.float64)
    saved = x.clone()
    y = fwht(x)
    assert torch.equal(x, saved)
    assert torch.allclose(y, x @ hadamard(64).T, atol=1e-10)


def test_fwht_rejects_bad_lengths_and_dtypes() -> None:
    with pytest.raises(UserError, match="L=12"):
        fwht(torch.randn(12))
    with pytest.raises(UserError, match="floating"):
        fwht(torch.ones(8, dtype=torch.int64))


def test_fwht_gradient_and_second_derivative() -> None:
    x = torch.randn(2, 32, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(fwht, (x,))
    assert torch.autograd.gradgradcheck(fwht, (x,))


@pytest.mark.parametrize(("D", "d"), [(50, 7), (50, 50), (50, 150), (1000, 300), (1, 1)])
def test_fastfood_matches_explicit_dense_matrix_forward_and_adjoint(D: int, d: int) -> None:
    projection = FastfoodProjection(D, d, seed=11, dtype=torch.float64)
    matrix = explicit_fastfood_matrix(projection)
    x = torch.randn(d, dtype=torch.float64, requires_grad=True)
    y = torch.randn(D, dtype=torch.float64)
    out = projection(x)
    out.backward(y)
    assert torch.allclose(out, matrix @ x.detach(), atol=1e-12)
    assert torch.allclose(x.grad, matrix.T @ y, atol=1e-12)
    if d > projection.L:
        assert projection.blocks == -(-d // projection.L)


def test_fastfood_affine_fuses_the_offset_and_differentiates_both() -> None:
    projection = FastfoodProjection(300, 40, seed=3, dtype=torch.float64)
    matrix = explicit_fastfood_matrix(projection)
    x = torch.randn(40, dtype=torch.float64, requires_grad=True)
    offset = torch.randn(300, dtype=torch.float64, requires_grad=True)
    y = torch.randn(300, dtype=torch.float64)
    out = projection.affine(x, offset)
    out.backward(y)
    assert torch.allclose(out, offset.detach() + matrix @ x.detach(), atol=1e-12)
    assert torch.allclose(x.grad, matrix.T @ y, atol=1e-12)
    assert torch.equal(offset.grad, y)


def test_fastfood_float32_agrees_with_float64() -> None:
    single = FastfoodProjection(3000, 400, seed=5)
    double = FastfoodProjection(3000, 400, seed=5, dtype=torch.float64)
    x = torch.randn(400, dtype=torch.float64)
    assert torch.allclose(single(x.float()).double(), double(x), atol=1e-5)


def test_fastfood_preserves_squared_norm_in_expectation() -> None:
    generator = torch.Generator().manual_seed(0)
    for D, d in ((50, 7), (50, 100)):
        ratios = []
        for seed in range(400):
            x = torch.randn(d, generator=generator, dtype=torch.float64)
            projection = FastfoodProjection(D, d, seed=seed, dtype=torch.float64)
            ratios.append((projection(x).pow(2).sum() / x.pow(2).sum()).item())
        assert abs(np.mean(ratios) - 1.0) < 0.05, (D, d, np.mean(ratios))


def test_fastfood_memory_is_linear_in_D_not_d_times_D() -> None:
    projection = FastfoodProjection(5000, 1000, seed=0)
    assert projection.L == 8192
    assert projection.extra_memory_bytes() <= 48 * projection.L  # a few floats and indices per entry
    dense_bytes = 5000 * 1000 * 4
    assert projection.extra_memory_bytes() < dense_bytes / 50


def test_sparse_density_and_unit_column_norms() -> None:
    D, d = 2500, 200
    projection = SparseProjection(D, d, seed=1)
    assert projection.density == pytest.approx(1 / 50)
    assert projection.nnz / (D * d) == pytest.approx(1 / 50, rel=0.05)
    dense = projection.to_dense().double()
    assert dense.ne(0).sum().item() == projection.nnz
    # every column exactly unit norm, as the dense P (before the fix: unit only in expectation)
    norms = dense.norm(dim=0)
    assert torch.allclose(norms, torch.ones(d, dtype=torch.float64), atol=1e-6, rtol=0), (norms.min(), norms.max())
    # a projection so sparse that some columns draw no nonzero still has unit columns
    sparse = SparseProjection(20, 50, seed=0, density=0.02).to_dense().double()
    assert torch.allclose(sparse.norm(dim=0), torch.ones(50, dtype=torch.float64), atol=1e-6, rtol=0)
    x = torch.randn(d, requires_grad=True)
    y = torch.randn(D)
    out = projection(x)
    out.backward(y)
    assert torch.allclose(out, projection.to_dense() @ x.detach(), atol=1e-5)
    assert torch.allclose(x.grad, projection.to_dense().T @ y, atol=1e-5)
    assert projection.extra_memory_bytes() < 2 * (8 + 4) * projection.nnz + 8 * 2 * (D + d + 2)


def test_sparse_custom_density_and_bad_density() -> None:
    projection = SparseProjection(400, 100, seed=2, density=0.25)
    assert projection.nnz / (400 * 100) == pytest.approx(0.25, rel=0.05)
    assert SparseProjection(10, 3, seed=0, density=1.0).nnz == 30
    with pytest.raises(UserError, match="density"):
        SparseProjection(100, 10, density=1.5)


def test_make_projection_builds_each_kind_and_rejects_bad_input() -> None:
    assert isinstance(make_projection("dense", 30, 5, seed=0), DenseProjection)
    assert isinstance(make_projection("sparse", 30, 5, seed=0), SparseProjection)
    assert isinstance(make_projection("fastfood", 30, 5, seed=0, device="cpu"), FastfoodProjection)
    with pytest.raises(UserError, match="dense, sparse, fastfood"):
        make_projection("gaussian", 30, 5, seed=0)
    with pytest.raises(UserError, match="d=31.*D=30"):
        make_projection("dense", 30, 31, seed=0)
    with pytest.raises(UserError, match="d=0.*D=30"):
        make_projection("fastfood", 30, 0, seed=0)


# ----------------------------------------------------------------------------- SubspaceModel


def test_identity_subspace_sgd_equals_direct_sgd() -> None:
    direct = tiny_mlp()
    wrapped_net = copy.deepcopy(direct)
    D = sum(p.numel() for p in direct.parameters())
    subspace = SubspaceModel(wrapped_net, d=D, projection=IdentityProjection(D))
    data = torch.Generator().manual_seed(1)
    x = torch.randn(5, 16, 4, generator=data, dtype=torch.float64)
    y = torch.randint(0, 3, (5, 16), generator=data)
    direct_opt = torch.optim.SGD(direct.parameters(), lr=0.3)
    subspace_opt = torch.optim.SGD(subspace.parameters(), lr=0.3)
    for step in range(5):
        for model, optimizer in ((direct, direct_opt), (subspace, subspace_opt)):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[step]), y[step]).backward()
            optimizer.step()
    moved = flat_parameters(direct) - subspace.theta_0
    assert moved.abs().max() > 1e-3  # training really changed the weights
    assert torch.allclose(subspace.theta(), flat_parameters(direct), atol=1e-12, rtol=0)
    materialized = flat_parameters(subspace.materialize())
    assert torch.allclose(materialized, flat_parameters(direct), atol=1e-12, rtol=0)


@pytest.mark.parametrize("name", ["dense", "sparse", "fastfood"])
def test_gradcheck_of_loss_with_respect_to_theta_d(name: str) -> None:
    subspace = SubspaceModel(tiny_mlp(), d=5, projection=name, seed=4)
    assert all(b.dtype == torch.float64 for b in subspace.projection.buffers() if b.is_floating_point())
    x = torch.randn(7, 4, dtype=torch.float64)
    target = torch.randn(7, 3, dtype=torch.float64)

    def loss(theta_d: torch.Tensor) -> torch.Tensor:
        out = torch.func.functional_call(subspace, {"theta_d": theta_d}, (x,))
        return (out - target).pow(2).mean()

    theta_d = (0.1 * torch.randn(5, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(loss, (theta_d,))
    assert torch.autograd.gradgradcheck(loss, (theta_d,))


def test_subspace_starts_at_module_weights_and_exposes_sizes() -> None:
    net = tiny_mlp()
    subspace = SubspaceModel(net, d=10, projection="fastfood", seed=1)
    assert subspace.D == 4 * 6 + 6 + 6 * 3 + 3
    assert subspace.d == 10
    assert torch.equal(subspace.theta_d, torch.zeros(10, dtype=torch.float64))
    x = torch.randn(3, 4, dtype=torch.float64)
    assert torch.allclose(subspace(x), net(x))


def test_batchnorm_buffers_pass_through_and_only_theta_d_gets_gradients() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
    reference = copy.deepcopy(net)
    subspace = SubspaceModel(net, d=6, projection="fastfood", seed=2)
    assert [name for name, _ in subspace.named_parameters()] == ["theta_d"]
    assert list(subspace.parameters()) == [subspace.theta_d]

    x = torch.randn(32, 5)
    out = subspace(x)
    assert torch.allclose(out, reference(x), atol=1e-6)
    assert torch.allclose(net[1].running_mean, reference[1].running_mean)
    assert torch.allclose(net[1].running_var, reference[1].running_var)
    assert int(net[1].num_batches_tracked) == 1

    out.pow(2).mean().backward()
    assert subspace.theta_d.grad is not None and subspace.theta_d.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.parameters())
    before = [p.detach().clone() for p in net.parameters()]
    torch.optim.SGD(subspace.parameters(), lr=0.5).step()
    assert subspace.theta_d.abs().sum() > 0
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), before))

    subspace.eval()
    assert not net.training
    evaluated = subspace.materialize()
    assert not evaluated.training
    assert torch.allclose(subspace(x), evaluated(x), atol=1e-6)
    assert torch.allclose(flat_parameters(evaluated), subspace.theta().detach())
    assert evaluated is not net and torch.equal(evaluated[1].running_mean, net[1].running_mean)


def test_frozen_parameters_are_left_out_of_theta() -> None:
    net = tiny_mlp()
    net[0].bias.requires_grad_(False)
    subspace = SubspaceModel(net, d=4, projection="sparse", seed=0)
    assert subspace.D == 4 * 6 + 6 * 3 + 3
    x = torch.randn(2, 4, dtype=torch.float64)
    assert torch.allclose(subspace(x), net(x))
    assert torch.equal(subspace.materialize()[0].bias, net[0].bias)


def test_subspace_model_rejects_bad_configuration() -> None:
    net = tiny_mlp()
    D = sum(p.numel() for p in net.parameters())
    with pytest.raises(UserError, match="dense, sparse, fastfood"):
        SubspaceModel(net, d=3, projection="random")
    with pytest.raises(UserError, match=f"d={D + 1}.*D={D}"):
        SubspaceModel(net, d=D + 1)
    with pytest.raises(UserError, match="d=5"):
        SubspaceModel(net, d=5, projection=IdentityProjection(D))
    frozen = tiny_mlp().requires_grad_(False)
    with pytest.raises(UserError, match="no trainable parameters"):
        SubspaceModel(frozen, d=1)
