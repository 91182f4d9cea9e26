import pytest
import torch

from implicit_knowledge import ImplicitAdd, ImplicitConcat, ImplicitMul, list_priors

PRIORS = ["vector", "network", "factorized"]


def test_priors_registered():
    assert set(PRIORS) <= set(list_priors())


@pytest.mark.parametrize("prior", PRIORS)
@pytest.mark.parametrize(
    ("cls", "mean"), [(ImplicitAdd, 0.0), (ImplicitMul, 1.0), (ImplicitConcat, 0.0)]
)
def test_initial_distribution(cls, mean, prior):
    # YOLOR 4.3: add/concat start near 0, mul near 1, spread 0.02 (here for every prior kind).
    values = torch.cat([cls(512, prior=prior).implicit().detach() for _ in range(8)])
    assert abs(values.mean().item() - mean) < 0.003
    assert 0.017 < values.std().item() < 0.023


@pytest.mark.parametrize(
    ("prior", "expected"),
    [("vector", 32), ("network", 64 + 32 * 64), ("factorized", 64 * 32 + 64)],
)
def test_parameter_overhead(prior, expected):
    # Prior dimension defaults to twice the channels (YOLOR Table 6).
    layer = ImplicitAdd(32, prior=prior)
    assert sum(p.numel() for p in layer.parameters()) == expected


def test_prior_dim_override():
    layer = ImplicitMul(8, prior="network", prior_dim=3)
    assert layer.prior.z.shape == (3,)
    assert layer.prior.weight.shape == (8, 3)


@pytest.mark.parametrize("prior", PRIORS)
def test_add_and_mul_combine_per_channel(prior):
    x = torch.randn(2, 6, 4, 5)
    add, mul = ImplicitAdd(6, prior=prior), ImplicitMul(6, prior=prior)
    a, m = add.implicit().detach(), mul.implicit().detach()
    torch.testing.assert_close(add(x), x + a.view(1, 6, 1, 1))
    torch.testing.assert_close(mul(x), x * m.view(1, 6, 1, 1))


def test_channels_last_tokens():
    x = torch.randn(2, 10, 6)
    add = ImplicitAdd(6, dim=-1)
    torch.testing.assert_close(add(x), x + add.implicit().detach())


def test_concat_appends_constant_channels():
    x = torch.randn(2, 3, 4, 4)
    cat = ImplicitConcat(5, in_channels=3)
    y = cat(x)
    assert y.shape == (2, 8, 4, 4)
    torch.testing.assert_close(y[:, :3], x)
    torch.testing.assert_close(y[1, 3:, 2, 1], cat.implicit().detach())


def test_gradients_reach_prior():
    layer = ImplicitMul(4, prior="factorized")
    layer(torch.randn(3, 4, 2, 2)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.parameters())


def test_reduced_keeps_value():
    layer = ImplicitAdd(7, prior="network")
    reduced = layer.reduced()
    assert reduced.prior_name == "vector"
    torch.testing.assert_close(reduced.implicit(), layer.implicit())


@pytest.mark.parametrize(
    ("make", "x", "match"),
    [
        (lambda: ImplicitAdd(8), torch.randn(2, 4, 3, 3), r"4 channels on dim 1; expected 8"),
        (lambda: ImplicitMul(8), torch.randn(8), r"rank >= 2"),
        (lambda: ImplicitConcat(2, in_channels=3), torch.randn(1, 4, 2, 2), r"expected 3"),
        (lambda: ImplicitAdd(8, dim=-1), torch.randn(2, 8, 5), r"5 channels on dim -1"),
    ],
)
def test_bad_input_is_named(make, x, match):
    with pytest.raises(ValueError, match=match):
        make()(x)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"channels": 4, "prior": "mlp"}, r"prior='mlp' is not a known prior name; valid: \["),
        ({"channels": 0}, r"channels=0 must be a positive integer"),
        ({"channels": 4, "dim": 2}, r"dim=2 must be 1"),
        ({"channels": 4, "prior": "network", "prior_dim": -1}, r"prior_dim=-1"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ImplicitAdd(**kwargs)
