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
