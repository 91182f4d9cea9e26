"""Test settings for rd-core.

One intra-op thread: the tests use tiny tensors that gain nothing from threading, and on a
shared, oversubscribed CPU an OpenMP team of two waits at every barrier for a descheduled
thread. Measured here under load: one compress() run took 17 s with 2 threads, 0.3 s with 1.
"""

import pytest
import torch

torch.set_num_threads(1)


def _randomise(module: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.5)
        for name, b in module.named_buffers():
            if name.endswith("running_mean"):
                b.normal_(0, 0.2)
            elif name.endswith("running_var"):
                b.uniform_(0.5, 1.5)
    return module


@pytest.fixture
def randomise():
    """``randomise(module)`` gives every parameter and BatchNorm statistic non-trivial values
    (in place, returning the module), so checks cannot pass by luck."""
    return _randomise
