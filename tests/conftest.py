"""Fixtures shared by the whole suite: the real-data folder, the device, isolated plugin state."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REAL_DATA = Path(os.environ.get("DASEG_REAL_DATA", Path(__file__).resolve().parents[2] / "shared/data/real"))


@pytest.fixture(scope="session")
def real_data() -> Path:
    """``../shared/data/real`` (or $DASEG_REAL_DATA); CI guarantees it, a user's clone may lack it."""
    if not REAL_DATA.is_dir():
        pytest.skip(f"real test images not found at {REAL_DATA} (set DASEG_REAL_DATA)")
    return REAL_DATA


@pytest.fixture(scope="session")
def device() -> torch.device:
    """The same tests run on CPU here and on a GPU when one is present."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture(autouse=True, scope="session")
def _few_threads() -> None:
    torch.set_num_threads(min(2, torch.get_num_threads()))
