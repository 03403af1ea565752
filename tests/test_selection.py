"""Label-free selectors: hand-computed criteria on fake translators/segmenters, and the audit on a tiny CycleGAN."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from da_seg.config import SegmentationConfig
from da_seg.errors import ConfigError
from da_seg.registry import SELECTORS
from da_seg.segmentation import train_segmenter
from da_seg.selection import (
    CheckpointAudit,
    audit_translator_checkpoints,
    best_checkpoint,
    checkpoints,
    kid_from_features,
    rank_checkpoints,
    snd_from_features,
    spearman_with_truth,
)
from da_seg.translators.cyclegan import CycleGAN


def disks(seed: int, cases: int = 2, depth: int = 4, size: int = 24) -> list[tuple[np.ndarray, np.ndarray]]:
    """MR-like cases: a bright disk (the structure) on a dark background, with its mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = []
    for _ in range(cases):
        masks = []
        for _ in range(depth):
            cy, cx, r = rng.uniform(8, size - 8), rng.uniform(8, size - 8), rng.uniform(4, 6)
            masks.append((yy - cy) ** 2 + (xx - cx) ** 2 <= r**2)
        mask = np.stack(masks).astype(np.uint8)
        image = np.where(mask, 0.6, -0.8) + rng.normal(0, 0.05, mask.shape)
        out.append((image.astype(np.float32), mask))
    return out


class Maps:
    """A fake translator: ``ab`` and ``ba`` are array functions."""

    context = 0

    def __init__(self, ab, ba=None) -> None:
        self.ab, self.ba = ab, ba or ab

    def translate(self, volume):
        return self.ab(volume)

    def translate_slices(self, x, direction="ab"):
        return (self.ab if direction == "ab" else self.ba)(x)


class Fixed:
    """A fake segmenter whose probabilities are ``fn(volume)``."""

    def __init__(self, fn) -> None:
        self.fn = fn

    def predict(self, volume):
        return self.fn(volume).astype(np.float32)


SOURCE = disks(0)
TARGET = [-im for im, _ in disks(1)]  # CT-like: the same anatomy with inverted contrast, other subjects


@pytest.mark.parametrize(
    ("name", "kind", "higher"),
    [
        ("cycle_error", "translator", False),
        ("identity_error", "translator", False),
        ("kid", "translator", False),
        ("proxy_dice", "translator", True),
        ("mean_entropy", "segmenter", False),
        ("flip_agreement", "segmenter", True),
        ("soft_neighbourhood_density", "segmenter", True),
    ],
)
def test_registered_selectors(name: str, kind: str, higher: bool) -> None:
    selector = SELECTORS.create(name)
    assert (selector.name, selector.kind, selector.higher_is_better) == (name, kind, higher)


def test_cycle_and_identity_errors_hand_computed() -> None:
    mean_a = np.mean([np.abs(im).mean() for im, _ in SOURCE])  # equal-sized volumes: mean of means
    mean_b = np.mean([np.abs(im).mean() for im in TARGET])
    lossy = Maps(lambda x: 0.5 * x, lambda x: x)  # both cycles give 0.5 x
    cycle = SELECTORS.create("cycle_error", max_slices=None)
    assert cycle.score(lossy, source=SOURCE, target=TARGET) == pytest.approx(0.5 * (0.5 * mean_a + 0.5 * mean_b))
    assert SELECTORS.create("cycle_error", directions="source", max_slices=None).score(
        lossy, source=SOURCE, target=TARGET
    ) == pytest.approx(0.5 * mean_a)
    assert cycle.score(Maps(lambda x: -x), source=SOURCE, target=TARGET) == pytest.approx(0.0, abs=1e-7)
    # identity: |G_ab(b) - b| = 0.5 |b|, |G_ba(a) - a| = 0
    identity = SELECTORS.create("identity_error", max_slices=None)
    assert identity.score(lossy, source=SOURCE, target=TARGET) == pytest.approx(0.25 * mean_b)


def test_cycle_error_needs_both_generators() -> None:
    class OneWay:
        name = "histogram_matching"

        def translate(self, volume):
            return volume

    with pytest.raises(ConfigError, match="needs a translator with both generators"):
        SELECTORS.create("cycle_error").score(OneWay(), source=SOURCE, target=TARGET)


def test_kid_hand_computed_and_ranks_translations() -> None:
    # k(u, v) = (u v + 1)^3 in 1-D: XX term k(0,1) = 1, YY term k(1,2) = 27, XY mean (1 + 1 + 8 + 27) / 4
    assert kid_from_features([[0.0], [1.0]], [[1.0], [2.0]]) == pytest.approx(1 + 27 - 2 * 37 / 4)
    kid = SELECTORS.create("kid", size=24, width=8)
    right = kid.score(Maps(lambda v: -v), source=SOURCE, target=TARGET)  # the contrast the target has
    wrong = kid.score(Maps(lambda v: v), source=SOURCE, target=TARGET)  # no adaptation
    assert abs(right) < 0.1 * wrong


def test_proxy_dice_rewards_kept_anatomy() -> None:
    proxy = SELECTORS.create("proxy_dice", steps=60, size=24, lr=1e-2)
    kept = proxy.score(Maps(lambda v: -v), source=SOURCE, target=TARGET)
    lost = proxy.score(Maps(lambda v: np.zeros_like(v)), source=SOURCE, target=TARGET)
    assert kept > 0.8 and lost < 0.5, (kept, lost)
    assert proxy.score(Maps(lambda v: -v), source=SOURCE, target=TARGET) == kept  # seeded


def test_mean_entropy_and_flip_agreement_hand_computed() -> None:
    volumes = list(TARGET)
    half = Fixed(lambda v: np.full(v.shape, 0.5))
    sure = Fixed(lambda v: (v < 0).astype(float))
    assert SELECTORS.create("mean_entropy").score(half, target=volumes) == pytest.approx(math.log(2))
    assert SELECTORS.create("mean_entropy").score(sure, target=volumes) < 1e-5
    flip = SELECTORS.create("flip_agreement")
    assert flip.score(sure, target=volumes) == 1.0  # a pointwise rule is flip-equivariant

    def left_half(v):  # always the left columns, whatever the image: mirrored back it is the right half
        out = np.zeros(v.shape)
        out[..., : v.shape[-1] // 2] = 1
        return out

    assert flip.score(Fixed(left_half), target=volumes) == 0.0
    assert flip.score(Fixed(np.zeros_like), target=volumes) == 0.0  # finding nothing is no agreement


def test_audit_verdicts() -> None:
    def corr(name, rho):
        return {"criterion": name, "rho": rho}

    rows = [{"checkpoint": f"epoch_{i:04d}", "true_dice": d} for i, d in enumerate([0.5, 0.7, 0.6, 0.8, 0.2, 0.4])]
    good = CheckpointAudit(rows, [corr("kid", 0.905), corr("cycle_error", 0.2)])  # was printed "rho 0.90"
    assert (
        good.verdict()
        == "Criteria reaching Spearman rho >= 0.6 with the true Dice over 6 checkpoints: kid (rho 0.905)."
    )
    bad = CheckpointAudit(rows[:3], [corr("kid", 0.5), corr("cycle_error", math.nan)])
    assert bad.verdict().startswith(
        "No label-free criterion reaches Spearman rho >= 0.6 with the true Dice over 3 checkpoints. "
        "The closest is kid (rho 0.500). Only 3 checkpoints"
    )
    near = CheckpointAudit(rows, [corr("flip_agreement", 0.595)])  # was printed "rho 0.60" under "none reaches 0.6"
    assert near.verdict().endswith("The closest is flip_agreement (rho 0.595).")
    flat = CheckpointAudit([{**r, "true_dice": 0.0} for r in rows], [corr("kid", math.nan)])
    assert flat.verdict().startswith("The true Dice is 0.000 for all 6 checkpoints")


def test_snd_hand_computed_and_prefers_confident_predictions() -> None:
    # three identical features: each row's softmax is uniform over the 2 others -> entropy ln 2
    assert snd_from_features(np.ones((3, 4))) == pytest.approx(math.log(2))
    snd = SELECTORS.create("soft_neighbourhood_density", samples=512)
    noise = np.random.default_rng(0)
    confident = snd.score(Fixed(lambda v: (v < 0).astype(float)), target=TARGET)
    noisy = snd.score(Fixed(lambda v: noise.uniform(0, 1, v.shape)), target=TARGET)
    assert confident > noisy


def test_rank_checkpoints_and_spearman() -> None:
    candidates = [(f"p{p}", Fixed(lambda v, p=p: np.full(v.shape, p))) for p in (0.5, 0.01, 0.2)]
    rows = rank_checkpoints(candidates, "mean_entropy", {"target": TARGET[:1]})
    assert [r["checkpoint"] for r in rows] == ["p0.01", "p0.2", "p0.5"]  # lowest entropy first
    assert [r["rank"] for r in rows] == [1, 2, 3]
    assert spearman_with_truth([3.0, 2.0, 1.0], [0.1, 0.2, 0.3], higher_is_better=False) == pytest.approx(1.0)
    assert spearman_with_truth({"a": 1.0, "b": 2.0, "c": 3.0}, {"c": 0.1, "a": 0.3, "b": 0.2}) == pytest.approx(-1.0)
    assert math.isnan(spearman_with_truth([1.0, 1.0, 1.0], [0.1, 0.2, 0.3]))


@pytest.fixture
def one_thread():
    """Tiny networks train fastest on one thread; more only oversubscribe a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_audit_on_tiny_cyclegan(tmp_path, one_thread) -> None:
    source, target_cases = disks(0, cases=3), disks(1, cases=3)
    target = [-im for im, _ in target_cases]
    eval_cases = [(-im, m) for im, m in disks(2, cases=2)]
    gan = CycleGAN(
        width=4,
        blocks=1,
        disc_width=4,
        disc_layers=2,
        epochs=4,
        iterations_per_epoch=2,
        keep_checkpoints=3,
        sample_every=0,
    )
    gan.fit([im for im, _ in source], target, workdir=tmp_path / "gan", seed=0)
    assert [p.name for p in checkpoints(tmp_path / "gan")] == ["epoch_0002", "epoch_0003", "epoch_0004"]

    settings = SegmentationConfig(context=0, epochs=1, batch_size=4, augment=[], model={"name": "resunet25d"})

    def segment_fn(cases, folder):
        spec = {"name": "resunet25d", "base": 4, "depth": 2}
        return train_segmenter(
            spec, cases, settings, workdir=folder, device="cpu", iterations_per_epoch=2, progress=False
        )

    selectors = [
        {"name": "cycle_error", "max_slices": 8},
        "identity_error",
        {"name": "kid", "size": 24, "width": 4},
        {"name": "proxy_dice", "steps": 10, "size": 16},
        "mean_entropy",
        "flip_agreement",
        {"name": "soft_neighbourhood_density", "samples": 128},
    ]
    audit = audit_translator_checkpoints(
        tmp_path / "gan", source, target, eval_cases, selectors, segment_fn, held_out=source[:1]
    )
    assert [r["checkpoint"] for r in audit.rows] == ["epoch_0002", "epoch_0003", "epoch_0004"]
    assert [r["epoch"] for r in audit.rows] == [2, 3, 4]
    names = [c["criterion"] for c in audit.correlations]
    assert names == [
        "cycle_error",
        "identity_error",
        "kid",
        "proxy_dice",
        "mean_entropy",
        "flip_agreement",
        "soft_neighbourhood_density",
    ]
    for row in audit.rows:
        assert 0.0 <= row["true_dice"] <= 1.0 and all(math.isfinite(row[n]) for n in names)
    for corr in audit.correlations:
        scores = [r[corr["criterion"]] for r in audit.rows]
        truth = [r["true_dice"] for r in audit.rows]
        expected = spearman_with_truth(scores, truth, higher_is_better=corr["higher_is_better"])
        assert corr["rho"] == pytest.approx(expected, nan_ok=True)
        assert corr["picked_dice"] in truth and corr["best_dice"] == max(truth)
    _, md, page = audit.section()
    assert "Only 3 checkpoints were audited" in md and "<table>" in page
    written = audit.write(tmp_path / "audit")
    assert (written / "checkpoints.csv").read_text().startswith("checkpoint,epoch,")
    assert CheckpointAudit.load(written).section() == audit.section()
    path, rows = best_checkpoint(tmp_path / "gan", {"name": "cycle_error", "max_slices": 8}, source[:1], target)
    assert path.name == rows[0]["checkpoint"] and rows[0]["rank"] == 1
