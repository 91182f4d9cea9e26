"""The README model card: Hub metadata (YAML) plus a body people read.

The metadata is produced by ``huggingface_hub.ModelCardData`` so the Hub indexes it: library,
tags, license, datasets, metrics (as ``model-index`` evaluation results when a dataset is named)
and ``base_model`` lineage. The body says how to load the model and cites the papers whose
methods it carries.

Example:
    >>> import timm
    >>> text = model_card(timm.create_model("resnet10t"), repo_id="me/resnet10t-demo",
    ...                   metrics={"top1": 61.5}, datasets=["imagenet-1k"])
    >>> text.startswith("---") and "library_name: timm" in text and "top1" in text
    True
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from timm.models import model_entrypoint
from torch import nn

from ._checks import check_mapping, check_module, check_names, check_text
from .config import architecture_of
from .methods import detect_methods

__all__ = ["infer_task", "model_card"]

DEFAULT_TAGS = ("timm", "knowledge-vision")


def infer_task(model: nn.Module) -> str:
    """The Hub pipeline tag for ``model``: ``model.pipeline_tag`` when it declares one, else
    ``"object-detection"`` for a detector (a model with ``predict`` and without timm's
    classifier interface ``get_classifier``), else ``"image-classification"``.

    Example:
        >>> import timm
        >>> infer_task(timm.create_model("resnet10t"))
        'image-classification'
    """
    declared = getattr(model, "pipeline_tag", None)
    if isinstance(declared, str) and declared:
        return declared
    if callable(getattr(model, "predict", None)) and not hasattr(model, "get_classifier"):
        return "object-detection"
    return "image-classification"


def _usage(repo_id: str, architecture: str) -> str:
    # timm can only rebuild the model once the module registering its architecture is imported
    root = model_entrypoint(architecture).__module__.split(".", 1)[0]
    imports = ""
    if root != "timm":
        imports = f"import {root}  # registers {architecture} in timm's factory\n"
    return (
        "```python\n"
        f"import timm\n{imports}\n"
        f'model = timm.create_model("hf-hub:{repo_id}", pretrained=True).eval()\n'
        "```\n\n"
        "or, with every check on the weights:\n\n"
        "```python\n"
        "import hub_knowledge\n\n"
        f'model = hub_knowledge.load("{repo_id}")\n'
        "```\n"
    )


def model_card(
    model: nn.Module,
    *,
    repo_id: str,
    metrics: Mapping[str, float] | None = None,
    datasets: Sequence[str] = (),
    license: str = "apache-2.0",
    tags: Sequence[str] = (),
    lineage: Mapping[str, str] | None = None,
    description: str | None = None,
    model_args: Mapping[str, Any] | None = None,
    task: str | None = None,
    architecture: str | None = None,
) -> str:
    """The README.md text for ``model`` published as ``repo_id``.

    Args:
        metrics: name -> value, e.g. ``{"top1": 71.3}``; evaluated on ``datasets[0]``.
        datasets: Hub dataset ids the model was trained / evaluated on.
        lineage: ``base_model`` (a Hub id, put in the metadata) and any other sources such as
            ``dictionary``; all are listed in the body.
        model_args: the build arguments shown in the details table.
        task: the Hub ``pipeline_tag``; ``None`` infers it (:func:`infer_task`).
        architecture: the name ``config.json`` rebuilds the model from, when it is not the
            model's own (e.g. ``with_rd`` for RDs attached after ``timm.create_model``).
    """
    check_module("model", model)
    check_text("repo_id", repo_id)
    check_text("license", license)
    check_mapping("metrics", metrics)
    check_mapping("lineage", lineage)
    check_names("datasets", datasets)
    check_names("tags", tags)
    task = task or infer_task(model)
    architecture = architecture or architecture_of(model)
    methods = detect_methods(model)
    lineage = dict(lineage or {})
    name = repo_id.split("/")[-1]
    metrics = dict(metrics or {})
    bad = {
        k: v for k, v in metrics.items() if not isinstance(v, (int, float)) or isinstance(v, bool)
    }
    if bad:
        raise ValueError(f"metrics={bad!r}: values must be numbers")
    # NaN / inf would go into the card's model-index as if they were results
    bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
    if bad:
        raise ValueError(f"metrics={bad!r}: values must be finite numbers (a failed evaluation?)")

    eval_results = None
    if metrics and datasets:
        eval_results = [
            EvalResult(
                task_type=task,
                dataset_type=datasets[0],
                dataset_name=datasets[0],
                metric_type=key,
                metric_value=float(value),
            )
            for key, value in metrics.items()
        ]
    data = ModelCardData(
        library_name="timm",
        license=license,
        tags=list(
            dict.fromkeys(
                [task, *DEFAULT_TAGS, *(t for m in methods for t in (m.tag, *m.tags)), *tags]
            )
        ),
        datasets=list(datasets) or None,
        metrics=list(metrics) or None,
        base_model=lineage.get("base_model"),
        pipeline_tag=task,
        model_name=name,
        eval_results=eval_results,
    )

    n_params = sum(p.numel() for p in model.parameters())
    lines = [f"# {name}", ""]
    lines.append(description or f"A `{architecture}` model for timm, published with hub-knowledge.")
    lines += ["", "## Model details", "", "| | |", "|---|---|"]
    lines.append(f"| architecture | `{architecture}` |")
    lines.append(f"| parameters | {n_params / 1e6:.2f} M |")
    lines.append(f"| classes | {getattr(model, 'num_classes', 'n/a')} |")
    for key, value in (model_args or {}).items():
        lines.append(f"| {key} | `{value}` |")
    for method in methods:
        paper = f"[{method.paper}]({method.paper_url})" if method.paper_url else method.paper
        lines.append(f"| method | {paper} |")
    if metrics:
        on = f" on {datasets[0]}" if datasets else ""
        lines += ["", f"## Metrics{on}", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in metrics.items()]
    if lineage:
        lines += ["", "## Lineage", ""]
        lines += [f"- {k}: `{v}`" for k, v in lineage.items()]
    lines += ["", "## Usage", "", _usage(repo_id, architecture)]
    if methods:
        lines += ["## Citation", ""]
        lines += [f"```bibtex\n{m.citation}\n```\n" for m in methods]
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines).rstrip() + "\n")
    return str(card)
