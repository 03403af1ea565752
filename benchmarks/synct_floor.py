"""Benchmark: how low can a SynCT's MAE go on the prostate phantom? (issue 17's "<= 60 HU")

The pipeline scores a SynCT against the same subject's true CT (the phantom's paired mode), in HU, inside the body,
on the MR subject's grid (`da_seg.pipeline.evaluation.synct_fidelity`). A translator only sees the MR, so part of
that error is out of its reach. This script scores three "perfect" translations through the very same path (the
common grid, the CT window, `Domain.restore`), for the MR subjects of a phantom data set:

- ``true CT``: the subject's own CT, noise and all (the window and grid floor, as `cyclegan_quality.window_floor`);
- ``noise-free CT``: the same rendering, same tissue values, without the scanner noise and stool mottle: what a
  translator that reproduces everything but the noise's random pattern would score;
- ``anatomy, mean HU``: the subject's anatomy (its exact tissue map, on the CT grid) with every per-subject random
  HU draw (tissue means, muscle level, prostate-muscle gap, bone density) at its population mean, and no noise:
  the best a translator can do that knows the anatomy exactly and nothing the MR cannot tell it. (A real one does
  worse: it sees the anatomy through 3.5 mm MR slices.)

With ``--supervised N``, also a fourth: the CycleGAN's generator (ResNet, the example's width 16 and 6 blocks)
trained for N updates with an L1 loss on the *paired* MR and CT slices (the phantom's luxury: a real user has no
pairs) of 12 subjects and scored on the other 4: what this generator, at this budget, reaches when it is told the
answer, against which an unpaired translator's MAE can be read.

Usage:
    python benchmarks/synct_floor.py [--seeds 0 1 2] [--n-source 16] [--supervised 1500] [--threads 2] [--out DIR]

Same data as the reference example (`examples/prostate_mr2ct.toml`: 16 MR subjects, 3 x 2 x 2 mm, 80 x 80, crops
centred on the body); results in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import tempfile
from functools import partial
from pathlib import Path
from unittest import mock

import numpy as np
import prostate_mr2ct.phantom as phantom
import torch
import torch.nn.functional as F
from cyclegan_quality import against_truth, on_common_grid  # the same scoring path as the CycleGAN benchmark

from da_seg.data import Domain, find_cases
from da_seg.phantom import write_layout
from da_seg.prepared import load_prepared
from da_seg.registry import INTENSITIES, TASKS
from da_seg.training import autocast, resolve_precision
from da_seg.translators.networks import ResnetGenerator, init_weights

EXAMPLE_GRID = {"spacing": (3.0, 2.0, 2.0), "size": (80, 80)}  # examples/prostate_mr2ct.toml's [data]


class PopulationMean:
    """A stand-in random generator that returns each distribution's mean: the per-subject HU draws at their
    population value."""

    def normal(self, loc=0.0, scale=1.0, size=None):
        return np.full(size, loc, float) if size is not None else float(loc)

    def uniform(self, low=0.0, high=1.0, size=None):
        return np.full(size, (low + high) / 2, float) if size is not None else (low + high) / 2


def no_noise(rng, shape, sigma) -> np.ndarray:
    return np.zeros(shape, np.float32)


def render_ct(subject_seed: int, variant: str) -> phantom.PhantomImage:
    """Subject ``subject_seed``'s CT as the phantom renders it (``"true"``), without noise (``"noise_free"``), or
    its anatomy at the population's mean HU without noise (``"mean_hu"``)."""
    anatomy_seed, _, ct_seed = np.random.SeedSequence(subject_seed).spawn(3)
    anatomy = phantom.sample_anatomy(np.random.default_rng(anatomy_seed))
    rng = np.random.default_rng(ct_seed)
    if variant == "true":
        return phantom.render_ct(anatomy, rng)
    if variant == "mean_hu":
        anatomy.params.update(muscle_hu=(45 + 58) / 2, prostate_hu_gap=(5 + 15) / 2)  # sample_anatomy's ranges
        rng = PopulationMean()
    with mock.patch.object(phantom, "smooth_noise", no_noise):
        return phantom.render_ct(anatomy, rng)


def mae(image: np.ndarray, case, target_domain: Domain, paired: Path) -> float:
    return against_truth(image, case, target_domain, paired, ("mae_hu",))["mae_hu"]


def supervised_generator(cases, target_domain: Domain, paired: Path, updates: int, seed: int) -> list[float]:
    """Train the example's generator with L1 on paired slices of all but the last 4 cases (random flips, batch 4,
    Adam 2e-4, the precision `"auto"` picks) and return the MAE HU of the last 4 cases' translations."""
    train, test = cases[:-4], cases[-4:]
    mr = torch.as_tensor(np.concatenate([c.image for c in train]))[:, None]
    ct = torch.as_tensor(np.concatenate([on_common_grid(c, target_domain, paired) for c in train]))[:, None]
    torch.manual_seed(seed)
    net = ResnetGenerator(1, 1, width=16, blocks=6)
    init_weights(net)
    optimiser = torch.optim.Adam(net.parameters(), lr=2e-4, betas=(0.5, 0.999))
    precision = resolve_precision("auto", torch.device("cpu"))
    for step in range(updates):
        pick = torch.randint(len(mr), (4,))
        x, y = mr[pick], ct[pick]
        if step % 2:
            x, y = x.flip(-1), y.flip(-1)
        with autocast(torch.device("cpu"), precision):
            loss = F.l1_loss(net(x).float(), y)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    net.eval()
    values = []
    with torch.no_grad(), autocast(torch.device("cpu"), precision):
        for case in test:
            image = net(torch.as_tensor(case.image)[:, None]).float()[:, 0].numpy()
            values.append(mae(image, case, target_domain, paired))
    return values


def run_seed(seed: int, n_source: int, supervised: int, window: list[float], out: Path) -> dict[str, list[float]]:
    """Write the MR subjects and their CT in each variant (same subject seeds as the example's phantom of ``seed``)
    and score each variant as a SynCT (and, with ``supervised`` updates, a generator trained on the pairs)."""
    folders = {}
    for variant in ("true", "noise_free", "mean_hu"):
        folder = out / f"seed{seed}_{variant}"
        if not (folder / "paired_target").is_dir():
            write_layout(
                folder,
                partial(phantom.phantom_subject, modality="MR"),
                partial(render_ct, variant=variant),
                n_source=n_source,
                n_target=0,
                n_evaluation=0,
                paired=True,
                seed=seed,
            )
        folders[variant] = folder
    task = TASKS.create("prostate_mr2ct")
    spacing, size = EXAMPLE_GRID["spacing"], EXAMPLE_GRID["size"]
    source = Domain(spacing, size, INTENSITIES.build(task.source_intensity), task.centre)
    ct_window = {**task.target_intensity, "low": window[0], "high": window[1]}
    target = Domain(spacing, size, INTENSITIES.build(ct_window), task.centre)
    cases = load_prepared(find_cases(folders["true"] / "source", labelled=True), source)
    truth = folders["true"] / "paired_target"
    scores = {
        v: [mae(on_common_grid(c, target, f / "paired_target"), c, target, truth) for c in cases]
        for v, f in folders.items()
    }
    if supervised:
        scores["supervised"] = supervised_generator(cases, target, truth, supervised, seed)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="phantom seeds (the example's seed)")
    parser.add_argument("--n-source", type=int, default=16, help="MR subjects (the example's n_source)")
    parser.add_argument("--supervised", type=int, default=0, help="updates of the paired L1 generator (0: skip)")
    parser.add_argument(
        "--window", type=float, nargs=2, default=[-500.0, 500.0], help="the CT window in HU (the task's: -500 500)"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = args.out or Path(tempfile.mkdtemp(prefix="synct_floor_"))
    columns = ["seed", "true CT (window and grid)", "noise-free CT", "anatomy at mean HU, no noise"]
    columns += [f"paired L1 generator, {args.supervised} updates (4 held-out subjects)"] if args.supervised else []
    print("| " + " | ".join(columns) + " |\n" + "|---" * len(columns) + "|")
    for seed in args.seeds:
        r = run_seed(seed, args.n_source, args.supervised, args.window, out)
        cells = " | ".join(f"{np.mean(v):.1f} ({min(v):.1f}-{max(v):.1f})" for v in r.values())
        print(f"| {seed} | {cells} |", flush=True)
    print(f"MAE HU inside the body, mean over the MR subjects (range); CT window {args.window} HU; data under {out}")


if __name__ == "__main__":
    main()
