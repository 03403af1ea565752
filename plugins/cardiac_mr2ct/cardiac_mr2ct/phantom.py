"""A thorax phantom: the same random chest rendered as bSSFP cine MR and as contrast-enhanced CT, in the da_seg layout.

The two renderings disagree the way MM-WHS's MR and CT do (Zhuang et al., the benchmark SIFA-style methods adapt
cardiac MR to CT on): on balanced SSFP MR blood and fat are both bright and the myocardium dark; on arterial-phase CT
the contrast-filled blood is bright (left heart ~320-420 HU, right heart less, as the bolus passes), the myocardium
intermediate (~100 HU), fat dark (-100 HU), lungs near -800 HU and bone above 200 HU. A segmenter trained on MR alone
sees fat where it expects blood and fails on CT; one trained on well-translated MR (SynCT) should not.

Six labelled structures (label value = position + 1 in `STRUCTURES`): left-ventricular blood pool, left-ventricular
myocardium, right-ventricular blood pool, left and right atrial blood pools and the ascending aorta. Unlabelled
blood (descending aorta, pulmonary trunk) and the right-ventricular wall make the task less trivial.

Anatomy is drawn in patient millimetres (LPS: x to the patient's left, y posterior, z superior; heart centre near the
origin). The heart's structures are ellipsoids in a tilted "heart frame" (long axis from base to apex pointing
anterior, left and inferior). Each modality samples the anatomy on its own grid:

* MR: 112 x 112 x 28 voxels of 2 x 2 x 5 mm (224 mm field of view planned on the heart, thick slices averaging two
  thin ones), smooth coil bias field, Rician noise;
* CT: 128 x 128 x 48 voxels of 2.5 x 2.5 x 3 mm (320 mm: the whole chest), HU, slight blur, correlated noise.

Vectorised numpy on small grids: one subject takes a fraction of a second.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from da_seg.phantom import PhantomImage, ellipsoid, grid_coords, smooth_noise, volume_at, write_layout

STRUCTURES: tuple[str, ...] = ("lv_blood", "myocardium", "rv_blood", "la_blood", "ra_blood", "aorta")

# tissue codes of the label map every rendering starts from
AIR, FAT, MUSCLE, LUNG, CORTEX, MARROW, MEDIASTINUM, RV_WALL, OTHER_BLOOD, LIVER = range(10)
LV_BLOOD, MYOCARDIUM, RV_BLOOD, LA_BLOOD, RA_BLOOD, AORTA = range(10, 16)
LABELLED = (LV_BLOOD, MYOCARDIUM, RV_BLOOD, LA_BLOOD, RA_BLOOD, AORTA)  # label value = index + 1
BLOOD = (LV_BLOOD, RV_BLOOD, LA_BLOOD, RA_BLOOD, AORTA, OTHER_BLOOD)

MR_SHAPE, MR_SPACING = (28, 112, 112), (5.0, 2.0, 2.0)  # (z, y, x)
CT_SHAPE, CT_SPACING = (48, 128, 128), (3.0, 2.5, 2.5)
MR_SUBSLICES = 2  # thick MR slices average this many thin ones (partial volume)


@dataclass(frozen=True)
class Anatomy:
    """One subject's random anatomy (millimetres, LPS, heart centre near the origin)."""

    params: dict[str, Any]
    seed: int


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    """Draw one subject: chest size, heart position, orientation and chamber sizes, vessel calibres."""
    u = rng.uniform
    p = {
        "body": (u(140, 170), u(95, 115)),  # half-axes x, y of the chest
        "fat": u(8, 25),  # subcutaneous fat
        "muscle": u(8, 14),  # chest-wall muscle
        "heart": (u(8, 20), u(-12, 0), u(-8, 8)),  # heart centre x, y, z
        "azimuth": u(0.55, 0.95),  # long axis angle in the axial plane (rad from +x towards -y, i.e. anterior)
        "elevation": u(0.45, 0.75),  # long axis angle below the axial plane
        "lv": (u(18, 25), u(18, 25), u(30, 40)),  # LV cavity radii (a, b, long)
        "wall": u(7, 12),  # LV myocardial thickness
        "rv": (u(13, 18), u(24, 32), u(28, 36)),
        "la": (u(18, 24), u(14, 19), u(15, 20)),
        "ra": (u(17, 23), u(17, 22), u(18, 24)),
        "aorta": u(12, 16),  # ascending aorta radius
        "descending": u(9, 12),
        "pa": u(11, 14),
        "spine_y": u(60, 75),
        "vertebra": u(17, 21),
        "lung_gap": u(30, 45),  # mediastinal half-width between the lungs
        "rib_phase": u(0, 2 * np.pi),
        "liver_z": u(-75, -55),
        "shift": (u(-8, 8), u(-8, 8), u(-6, 6)),  # where the scanner centred the field of view
        "lv_hu": u(330, 420),
        "rv_hu": u(220, 320),
        "myo_hu": u(85, 120),
        "mr_blood": u(0.9, 1.1),
        "mr_myo": u(0.14, 0.22),
    }
    return Anatomy(p, int(rng.integers(2**31)))


def heart_frame(p: dict[str, Any]) -> np.ndarray:
    """Rows: the heart frame's axes in patient (x, y, z): ``a`` (lateral), ``b`` (posterior-ish), ``l`` (to apex)."""
    az, el = p["azimuth"], p["elevation"]
    long_axis = np.array([np.cos(el) * np.cos(az), -np.cos(el) * np.sin(az), -np.sin(el)])  # left, anterior, down
    lateral = np.cross(long_axis, [0.0, 0.0, 1.0])
    lateral /= np.linalg.norm(lateral)
    if lateral[0] < 0:
        lateral = -lateral
    other = np.cross(long_axis, lateral)
    return np.stack([lateral, other, long_axis])


def _in_frame(z, y, x, centre, frame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    dx, dy, dz = x - centre[0], y - centre[1], z - centre[2]
    return tuple(r[0] * dx + r[1] * dy + r[2] * dz for r in frame)  # type: ignore[return-value]


def label_map(anatomy: Anatomy, z, y, x) -> np.ndarray:
    """Tissue codes on the grid given by broadcastable coordinates (painter's order: later structures win)."""
    p = anatomy.params
    shape = np.broadcast_shapes(z.shape, y.shape, x.shape)
    t = np.full(shape, AIR, np.uint8)
    bx, by = p["body"]
    zero = 0 * z
    chest = (x / bx) ** 2 + (y / by) ** 2 + zero
    t[chest < 1] = FAT
    fat, wall = p["fat"], p["muscle"]
    inner = (x / (bx - fat)) ** 2 + (y / (by - fat)) ** 2 + zero
    t[inner < 1] = MUSCLE
    cavity = (x / (bx - fat - wall)) ** 2 + (y / (by - fat - wall)) ** 2 + zero
    t[cavity < 1] = MEDIASTINUM
    # lungs: each side of the mediastinum, rounded, wider posteriorly; the liver dome below on the right
    gap = p["lung_gap"]
    for side in (-1, 1):
        lung = ((x - side * (gap + 45)) / 52) ** 2 + ((y - 10) / (by - fat - wall - 4)) ** 2 + zero
        t[(lung < 1) & (cavity < 1) & (side * x > gap * 0.6)] = LUNG
    t[ellipsoid(x, y, z, (-30, 0, p["liver_z"]), (110, 90, 45)) < 1] = LIVER
    # ribs: small oval cross-sections in the chest wall that come and go with height; sternum in front
    angle = np.arctan2(y, x)
    ring = np.abs(np.sqrt(chest) - (1 - (fat + wall * 0.5) / by)) < 0.045
    rib = ring & (np.sin(z * 2 * np.pi / 28 + angle * 2 + p["rib_phase"]) > 0.55) & (np.abs(np.sin(angle)) > 0.1)
    t[rib] = CORTEX
    sternum = ((x / 14) ** 2 + ((y + by - fat - wall * 0.4) / 7) ** 2 + zero) < 1
    t[sternum] = CORTEX
    t[sternum & (((x / 10) ** 2 + ((y + by - fat - wall * 0.4) / 4) ** 2) < 1)] = MARROW
    # spine: vertebral body (cortex around marrow), posterior elements, paraspinal muscles
    sy, vr = p["spine_y"], p["vertebra"]
    for side in (-1, 1):
        t[(((x - side * 28) / 16) ** 2 + ((y - sy - 25) / 18) ** 2 + zero) < 1] = MUSCLE
    body = (x / vr) ** 2 + ((y - sy) / (vr * 0.9)) ** 2 + zero
    t[body < 1] = CORTEX
    t[body < 0.7] = MARROW
    t[((x / 5) ** 2 + ((y - sy - vr - 12) / 14) ** 2 + zero) < 1] = CORTEX
    # great vessels outside the labels: descending aorta left-anterior of the spine, pulmonary trunk
    hx, hy, hz = p["heart"]
    t[(((x - 22) / p["descending"]) ** 2 + ((y - sy + vr + p["descending"] + 2) / p["descending"]) ** 2 + zero) < 1] = (
        OTHER_BLOOD
    )
    pa = ((x - hx - 8) / p["pa"]) ** 2 + ((y - hy + 35) / p["pa"]) ** 2
    t[(pa < 1) & (z > hz + 25)] = OTHER_BLOOD
    # the heart, in its own frame: atria at the base (posterior, superior), ventricles towards the apex
    frame = heart_frame(p)
    a, b, l_ = _in_frame(z, y, x, (hx, hy, hz), frame)
    lv, thick = p["lv"], p["wall"]
    rv = p["rv"]
    t[ellipsoid(a, b, l_, (-32, -4, 8), (rv[0] + 4, rv[1] + 4, rv[2] + 4)) < 1] = RV_WALL
    t[ellipsoid(a, b, l_, (-32, -4, 8), rv) < 1] = RV_BLOOD
    la, ra = p["la"], p["ra"]
    t[ellipsoid(a, b, l_, (6, 22, -42), la) < 1] = LA_BLOOD
    t[ellipsoid(a, b, l_, (-34, 16, -40), ra) < 1] = RA_BLOOD
    outer = ellipsoid(a, b, l_, (6, 0, 6), (lv[0] + thick, lv[1] + thick, lv[2] + thick))
    t[(outer < 1) & (l_ > -lv[2] * 0.75)] = MYOCARDIUM
    t[(ellipsoid(a, b, l_, (6, 0, 6), lv) < 1) & (l_ > -lv[2] * 0.75)] = LV_BLOOD
    # ascending aorta: leaves the LV base between the atria and rises vertically
    root = np.asarray([hx, hy, hz]) + frame.T @ np.array([-8.0, 2.0, -lv[2] * 0.75])
    ar = p["aorta"]
    tube = ((x - root[0]) / ar) ** 2 + ((y - root[1]) / ar) ** 2 + zero
    t[(tube < 1) & (z > root[2]) & (z < root[2] + 90)] = AORTA
    return t


# -- rendering ----------------------------------------------------------------------------------------------------
def labels_of(tissues: np.ndarray) -> np.ndarray:
    """Tissue codes -> the task's uint8 label map (1..6 in `STRUCTURES` order, 0 elsewhere)."""
    lut = np.zeros(256, np.uint8)
    for value, code in enumerate(LABELLED, start=1):
        lut[code] = value
    return lut[tissues]


MR_MEANS = {  # balanced SSFP, relative to blood = 1000: T2/T1-weighted, so blood and fat bright, muscle dark
    AIR: 4,
    FAT: 780,
    MUSCLE: 190,
    LUNG: 30,
    CORTEX: 25,
    MARROW: 520,
    MEDIASTINUM: 700,
    RV_WALL: 200,
    OTHER_BLOOD: 950,
    LIVER: 260,
}


def render_mr(anatomy: Anatomy, rng: np.random.Generator) -> PhantomImage:
    """bSSFP MR on the heart-centred thick-slice grid: partial volume, coil bias, Rician noise."""
    p = anatomy.params
    sx, sy, sz = p["shift"]
    hx, hy, hz = p["heart"]
    centre = (hx + sx * 0.4, hy + sy * 0.4, hz + sz * 0.4)  # planned on the heart
    fine_shape = (MR_SHAPE[0] * MR_SUBSLICES, *MR_SHAPE[1:])
    fine_spacing = (MR_SPACING[0] / MR_SUBSLICES, *MR_SPACING[1:])
    z, y, x = grid_coords(fine_shape, fine_spacing, centre)
    tissues = label_map(anatomy, z, y, x)
    lut = np.zeros(32, np.float32)
    for code, mean in MR_MEANS.items():
        lut[code] = mean * rng.uniform(0.9, 1.1)
    blood = 1000 * p["mr_blood"]
    lut[[LV_BLOOD, RV_BLOOD, LA_BLOOD, RA_BLOOD, AORTA]] = blood * rng.uniform(0.95, 1.05, 5)
    lut[MYOCARDIUM] = blood * p["mr_myo"]
    image = lut[tissues]
    image *= 1 + 0.05 * smooth_noise(rng, fine_shape, (1.0, 1.5, 1.5))
    # flow: blood in the chambers is not uniform (inflow enhancement, dark jets)
    flow = smooth_noise(rng, fine_shape, (2.0, 3.0, 3.0))
    image = np.where(np.isin(tissues, BLOOD), image * (1 + 0.08 * flow), image)
    image = image.reshape(MR_SHAPE[0], MR_SUBSLICES, *MR_SHAPE[1:]).mean(1)
    image = ndimage.gaussian_filter(image, (0, 0.6, 0.6))
    centre_slices = tissues[MR_SUBSLICES // 2 :: MR_SUBSLICES]
    # bias: anterior and posterior coil arrays, plus a smooth random field
    y2 = grid_coords(MR_SHAPE, MR_SPACING, centre)[1]
    coil = 1 + 0.3 * np.exp(-(((y2 + 110) / 60) ** 2)) + 0.2 * np.exp(-(((y2 - 110) / 60) ** 2))
    low_res = ndimage.zoom(rng.normal(0, 0.12, (3, 4, 4)), np.asarray(MR_SHAPE) / (3, 4, 4), order=3)
    scale = rng.uniform(0.7, 1.4)
    image = image * coil * np.exp(low_res[: MR_SHAPE[0], : MR_SHAPE[1], : MR_SHAPE[2]]) * scale
    sigma = rng.uniform(0.02, 0.04) * 1000 * scale
    image = np.hypot(image + rng.normal(0, sigma, image.shape), rng.normal(0, sigma, image.shape))  # Rician
    image = np.clip(image, 0, 4000).astype(np.int16)
    return PhantomImage(
        volume_at(image, MR_SPACING, centre),
        volume_at(labels_of(centre_slices), MR_SPACING, centre),
        volume_at(centre_slices, MR_SPACING, centre),
    )


CT_MEANS = {  # Hounsfield units, arterial phase
    AIR: -1000,
    FAT: -100,
    MUSCLE: 50,
    LUNG: -820,
    MARROW: 220,
    MEDIASTINUM: -80,
    RV_WALL: 90,
    LIVER: 70,
}


def render_ct(anatomy: Anatomy, rng: np.random.Generator) -> PhantomImage:
    """Contrast CT in HU of the whole chest: left-heart blood brightest, right heart less, myocardium ~100 HU."""
    p = anatomy.params
    sx, sy, sz = p["shift"]
    hx, hy, hz = p["heart"]
    centre = (hx + sx, hy + sy, hz + sz)  # cardiac CT is reconstructed around the heart
    z, y, x = grid_coords(CT_SHAPE, CT_SPACING, centre)
    tissues = label_map(anatomy, z, y, x)
    lut = np.zeros(32, np.float32)
    for code, mean in CT_MEANS.items():
        lut[code] = mean + rng.normal(0, 5)
    lut[CORTEX] = rng.uniform(600, 1000)
    lut[[LV_BLOOD, LA_BLOOD, AORTA, OTHER_BLOOD]] = p["lv_hu"] + rng.normal(0, 10, 4)
    lut[[RV_BLOOD, RA_BLOOD]] = p["rv_hu"] + rng.normal(0, 10, 2)
    lut[MYOCARDIUM] = p["myo_hu"]
    image = lut[tissues]
    image += np.where(tissues == LUNG, 40 * smooth_noise(rng, CT_SHAPE, 1.0), 0)  # lung vessels / texture
    image = ndimage.gaussian_filter(image, (0.5, 0.7, 0.7))
    noise = smooth_noise(rng, CT_SHAPE, (0.3, 0.6, 0.6)) * rng.uniform(12, 25)
    image = image + np.where(tissues == AIR, 0.3, 1.0) * noise
    image = np.clip(np.rint(image), -1024, 3071).astype(np.int16)
    return PhantomImage(
        volume_at(image, CT_SPACING, centre),
        volume_at(labels_of(tissues), CT_SPACING, centre),
        volume_at(tissues, CT_SPACING, centre),
    )


def phantom_subject(seed: int, modality: str) -> PhantomImage:
    """Render subject ``seed`` (its anatomy depends only on the seed) as ``"MR"`` or ``"CT"``."""
    anatomy_seed, mr_seed, ct_seed = np.random.SeedSequence(seed).spawn(3)
    anatomy = sample_anatomy(np.random.default_rng(anatomy_seed))
    if modality == "MR":
        return render_mr(anatomy, np.random.default_rng(mr_seed))
    if modality == "CT":
        return render_ct(anatomy, np.random.default_rng(ct_seed))
    raise ValueError(f"modality must be 'MR' or 'CT', got {modality!r}")


# The task's phantom writer: `write_layout(out, *, n_source, n_target, n_evaluation, n_target_labelled=0,
# paired=False, seed=0)` with this phantom's renderers (MR with label maps 1..6 in source/, CT everywhere else).
write_phantom = partial(
    write_layout,
    render_source=partial(phantom_subject, modality="MR"),
    render_target=partial(phantom_subject, modality="CT"),
)


COLOURS = ("red", "gold", "deepskyblue", "lime", "magenta", "orange")


def save_figure(path: Path, seeds: tuple[int, ...] = (0, 1, 2)) -> Path:
    """MR | CT of the same subjects (paired rendering) at the slice with most labelled voxels, one colour per label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(seeds), 2, figsize=(8, 4 * len(seeds)), facecolor="black", squeeze=False)
    for row, seed in enumerate(seeds):
        for col, modality in enumerate(("MR", "CT")):
            rendered = phantom_subject(seed, modality)
            mask = rendered.mask.array
            z = int(np.argmax((mask > 0).reshape(mask.shape[0], -1).sum(1)))
            ax = axes[row, col]
            image = rendered.image.array[z].astype(np.float32)
            low, high = (-200, 800) if modality == "CT" else np.percentile(image, [0.5, 99.5])
            ax.imshow(image, cmap="gray", vmin=low, vmax=high, interpolation="bilinear")
            for value, colour in enumerate(COLOURS, start=1):
                if (mask[z] == value).any():
                    ax.contour(mask[z] == value, levels=[0.5], colors=colour, linewidths=0.8)
            ax.set_title(f"subject {seed}, {modality}", color="white", fontsize=9)
            spacing = rendered.image.spacing
            ax.set_aspect(spacing[1] / spacing[0])
            ax.axis("off")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, facecolor="black")
    plt.close(fig)
    return path
