import doctest
import importlib

import pytest

MODULES = [
    "timm_knowledge",
    "timm_knowledge._registry",
    "timm_knowledge.kw_paper",
    "timm_knowledge.rd_paper",
    "timm_knowledge.det_paper",
    "timm_knowledge.compress",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0
