"""Every task of the workspace: tests per member, integration, lint, demo, benchmarks.

Members are discovered from ``packages/*`` and ``integrations/*`` (any folder with a
``pyproject.toml``), so adding a package needs no change here.

    python -m nox -s tests integration   # every test
    python -m nox -s demo                # the end-to-end demo
    python -m nox -s "tests(member='implicit-knowledge')"
    python -m nox -s bench -- --quick
    python -m nox -s release             # every wheel + sdist, each wheel installed alone
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import nox
import tomllib

# uv takes torch and torchvision from PyPI as a matching pair and caches them, so every
# fresh environment after the first costs about a second (see SPEC.md, environment facts).
nox.options.default_venv_backend = "uv"
nox.options.sessions = ["lint", "tests", "integration"]
nox.options.reuse_existing_virtualenvs = False

ROOT = Path(__file__).parent
# Tests use small tensors, where OpenMP synchronisation costs more than a second thread gains
# (and distributed tests run two processes on two cores): one intra-op thread per process.
TEST_ENV = {"OMP_NUM_THREADS": "1"}


def _project(path: Path) -> dict:
    return tomllib.loads((path / "pyproject.toml").read_text())["project"]


MEMBERS: dict[str, Path] = {
    _project(p.parent)["name"]: p.parent
    for p in sorted(
        [*ROOT.glob("packages/*/pyproject.toml"), *ROOT.glob("integrations/*/pyproject.toml")]
    )
}


def _requirement_name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _siblings(member: str, seen: frozenset[str] = frozenset()) -> list[str]:
    """The workspace members ``member`` declares, directly or through another member."""
    project = _project(MEMBERS[member])
    declared = [
        *project.get("dependencies", []),
        *project.get("optional-dependencies", {}).get("test", []),
    ]
    seen = seen | {member}
    found: list[str] = []
    for requirement in declared:
        name = _requirement_name(requirement)
        if name in MEMBERS and name not in seen and name not in found:
            found.append(name)
            found.extend(s for s in _siblings(name, seen) if s not in found and s != member)
    return found


def _install(session: nox.Session, members: list[str]) -> None:
    # Local paths for siblings: the names are not resolved from PyPI, only from this checkout.
    # --no-sources: install exactly these paths, without uv's workspace discovery (which would
    # read every member, and so fail on a member still being written).
    paths = {m: MEMBERS[m] for m in members}
    for m in list(members):
        paths.update({s: MEMBERS[s] for s in _siblings(m)})
    session.install(
        "--no-sources", *[f"{p}[test]" if m in members else str(p) for m, p in paths.items()]
    )


@nox.session
@nox.parametrize("member", list(MEMBERS))
def tests(session: nox.Session, member: str) -> None:
    """One member alone, in a fresh environment holding only what it declares."""
    _install(session, [member])
    session.run("pytest", str(MEMBERS[member] / "tests"), *session.posargs, env=TEST_ENV)


@nox.session
def integration(session: nox.Session) -> None:
    """All members installed together, and the cross-package tests in ``tests/``."""
    _install(session, list(MEMBERS))
    session.run("pytest", "tests", *session.posargs, env=TEST_ENV)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def demo(session: nox.Session) -> None:
    """The end-to-end demo (see README.md)."""
    _install(session, list(MEMBERS))
    session.run("python", "examples/demo.py", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks; ``-- --quick`` for a cut-down set. Results land in benchmarks/results/."""
    _install(session, list(MEMBERS))
    session.install("matplotlib>=3.7")  # the plots beside the tables
    session.install("ultralytics>=8.3")  # the peer of bench_detection (benchmark-only, offline)
    session.run("python", "benchmarks/run.py", *session.posargs)


def _runtime_siblings(member: str) -> list[str]:
    """The members ``member`` needs at run time (its dependencies, not extras), transitively."""
    found: list[str] = []
    for requirement in _project(MEMBERS[member]).get("dependencies", []):
        name = _requirement_name(requirement)
        if name in MEMBERS and name not in found:
            found.append(name)
            found.extend(s for s in _runtime_siblings(name) if s not in found)
    return found


def _import_name(member: str) -> str:
    pyproject = tomllib.loads((MEMBERS[member] / "pyproject.toml").read_text())
    return Path(pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"][0]).name


@nox.session(venv_backend="none")
def release(session: nox.Session) -> None:
    """Build every member's wheel and sdist into ``dist/release/``, then install each wheel in a
    fresh environment with only the sibling wheels it depends on (given as files: a sibling is
    never looked up on an index; third-party dependencies come from PyPI) and import it.

    Publishing is then ``uv publish dist/release/*`` (see README.md, "Releasing").
    """
    began = time.perf_counter()
    out = ROOT / "dist" / "release"
    shutil.rmtree(out, ignore_errors=True)
    for path in MEMBERS.values():
        session.run("uv", "build", "--quiet", "--no-sources", "--out-dir", str(out), str(path),
                    external=True)  # fmt: skip
    wheels = {}
    for member in MEMBERS:
        stem = member.replace("-", "_")
        found = sorted(out.glob(f"{stem}-*.whl"))
        sdists = sorted(out.glob(f"{stem}-*.tar.gz"))
        if len(found) != 1 or len(sdists) != 1:
            session.error(
                f"{member}: expected one wheel and one sdist in {out}, found {found} {sdists}"
            )
        wheels[member] = found[0]
    envs = Path(session.create_tmp()) / "release-envs"
    shutil.rmtree(envs, ignore_errors=True)
    for member, wheel in wheels.items():
        env = envs / member
        siblings = [str(wheels[s]) for s in _runtime_siblings(member)]
        session.run("uv", "venv", "--quiet", str(env), external=True)
        session.run("uv", "pip", "install", "--quiet", "--python", str(env), "--no-sources",
                    str(wheel), *siblings, external=True)  # fmt: skip
        name = _import_name(member)
        code = (
            f"import {name}; print('{member}', {name}.__version__, 'imports from', {name}.__file__)"
        )
        session.run(str(env / "bin" / "python"), "-c", code, external=True, env=TEST_ENV)
    session.log(f"release: {len(wheels)} wheels + sdists in {out}, each installed alone and "
                f"imported, in {time.perf_counter() - began:.0f} s")  # fmt: skip
