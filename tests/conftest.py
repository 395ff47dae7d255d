"""Shared pytest fixtures."""

import pytest
import torch


@pytest.fixture(scope="module")
def single_torch_thread():
    """Tiny tensors: intra-op threads only add contention on the shared 2-core CI box (10-50x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
