"""Two gloo processes (torch.distributed, as torchrun starts them) train like one process on the global batch."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from da_seg.config import SegmentationConfig
from da_seg.distributed import DistInfo, barrier, init_distributed, is_main, shard, wrap_ddp
from da_seg.registry import TRANSLATORS
from da_seg.segmentation import train_segmenter

BATCH = 2  # per rank; the single process trains on 2 * BATCH


def _cases() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    cases = []
    for _ in range(2):
        image = np.tanh(rng.normal(0, 0.7, (5, 16, 16))).astype(np.float32)
        cases.append((image, (image > 0.3).astype(np.uint8)))
    return cases


def _settings(batch: int) -> SegmentationConfig:
    # instance norm: BatchNorm statistics would be per rank on CPU/gloo; no augmentation: same inputs everywhere
    return SegmentationConfig(
        model={"name": "resunet25d", "base": 4, "depth": 2, "norm": "instance"},
        context=1,
        epochs=1,
        batch_size=batch,
        lr=1e-2,
        loss={"name": "bce"},
        augment=[],
    )


def _translator(batch: int):
    return TRANSLATORS.build(
        {
            "name": "cyclegan",
            "blocks": 1,
            "width": 4,
            "disc_width": 4,
            "disc_layers": 1,
            "batch_size": batch,
            "epochs": 1,
            "iterations_per_epoch": 3,
            "pool_size": 0,
            "sample_every": 0,
            "keep_checkpoints": 0,
        }
    )


def _normalised_biases(translator) -> set[str]:
    """Checkpoint keys of conv biases that an affine-free instance norm (GroupNorm, a channel per group) follows:
    their gradient is 0 in exact arithmetic, so Adam turns rounding noise (which differs with the
    summation order) into steps of size lr."""
    keys = set()
    for net_name, net in translator.networks.items():
        for seq_name, seq in net.named_modules():
            if not isinstance(seq, torch.nn.Sequential):
                continue
            for (i, a), b in zip(enumerate(seq), list(seq)[1:], strict=False):
                conv = isinstance(a, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))
                if conv and isinstance(b, torch.nn.GroupNorm) and not b.affine:
                    keys.add(f"{net_name}.{seq_name + '.' if seq_name else ''}{i}.bias")
    return keys


def _train_both(workdir: Path, batch: int) -> None:
    cases = _cases()
    train_segmenter(
        {"name": "resunet25d", "base": 4, "depth": 2, "norm": "instance"},
        cases,
        _settings(batch),
        workdir=workdir / "seg",
        device="cpu",
        val_cases=[],
        iterations_per_epoch=3,
        progress=False,
    )
    images = [c[0] for c in cases]
    _translator(batch).fit(images[:1], images[1:], workdir=workdir / "gan", device="cpu")


def _worker(rank: int, world: int, port: int, workdir: str) -> None:
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    info = init_distributed("cpu")
    assert info == DistInfo(rank, world, rank) and is_main() == (rank == 0)
    _train_both(Path(workdir), BATCH)
    barrier()
    torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_single_process_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    net = torch.nn.Linear(2, 2)
    assert init_distributed("cpu") == DistInfo() and is_main()
    assert wrap_ddp(net, torch.device("cpu")) is net
    barrier()  # returns at once
    assert shard(torch.arange(5)).tolist() == [0, 1, 2, 3, 4]


def test_shard_splits_one_permutation_disjointly() -> None:
    perm = torch.tensor([4, 0, 3, 1, 2, 5, 6])
    parts = [shard(perm, r, 3).tolist() for r in range(3)]
    assert parts == [[4, 1, 6], [0, 2], [3, 5]]


def test_two_gloo_ranks_equal_one_process_on_the_global_batch(tmp_path: Path) -> None:
    """Segmenter (3 Adam steps) and CycleGAN (3 iterations): rank 0's weights equal one process's at batch 2x."""
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path / "ddp")), nprocs=2, join=True)
    torch.set_num_threads(1)
    _train_both(tmp_path / "single", 2 * BATCH)
    noise_only = _normalised_biases(_translator(1))
    assert "d_a.model.2.bias" in noise_only
    for part, checkpoint in (("seg", "model"), ("gan", "last")):
        ddp = load_file(tmp_path / "ddp" / part / checkpoint / "weights.safetensors")
        single = load_file(tmp_path / "single" / part / checkpoint / "weights.safetensors")
        assert ddp.keys() == single.keys()
        compared = [k for k in single if not (part == "gan" and k in noise_only)]
        assert len(compared) > len(single) // 2
        for key in compared:
            torch.testing.assert_close(ddp[key], single[key], rtol=1e-5, atol=1e-5, msg=f"{part} {key}")
    # rank 1 wrote nothing of its own: one log, rank 0's
    logged = (tmp_path / "ddp" / "seg" / "log.jsonl").read_text().splitlines()
    assert len(logged) == 1
