"""Checkpoints: training state read back with the keys its reader needs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from da_seg.checkpoints import load_state, save_checkpoint
from da_seg.errors import DataError


def test_a_state_without_the_keys_its_reader_needs_is_one_error(tmp_path: Path) -> None:
    """Issue 43: a state.pt missing a key gave a KeyError traceback in the middle of resuming."""
    save_checkpoint(tmp_path / "last", {"m": torch.nn.Linear(1, 1)}, {"component": "x"}, state={"epoch": 2})
    assert load_state(tmp_path / "last") == {"epoch": 2}
    assert load_state(tmp_path / "last", required=("epoch",)) == {"epoch": 2}
    message = (
        f"{tmp_path / 'last/state.pt'}: the training state lacks 'optimizer', 'best' (written by another da_seg "
        f"version, or not a state file); delete the folder {tmp_path / 'last'} to retrain that stage from the start"
    )
    with pytest.raises(DataError, match=re.escape(message)):
        load_state(tmp_path / "last", required=("epoch", "optimizer", "best"))
    torch.save([1, 2], tmp_path / "last/state.pt")
    with pytest.raises(DataError, match=r"state\.pt: the training state is a list, not a dict of 'epoch'"):
        load_state(tmp_path / "last", required=("epoch",))
