"""Docstring examples of the modules that need no model run as written."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "dict_init.kmeans",
    "dict_init.sources",
    "dict_init.shards",
    "dict_init.normalize",
    "dict_init.projection",
    "dict_init.dictionary",
    "dict_init.extract",
    "dict_init.plot",
    "dict_init.encoders.text",
    "dict_init.encoders.base",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    tests = [t for t in finder.find(module) if t.examples]
    # Examples that build models (timm, the bundled sentence model) are covered elsewhere.
    tests = [
        t for t in tests if "extract_features" not in t.name and "SentenceEncoder" not in t.name
    ]
    assert tests or name.endswith("plot"), f"{name} lost its examples"
    for test in tests:
        runner.run(test)
    assert runner.failures == 0
