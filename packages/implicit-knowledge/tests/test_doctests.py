import doctest
import importlib

import pytest

MODULES = [
    "implicit_knowledge",
    "implicit_knowledge.layers",
    "implicit_knowledge.priors",
    "implicit_knowledge.fusion",
    "implicit_knowledge.blocks",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0
