"""Bad values on the public entry points fail with a message naming the argument (issue 16)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from implicit_knowledge import (
    ImplicitAdd,
    ImplicitConcat,
    ImplicitFeatureAlignment,
    ImplicitMul,
    create_prior,
    fuse,
    implicit_layers,
    list_priors,
    register_prior,
)
from implicit_knowledge.priors import VectorPrior


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"std": -1.0}, ValueError, r"std=-1.0 must be a finite number >= 0.0"),
        ({"std": math.nan}, ValueError, r"std=nan must be"),
        ({"std": math.inf}, ValueError, r"std=inf must be"),
        ({"mean": math.nan}, ValueError, r"mean=nan must be"),
        ({"mean": "1"}, TypeError, r"mean='1' must be a real number"),
        ({"std": None}, TypeError, r"std=None must be a real number"),
        ({"channels": 0}, ValueError, r"channels=0 must be a positive integer"),
        ({"channels": True}, ValueError, r"channels=True must be"),
        ({"channels": 2.0}, ValueError, r"channels=2.0 must be"),
        ({"prior_dim": -3}, ValueError, r"prior_dim=-3 must be"),
        ({"name": ["vector"]}, ValueError, r"prior=\['vector'\] is not a known prior"),
        ({"name": ""}, ValueError, r"prior='' is not a known prior name; valid: \['factorized'"),
    ],
)
def test_create_prior_refuses_bad_values(kwargs, error, message):
    args = {"name": "vector", "channels": 4, "mean": 0.0, "std": 0.02, **kwargs}
    with pytest.raises(error, match=message):
        create_prior(**args)


def test_zero_std_is_a_valid_constant_start():
    prior = create_prior("network", channels=4, mean=1.0, std=0.0)
    torch.testing.assert_close(prior().detach(), torch.ones(4))


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: ImplicitAdd(-1), r"channels=-1 must be"),
        (lambda: ImplicitMul(4, prior="nope"), r"prior='nope' is not a known prior"),
        (lambda: ImplicitAdd(4, dim=0), r"dim=0 must be 1"),
        (lambda: ImplicitAdd(4, dim=True), r"dim=True must be 1"),
        (lambda: ImplicitConcat(4, in_channels=0), r"in_channels=0 must be"),
        (lambda: ImplicitFeatureAlignment(32), r"channels=32 must be a non-empty"),
        (lambda: ImplicitFeatureAlignment([]), r"channels=\[\] must be"),
        (lambda: ImplicitFeatureAlignment([8, 0]), r"channels=0 must be"),
    ],
)
def test_layers_refuse_bad_values(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_feature_alignment_wants_a_list_of_maps():
    with pytest.raises(TypeError, match=r"features=Tensor must be a list of 2 feature maps"):
        ImplicitFeatureAlignment([4, 8])(torch.randn(1, 4, 2, 2))


def test_fuse_and_implicit_layers_refuse_non_modules():
    with pytest.raises(TypeError, match=r"model=NoneType must be a torch.nn.Module"):
        implicit_layers(None)
    with pytest.raises(TypeError, match=r"inplace='yes' must be True or False"):
        fuse(nn.Sequential(), inplace="yes")


def test_registering_a_taken_prior_name_names_the_registry_and_the_holder():
    with pytest.raises(
        ValueError,
        match=r"priors registry: name='vector' is already registered by "
        r"implicit_knowledge.priors.VectorPrior",
    ):

        @register_prior("vector")
        class Other(VectorPrior):
            pass

    assert create_prior("vector", 3, 0.0, 0.02).__class__ is VectorPrior  # not overwritten
    with pytest.raises(TypeError, match=r"name=None must be a non-empty string"):
        register_prior(None)
    with pytest.raises(TypeError, match=r"must be an nn.Module subclass"):
        register_prior("test_not_a_module")(len)
    assert "test_not_a_module" not in list_priors()


def test_fold_registry_refuses_a_second_rule_for_the_same_case():
    from implicit_knowledge.fusion import _register

    with pytest.raises(ValueError, match=r"folds registry: \(ImplicitAdd, 'after'\) is already"):
        _register(ImplicitAdd, "after")(lambda layer, implicit: layer)
