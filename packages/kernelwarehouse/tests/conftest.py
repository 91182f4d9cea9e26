"""Tests run single-threaded: inputs are tiny, and the CI cores are shared with other suites
(several OpenMP threads per process then mostly wait on each other)."""

import torch

torch.set_num_threads(1)
