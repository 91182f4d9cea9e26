"""Registries never overwrite silently: a taken name is refused, naming what holds it."""

from __future__ import annotations

import pytest

from kernelwarehouse import EXECUTORS, GROUPING_RULES, register_executor, register_grouping


def test_grouping_name_taken_is_refused():
    before = GROUPING_RULES["resnet"]
    with pytest.raises(ValueError, match=r"'resnet' is already in the grouping registry.*models"):
        register_grouping("resnet")(lambda model: None)
    assert GROUPING_RULES["resnet"] is before  # untouched


def test_new_grouping_name_registers_and_bad_names_are_refused():
    def rule(model):
        return None

    try:
        assert register_grouping("test_only_rule")(rule) is rule
        assert GROUPING_RULES["test_only_rule"] is rule
    finally:
        GROUPING_RULES.pop("test_only_rule", None)
    with pytest.raises(TypeError, match="name=''"):
        register_grouping("")
    with pytest.raises(TypeError, match="not callable"):
        register_grouping("test_only_rule")(42)


def test_executor_name_taken_is_refused():
    before = EXECUTORS["fast"]
    with pytest.raises(ValueError, match=r"'fast' is already in the executor registry.*kw_forward"):
        register_executor("fast", lambda *args: None)
    assert EXECUTORS["fast"] is before
    try:
        register_executor("test_only_executor", before)
        assert EXECUTORS["test_only_executor"] is before
    finally:
        EXECUTORS.pop("test_only_executor", None)
    with pytest.raises(TypeError, match="name=None"):
        register_executor(None, before)
