"""Shared test set-up: every test starts from the same seeded RNG state."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    """Seed Python, NumPy and torch before each test, so no test depends on run order."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """One intra-op torch thread for the test (tiny ops only lose time to thread sync, and
    training runs use ``runtime.threads: 1``); the previous count is restored after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
