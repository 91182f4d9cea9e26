"""The README's examples and every docstring example run as written."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import re
from pathlib import Path

import pytest
import torch

import rd_core

README = Path(__file__).resolve().parents[1] / "README.md"
MODULES = sorted(
    f"rd_core.{m.name}"
    for m in pkgutil.iter_modules(rd_core.__path__)
    if not m.name.startswith("_")
)


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


@pytest.mark.parametrize("index", range(len(_python_blocks(README.read_text()))))
def test_readme_example_runs(index, capsys):
    torch.manual_seed(0)
    code = _python_blocks(README.read_text())[index]
    exec(compile(code, f"README.md[{index}]", "exec"), {"__name__": "readme"})
    assert capsys.readouterr().out.strip()  # every example prints what it shows


@pytest.mark.parametrize("name", ["rd_core", *MODULES])
def test_docstring_examples(name):
    torch.manual_seed(0)
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
