import pytest
import torch

from implicit_knowledge import ImplicitLayer


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _scramble(model: torch.nn.Module, scale: float = 0.5) -> torch.nn.Module:
    """Move every implicit parameter far from its initialisation, as training would.

    Near-initial constants (0 for add, 1 for mul) would let a wrong fold pass unnoticed.
    """
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, ImplicitLayer):
                for p in module.prior.parameters():
                    p.add_(torch.randn_like(p) * scale)
    return model


@pytest.fixture
def scramble():
    return _scramble
