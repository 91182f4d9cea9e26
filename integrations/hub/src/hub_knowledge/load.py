"""Load a model saved by :func:`hub_knowledge.save_for_hub`, from a folder or the Hub.

Repositories go through ``huggingface_hub.hf_hub_download``, so the local cache, ``HF_HUB_CACHE``
and ``HF_HUB_OFFLINE=1`` behave as everywhere else in the Hugging Face ecosystem. The model is
rebuilt by timm's factory from ``config.json`` and the weights are checked key by key and shape by
shape before they are loaded.

Example:
    >>> import tempfile, timm, torch
    >>> from hub_knowledge import load, save_for_hub
    >>> model = timm.create_model("resnet10t", num_classes=4).eval()
    >>> folder = save_for_hub(model, tempfile.mkdtemp())
    >>> clone = load(folder).eval()
    >>> x = torch.randn(1, 3, 32, 32)
    >>> bool(torch.equal(clone(x), model(x)))
    True
"""

from __future__ import annotations

import contextlib
import importlib
import os
from pathlib import Path
from typing import Any

import timm
from huggingface_hub import constants, get_hf_file_metadata, hf_hub_download, hf_hub_url
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
from torch import nn

from ._checks import as_path, check_text
from .checkpoint import CheckpointError, load_weights, read_json
from .config import CONFIG_NAME
from .save import WEIGHTS_NAME

__all__ = ["load", "resolve_files"]

HUB_PREFIX = "hf-hub:"
# Packages whose import may be triggered by a config's ``entrypoint_module`` to register an
# architecture. Only these: a downloaded config must never choose arbitrary code to import.
TRUSTED_ENTRYPOINT_ROOTS = (
    "timm",
    "timm_knowledge",
    "kernelwarehouse",
    "rd_core",
    "implicit_knowledge",
    "yolo_heads",
)


def resolve_files(
    source: str | os.PathLike,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    filenames: tuple[str, ...] = (CONFIG_NAME, WEIGHTS_NAME),
) -> dict[str, Path]:
    """Local paths of ``filenames`` for a folder, or a Hub repo id (downloaded / from cache)."""
    text = os.fspath(as_path("source", source))
    check_text("revision", revision, optional=True)
    if cache_dir is not None:
        as_path("cache_dir", cache_dir)
    if text.startswith(HUB_PREFIX):
        text = text[len(HUB_PREFIX) :]
    elif Path(text).exists():
        folder = Path(text)
        if not folder.is_dir():
            raise ValueError(f"source={text!r} is a file; give the folder that holds {filenames}")
        paths = {name: folder / name for name in filenames}
        missing = [name for name, path in paths.items() if not path.is_file()]
        if missing:
            raise FileNotFoundError(f"source={text!r} is a folder without {missing}")
        return paths
    elif os.path.isabs(text) or text.startswith(".") or text.count("/") > 1 or "\\" in text:
        raise FileNotFoundError(
            f"source={text!r} is neither an existing folder nor a Hub repo id ('org/name')"
        )
    local_only = constants.is_offline_mode() or not _hub_reachable(
        text, filenames[0], revision, token
    )
    paths = {}
    for name in filenames:
        try:
            paths[name] = Path(
                hf_hub_download(
                    text,
                    name,
                    revision=revision,
                    cache_dir=cache_dir,
                    token=token,
                    library_name="hub-knowledge",
                    local_files_only=local_only,
                )
            )
        except LocalEntryNotFoundError:
            if not local_only:
                raise
            cache = cache_dir if cache_dir is not None else constants.HF_HUB_CACHE
            why = (
                "HF_HUB_OFFLINE=1 is set"
                if constants.is_offline_mode()
                else f"the Hub ({constants.ENDPOINT}) cannot be reached"
            )
            raise FileNotFoundError(
                f"source={text!r}: {name} is not in the local cache ({cache}) and {why}; "
                "download it once while online, or place a saved folder in the cache with "
                "hub_knowledge.add_to_cache (HF_HUB_OFFLINE=1 then loads it without the network)"
            ) from None
    return paths


def _hub_reachable(repo_id: str, filename: str, revision: str | None, token) -> bool:
    """One HEAD request without retries: huggingface_hub retries a failed connection with
    backoff for ~23 s before it looks in the cache; without a network that is only a wait."""
    url = hf_hub_url(repo_id, filename, revision=revision)
    try:
        get_hf_file_metadata(url, token=token, timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except HfHubHTTPError:
        return True  # the Hub answered (even "not found"): it is reachable
    except ValueError:
        raise  # a malformed repo id or revision, not a network problem
    except Exception:
        # no connection (connect / timeout errors of the HTTP client huggingface_hub uses,
        # whose classes changed between its versions; OfflineModeIsEnabled as well)
        return False
    return True
    return True


def _ensure_registered(architecture: str, config: dict[str, Any]) -> None:
    if timm.is_model(architecture):
        return
    module = config.get("knowledge", {}).get("entrypoint_module", "")
    if module.split(".", 1)[0] in TRUSTED_ENTRYPOINT_ROOTS:
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
    if not timm.is_model(architecture):
        requires = config.get("knowledge", {}).get("requires") or ["timm-knowledge"]
        raise ValueError(
            f"architecture={architecture!r} from config.json is not registered in timm's factory; "
            f"install and import the package that registers it (module {module or '?'!r}; "
            f"packages {requires})"
        )


def load(
    source: str | os.PathLike,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    **model_kwargs: Any,
) -> nn.Module:
    """Rebuild and return the model in ``source``: a folder, ``org/name`` or ``hf-hub:org/name``.

    ``model_kwargs`` go to ``timm.create_model`` on top of the recorded build arguments (for
    example ``drop_path_rate``); a change of shape (another ``num_classes``) is reported as a
    checkpoint that does not fit.

    Raises:
        CheckpointError: truncated weights, or weights for another architecture.
        ValueError: an architecture timm does not know.
    """
    files = resolve_files(source, revision=revision, cache_dir=cache_dir, token=token)
    config = read_json(files[CONFIG_NAME])
    architecture = config.get("architecture")
    if not architecture:
        raise CheckpointError(f"{files[CONFIG_NAME]} names no 'architecture'")
    _ensure_registered(architecture, config)
    # timm's local-dir source applies config.json exactly as its hf-hub source would
    folder = files[CONFIG_NAME].parent
    model = timm.create_model(f"local-dir:{folder}", pretrained=False, **model_kwargs)
    return load_weights(model, files[WEIGHTS_NAME], architecture=architecture)
