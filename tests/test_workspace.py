"""Checks every workspace member against the layout contract (SPEC.md), all installed together."""

from __future__ import annotations

import importlib
import re
from importlib import metadata
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
MEMBER_DIRS = sorted(
    p.parent
    for p in [*ROOT.glob("packages/*/pyproject.toml"), *ROOT.glob("integrations/*/pyproject.toml")]
)


def _project(path: Path) -> dict:
    return tomllib.loads((path / "pyproject.toml").read_text())


def _import_name(path: Path) -> str:
    packages = [p.name for p in (path / "src").iterdir() if (p / "__init__.py").exists()]
    assert len(packages) == 1, f"{path}/src must hold exactly one package, found {packages}"
    return packages[0]


@pytest.fixture(params=MEMBER_DIRS, ids=lambda p: p.name)
def member(request) -> Path:
    return request.param


def test_member_layout(member: Path):
    config = _project(member)
    assert config["build-system"]["build-backend"] == "hatchling.build"
    assert config["project"]["dynamic"] == ["version"]
    assert "test" in config["project"].get("optional-dependencies", {})
    for name in ("README.md", "CHANGELOG.md", "tests"):
        assert (member / name).exists(), f"{member.name} lacks {name}"


def test_installed_version_is_the_single_source(member: Path):
    name = _project(member)["project"]["name"]
    module = importlib.import_module(_import_name(member))
    assert module.__version__ == metadata.version(name)


def test_sibling_dependencies_are_ranged(member: Path):
    names = {_project(p)["project"]["name"] for p in MEMBER_DIRS}
    for requirement in _project(member)["project"].get("dependencies", []):
        dist = re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0]
        if dist in names:
            assert re.search(r">=.*,\s*<", requirement), (
                f"{member.name}: {requirement!r} needs a range"
            )
