"""Feature capture: the input an RD module receives inside a model, without running the rest.

Compression and inspection need the backbone features that reach an RD. A forward pre-hook
records them and stops the forward pass right there, so the layers after the RD (neck, head)
cost nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from ._checks import check_data, check_int, check_module, check_tensor

__all__ = ["batch_images", "find_parent", "iter_rd_inputs", "rd_inputs"]

_IMAGE_KEYS = ("image", "images", "pixel_values", "input", "inputs")


def batch_images(batch: Any) -> torch.Tensor:
    """The image tensor of a data-loader batch: a tensor, ``(images, ...)`` or ``{"image": ...}``.

    Example:
        >>> import torch
        >>> batch_images((torch.zeros(2, 3, 8, 8), torch.tensor([0, 1]))).shape
        torch.Size([2, 3, 8, 8])
    """
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    if isinstance(batch, Mapping):
        for key in _IMAGE_KEYS:
            if isinstance(batch.get(key), torch.Tensor):
                return batch[key]
    raise TypeError(
        f"data: a batch must be a tensor, a tuple/list whose first item is the image tensor, or "
        f"a mapping with one of the keys {list(_IMAGE_KEYS)}; got {type(batch).__name__}"
    )


class _Stop(Exception):
    pass


def _model_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


@torch.no_grad()
def rd_inputs(model: nn.Module, rd: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Run ``model`` on ``images`` until ``rd`` is called and return what ``rd`` receives.

    Example:
        >>> import timm, torch
        >>> from rd_core import attach
        >>> model = timm.create_model("resnet18")
        >>> rd = attach(model, at="layer2", num_atoms=8, image_size=32)
        >>> rd_inputs(model, rd, torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 128, 4, 4])
    """
    check_module("rd_inputs", model)
    check_module("rd_inputs", rd, "rd")
    check_tensor("rd_inputs", "images", images, (4,))
    captured: list[torch.Tensor] = []

    def hook(_module: nn.Module, inputs: tuple[Any, ...]) -> None:
        captured.append(inputs[0])
        raise _Stop

    handle = rd.register_forward_pre_hook(hook)
    try:
        model(images.to(_model_device(model)))
    except _Stop:
        pass
    finally:
        handle.remove()
    if not captured:
        raise RuntimeError("rd: the RD module was not called during the model's forward pass")
    return captured[0]


def iter_rd_inputs(
    model: nn.Module | None,
    rd: nn.Module,
    data: Iterable[Any] | torch.Tensor,
    max_batches: int | None = None,
) -> Iterator[torch.Tensor]:
    """Yield RD inputs for each batch of ``data`` (model inputs, or RD inputs when no model)."""
    # checked here, not on the first ``next``: a bad argument fails at the call
    check_module("iter_rd_inputs", model, optional=True)
    check_module("iter_rd_inputs", rd, "rd")
    check_data("iter_rd_inputs", data)
    check_int("iter_rd_inputs", "max_batches", max_batches, 1, optional=True)
    return _iter_rd_inputs(model, rd, data, max_batches)


def _iter_rd_inputs(
    model: nn.Module | None,
    rd: nn.Module,
    data: Iterable[Any] | torch.Tensor,
    max_batches: int | None,
) -> Iterator[torch.Tensor]:
    if isinstance(data, torch.Tensor):
        data = [data]
    for i, batch in enumerate(data):
        if max_batches is not None and i >= max_batches:
            break
        images = batch_images(batch)
        if model is None:
            param = next(rd.parameters(), None)
            yield images if param is None else images.to(param.device)
        else:
            yield rd_inputs(model, rd, images)


def find_parent(model: nn.Module, module: nn.Module) -> tuple[nn.Module, str, str]:
    """``(parent, attribute, full name)`` of ``module`` inside ``model``."""
    for name, candidate in model.named_modules():
        if candidate is module and name:
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            return parent, child, name
    raise ValueError(
        f"rd: the given {type(module).__name__} is not a submodule of {type(model).__name__}; "
        f"attach it first (rd_core.attach) or pass the RD that attach() returned"
    )
