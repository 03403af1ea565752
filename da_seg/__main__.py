"""``python -m da_seg`` (what ``torchrun ... -m da_seg run CONFIG`` launches)."""

from da_seg.cli import main

if __name__ == "__main__":
    main()
