"""Test settings for rd-core.

One intra-op thread: the tests use tiny tensors that gain nothing from threading, and on a
shared, oversubscribed CPU an OpenMP team of two waits at every barrier for a descheduled
thread. Measured here under load: one compress() run took 17 s with 2 threads, 0.3 s with 1.
"""

import torch

torch.set_num_threads(1)
