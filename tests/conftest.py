"""Shared pytest fixtures."""

import os

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _private_cache_dir(tmp_path_factory):
    """The disk cache (panolam.cache) of the whole run goes to a temporary directory, never the real
    home; subprocesses (CLI tests) inherit it through the environment."""
    before = os.environ.get("PANOLAM_CACHE_DIR")
    os.environ["PANOLAM_CACHE_DIR"] = str(tmp_path_factory.mktemp("panolam-cache"))
    yield
    if before is None:
        os.environ.pop("PANOLAM_CACHE_DIR", None)
    else:
        os.environ["PANOLAM_CACHE_DIR"] = before


@pytest.fixture(scope="module")
def single_torch_thread():
    """Tiny tensors: intra-op threads only add contention on the shared 2-core CI box (10-50x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
