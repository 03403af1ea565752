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


# Torch threads per test process: two, or the cores' share of each when pytest-xdist runs several processes (two
# processes of two threads on two cores ran ~3x slower than one thread each).
THREADS = max(1, min(2, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))


@pytest.fixture(autouse=True, scope="session")
def _few_threads() -> None:
    torch.set_num_threads(min(THREADS, torch.get_num_threads()))


TINY_CONFIG = """
task = "prostate_mr2ct"
seed = {seed}
output = "{out}"
baselines = {baselines}

[data]
spacing = [6.0, 5.0, 5.0]
size = [32, 32]

{data}

[translator]
name = "cyclegan"
width = 4
blocks = 1
disc_width = 4
batch_size = 2
epochs = {gan_epochs}
iterations_per_epoch = {gan_iterations}
sample_every = 1

[segmentation]
model = {{ name = "resunet25d", base = 4, depth = 2 }}
epochs = {seg_epochs}
batch_size = 8
context = 1

[runtime]
device = "cpu"
threads = {threads}  # not "auto": runs compared bit for bit (determinism, resume) need one thread count
"""


@pytest.fixture(scope="session")
def tiny_phantom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny phantom folder for the whole session (the first run writes it, later runs reuse it)."""
    return tmp_path_factory.mktemp("tiny_phantom")


TINY_PHANTOM = {"n_source": 4, "n_target": 3, "n_evaluation": 2, "n_target_labelled": 3, "paired": True}


def _phantom_table(folder: Path) -> str:
    lines = [f"{k} = {str(v).lower() if isinstance(v, bool) else v}" for k, v in TINY_PHANTOM.items()]
    return "[data.phantom]\n" + "\n".join(lines) + f'\ncache = "{folder}"'


@pytest.fixture(scope="session")
def tiny_phantom_data(tiny_phantom: Path) -> Path:
    """The tiny phantom's folders (source/, target/, evaluation/, ...), written if no run has written them yet:
    user-style data folders for tests that configure folders instead of the phantom."""
    from da_seg.api import get_task
    from da_seg.config import PhantomConfig, parse_config
    from da_seg.pipeline.dataset import ensure_phantom

    task = get_task(parse_config({"task": "prostate_mr2ct"}))
    return ensure_phantom(task, PhantomConfig(**TINY_PHANTOM, cache=tiny_phantom), tiny_phantom)


@pytest.fixture(scope="session")
def tiny_config(tiny_phantom: Path):
    """``tiny_config(folder, name)`` writes a tiny end-to-end config (32x32 slices, 4-wide nets); returns the path."""

    def make(
        folder: Path,
        name: str = "tiny",
        *,
        seed: int = 1,
        baselines: str = '["no_adaptation", "oracle"]',
        gan_epochs: int = 1,
        gan_iterations: int = 3,
        seg_epochs: int = 2,
        data: dict[str, Path] | None = None,
    ) -> Path:
        """``data``: data folders (``{"source": ..., "target": ...}``) instead of the phantom."""
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.toml"
        path.write_text(
            TINY_CONFIG.format(
                out=folder / "runs",
                data=_phantom_table(tiny_phantom)
                if data is None
                else "\n".join(f'{key} = "{path}"' for key, path in data.items()),
                seed=seed,
                baselines=baselines,
                gan_epochs=gan_epochs,
                gan_iterations=gan_iterations,
                seg_epochs=seg_epochs,
                threads=THREADS,
            )
        )
        return path

    return make
