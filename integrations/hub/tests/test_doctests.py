import doctest
import importlib

import pytest

MODULES = [
    "hub_knowledge",
    "hub_knowledge.cache",
    "hub_knowledge.card",
    "hub_knowledge.checkpoint",
    "hub_knowledge.config",
    "hub_knowledge.dictionaries",
    "hub_knowledge.load",
    "hub_knowledge.methods",
    "hub_knowledge.save",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0
