"""Publish and load knowledge-injected timm models and dictionaries on the Hugging Face Hub.

Example:
    >>> import tempfile, timm, torch
    >>> import hub_knowledge
    >>> model = timm.create_model("resnet10t", num_classes=4).eval()
    >>> folder = hub_knowledge.save_for_hub(model, tempfile.mkdtemp(), model_name="me/demo")
    >>> clone = hub_knowledge.load(folder).eval()
    >>> x = torch.randn(2, 3, 32, 32)
    >>> bool(torch.equal(clone(x), model(x)))
    True
"""

from .cache import add_to_cache
from .card import model_card
from .checkpoint import CheckpointError, load_weights, read_state_dict, save_weights
from .config import build_config
from .dictionaries import load_dictionary, push_dictionary_to_hub, save_dictionary_for_hub
from .load import load
from .push import push_folder, push_to_hub
from .save import save_for_hub

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "__version__",
    "add_to_cache",
    "build_config",
    "load",
    "load_dictionary",
    "load_weights",
    "model_card",
    "push_dictionary_to_hub",
    "push_folder",
    "push_to_hub",
    "read_state_dict",
    "save_dictionary_for_hub",
    "save_for_hub",
    "save_weights",
]
