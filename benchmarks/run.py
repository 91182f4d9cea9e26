"""Run the benchmarks and write their reports to ``benchmarks/results/<name>.md``.

Every ``benchmarks/bench_<name>.py`` defines ``main(quick: bool) -> str`` returning a Markdown
body (tables of ratios measured in the same run). This runner adds the header every result
states: machine, threads, library versions, date and the command.

    python benchmarks/run.py [--quick] [--only kernelwarehouse implicit]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import platform
import sys
from importlib import metadata
from pathlib import Path

import torch

HERE = Path(__file__).parent
RESULTS = HERE / "results"


def _versions() -> str:
    names = [
        "torch",
        "timm",
        "implicit-knowledge",
        "kernelwarehouse",
        "rd-core",
        "dict-init",
        "yolo-heads",
        "scikit-learn",
        "faiss-cpu",
    ]
    found = []
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found.append(f"{name} {metadata.version(name)}")
    return ", ".join(found)


def header(name: str, argv: list[str], command: str | None = None) -> str:
    """The lines every result file starts with; ``command`` replaces the run.py command line."""
    command = command or f"`python benchmarks/run.py {' '.join(argv)}` (or `nox -s bench`)"
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (
        f"# {name}\n\n"
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}\n"
        f"- machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
        f"GPU: {gpu}\n"
        f"- threads: torch {torch.get_num_threads()}\n"
        f"- versions: Python {platform.python_version()}, {_versions()}\n"
        f"- command: {command}\n\n"
    )


def write_report(name: str, body: str, argv: list[str], command: str | None = None) -> Path:
    """``results/<name>.md``: the header and ``body``, replaced in one step."""
    out = RESULTS / f"{name}.md"
    tmp = out.with_suffix(".md.tmp")
    tmp.write_text(header(name, argv, command) + body)
    tmp.replace(out)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="cut-down set (under 5 minutes)")
    parser.add_argument("--only", nargs="*", default=None, help="benchmark names to run")
    args = parser.parse_args(argv)
    RESULTS.mkdir(exist_ok=True)
    scripts = sorted(HERE.glob("bench_*.py"))
    for script in scripts:
        name = script.stem.removeprefix("bench_")
        if args.only and name not in args.only:
            continue
        spec = importlib.util.spec_from_file_location(script.stem, script)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses and pickling look modules up by name
        spec.loader.exec_module(module)
        print(f"== {name} ==", flush=True)
        body = module.main(quick=args.quick)
        write_report(name, body, argv)
        print(body, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
