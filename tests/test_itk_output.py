"""ITK's console output kept off the terminal: what a read prints on the C-level stderr."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from da_seg.itk_output import ReadWarning, quietly


def _print_and_return(text: bytes, value: int = 7):
    def read() -> int:
        os.write(2, text)
        return value

    return read


def test_a_warning_on_a_successful_read_becomes_one_line_naming_the_file(capfd: pytest.CaptureFixture) -> None:
    text = b"WARNING: In /build/ITK/itkNiftiImageIO.cxx, line 1980\nNiftiImageIO (0x55d0c): sform not orthonormal\n\n"
    with pytest.warns(ReadWarning) as caught:
        assert quietly(Path("ct.nii.gz"), _print_and_return(text)) == 7
    assert [str(w.message) for w in caught] == ["ct.nii.gz: ITK warns: NiftiImageIO: sform not orthonormal"]
    assert capfd.readouterr().err == ""


def test_a_failed_read_prints_nothing_and_stderr_comes_back(capfd: pytest.CaptureFixture) -> None:
    def fail() -> None:
        os.write(2, b"MetaImage: Read: Cannot open data file\n")
        raise RuntimeError("ITK ERROR: cannot read")

    with pytest.raises(RuntimeError, match="cannot read"):
        quietly("ct.mhd", fail)
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"
