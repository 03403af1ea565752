"""A pelvic phantom: the same random male pelvis rendered as T2 MR and as CT, written in the da_seg data layout.

The phantom makes the method's problem real: the prostate is easy to see on T2 MR (bright peripheral zone, darker
central gland, dark capsule in bright periprostatic fat) and hard to see on CT, where it differs from the adjacent
levator ani / obturator muscles by 5-15 HU under 10-20 HU noise, as in real CT.

Anatomy is drawn in patient millimetres (LPS: x to the patient's left, y posterior, z superior; the prostate
centre near the origin) from ellipsoids and tubes; each modality samples it on its own grid:

* MR: 160 x 160 x 24 voxels of 1.25 x 1.25 x 3.5 mm (200 mm field of view, thick slices with partial volume),
  smooth bias field, Rician noise;
* CT: 192 x 192 x 56 voxels of 2 x 2 x 2 mm (384 mm field of view, the whole pelvis and the scanner table), HU,
  slight blur and correlated noise.

Everything is vectorised numpy on these small grids, so 24 MR + 24 CT subjects take seconds, not minutes.

``realism = "clinical"`` (ours; `CLINICAL` holds every number and where it comes from) renders the same anatomy
with the differences that broke the method on real files (issue 41): an MR field of view of 100 mm around the
gland, a stronger coil shading and 8-bit values; a CT 320 mm long (abdomen to thighs, the prostate in its lower
quarter), the patient rolled a few degrees on the table and, in some subjects, contrast in the bladder. Above the
bladder the phantom has only body wall, muscle and fat (no bowel, spine or kidneys): it tests extent, not the
abdomen's organs. Not yet modelled: metal streaks from hip prostheses, fiducials.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from da_seg.errors import ConfigError
from da_seg.phantom import PhantomImage, ellipsoid, grid_coords, smooth_noise, volume_at, write_layout

# tissue codes of the label map every rendering starts from
AIR, FAT, MUSCLE, CORTEX, MARROW, URINE, BLADDER_WALL, RECTAL_WALL, STOOL, GAS = range(10)
PERIPROSTATIC, VEIN, SEMINAL, PZ, CG, CAPSULE, TABLE, TABLE_SHELL, LEVATOR, OBTURATOR = range(10, 20)
PROSTATE_TISSUES = (PZ, CG, CAPSULE)
ADJACENT_MUSCLES = (LEVATOR, OBTURATOR)

MR_SHAPE, MR_SPACING = (24, 160, 160), (3.5, 1.25, 1.25)  # (z, y, x)
CT_SHAPE, CT_SPACING = (56, 192, 192), (2.0, 2.0, 2.0)
MR_SUBSLICES = 3  # thick MR slices average this many thin ones (partial volume)

REALISMS = ("default", "clinical")
CLINICAL = {  # ours, each from what a real file or the issue that asked for it shows
    # MR: 10 x 10 cm crops around the gland (the user's files in issue 41; "sometimes 10 cm" across)
    "mr_shape": (24, 80, 80),
    # coil shading: a linear ramp across the field of view of +-15..30% (issue 41: "up to +-30%")
    "bias_amplitude": (0.15, 0.30),
    # 8-bit values (the user's files in issue 41)
    "mr_levels": 255,
    # CT: 320 mm along the body (issue 41: 30-40 cm; the TotalSegmentator example CT in shared/data/real: 336 mm)
    "ct_shape": (160, 192, 192),
    "ct_centre_z": 80.0,  # grid centre above the prostate: the prostate lies in the lower quarter
    # roll about the body axis, degrees (issue 41: "a few degrees")
    "roll_degrees": 4.0,
    # contrast in the bladder (excretory phase): share of subjects and HU of the urine, ours
    "bladder_contrast": (0.3, (150.0, 600.0)),
}


@dataclass(frozen=True)
class Anatomy:
    """One subject's random anatomy (millimetres, LPS, prostate centre near the origin)."""

    params: dict[str, Any]
    seed: int


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    """Draw one subject: body habitus, bone positions, bladder filling, rectal gas, prostate size and shape."""
    u = rng.uniform
    prostate_width = u(32.0, 55.0)  # largest (left-right) diameter, mm
    p = {
        "body": (u(150, 185), u(105, 125)),  # half-axes x, y
        "body_centre_y": u(-5, 5),
        "fat": u(12, 35),  # subcutaneous fat thickness
        "cavity": (u(52, 62), u(48, 58)),
        "prostate": (prostate_width / 2, prostate_width / 2 * u(0.6, 0.8), prostate_width / 2 * u(0.75, 1.0)),
        "prostate_centre": (u(-4, 4), u(-4, 6), u(-4, 4)),
        "prostate_shape": rng.normal(0, 0.06, size=4),  # low-order radial harmonics
        "pz_fraction": u(0.35, 0.5),
        "tilt": u(-0.25, 0.05),  # rotation about x (apex anterior-inferior)
        "bladder": (u(25, 50), u(20, 40), u(20, 40)),
        "rectum_radius": u(12, 18),
        "rectum_offset": u(4, 8),
        "gas": [(u(-8, 8), u(-6, 6), u(-40, 40), u(3, 10)) for _ in range(int(rng.integers(0, 4)))],
        "femoral_head": u(22, 26),
        "femoral_x": u(80, 95),
        "pubic_y": u(-48, -38),
        "seminal": (u(18, 28), u(5, 8)),
        "veins": [(u(-1, 1), u(-1, 1), u(-1, 1)) for _ in range(12)],
        "nodules": [(u(-0.5, 0.5), u(-0.6, 0.3), u(-0.5, 0.5), u(4, 9)) for _ in range(int(rng.integers(2, 6)))],
        "muscle_hu": u(45, 58),
        "prostate_hu_gap": u(5, 15),
        "shift": (u(-8, 8), u(-8, 8), u(-5, 5)),  # where the scanner centred the field of view
    }
    return Anatomy(p, int(rng.integers(2**31)))


def label_map(anatomy: Anatomy, z, y, x) -> np.ndarray:
    """Tissue codes on the grid given by broadcastable coordinates (painter's order: later structures win)."""
    p = anatomy.params
    shape = np.broadcast_shapes(z.shape, y.shape, x.shape)
    t = np.full(shape, AIR, np.uint8)
    bx, by = p["body"]
    cy = p["body_centre_y"]
    # body: a central ellipse and two buttocks, widening slightly towards the hips; subcutaneous fat everywhere
    widen = 1 + 0.002 * np.clip(z, -60, 60)
    fat = p["fat"]
    body = (x / (bx * widen)) ** 2 + ((y - cy) / by) ** 2 + 0 * z < 1
    for side in (-1, 1):
        body |= ((x - side * bx * 0.42) / (bx * 0.55)) ** 2 + ((y - cy - by * 0.35) / (by * 0.68)) ** 2 + 0 * z < 1
    t[body] = FAT
    # muscle groups separated by fat planes: gluteus maximus, gluteus medius/minimus, iliopsoas/pectineus,
    # obturator externus/adductors, rectus abdominis
    muscles = []
    for side in (-1, 1):
        muscles += [
            ((side * bx * 0.45, cy + by * 0.42, 0), (bx * 0.5 - fat * 0.6, by * 0.5 - fat * 0.5, 200), 0.5 * side),
            ((side * (p["femoral_x"] + 32), cy - 5, 0), (26, 48, 200), -0.2 * side),
            ((side * (p["femoral_x"] - 18), cy - by * 0.55, 0), (30, 22, 200), 0.3 * side),
            ((side * 48, cy - 20, -20), (16, 24, 40), 0.0),
            ((side * 22, cy - by + fat + 7, 0), (22, 7, 200), 0.0),
        ]
    for (mx, my, mz), (ax, ay, az), angle in muscles:
        c, s_ = np.cos(angle), np.sin(angle)
        u_ = ((x - mx) * c + (y - my) * s_) / ax
        v_ = (-(x - mx) * s_ + (y - my) * c) / ay
        t[(u_**2 + v_**2 + ((z - mz) / az) ** 2 < 1) & body] = MUSCLE
    # pelvic cavity (ischiorectal and perirectal fat), narrowing inferiorly like a funnel
    cx, cyy = p["cavity"]
    funnel = 1 + 0.004 * np.clip(z, -60, 40)
    cavity = (x / (cx * funnel)) ** 2 + ((y - 12) / cyy) ** 2 + 0 * z
    t[cavity < 1] = FAT
    # obturator internus: lining the lateral cavity wall; levator ani: a sling under and around prostate and rectum
    for side in (-1, 1):
        obt = ellipsoid(x, y, z, (side * (cx * funnel - 6), 0, 5), (9, 38, 45))
        t[obt < 1] = OBTURATOR
    pcx, pcy, pcz = p["prostate_centre"]
    rx, ry, rz = p["prostate"]
    sling = ellipsoid(x, y, z, (pcx, pcy + 14, pcz - 10), (rx + 14, ry + 26, rz + 26))
    t[(sling < 1) & (sling > 0.72) & (z < pcz + 8) & (y > pcy - 0.3 * ry)] = LEVATOR
    # bones: femoral heads and necks, acetabula, pubic rami and symphysis, ischial tuberosities
    fx, fr = p["femoral_x"], p["femoral_head"]
    bone = np.zeros(shape, bool)
    marrow = np.zeros(shape, bool)
    for side in (-1, 1):
        parts = [
            ((side * fx, -5, 12), (fr, fr, fr)),  # femoral head
            ((side * (fx + 22), 0, -2), (24, 14, 14)),  # neck towards the trochanter
            ((side * (fx + 45), 5, -20), (14, 18, 30)),  # greater trochanter / shaft
            ((side * (fx - 8), -5, 14), (fr + 7, fr + 8, fr + 4)),  # acetabular rim (shell only)
            ((side * 22, p["pubic_y"], -8), (24, 9, 13)),  # pubic body and superior ramus
            ((side * 55, 35, -25), (12, 18, 20)),  # ischial tuberosity
            ((side * 60, 10, 5), (8, 30, 22)),  # ischial ramus / posterior column
        ]
        for index, (centre, radii) in enumerate(parts):
            r = ellipsoid(x, y, z, centre, radii)
            shell = 1 - 2.5 / min(radii)  # cortex about 2-3 mm
            if index == 3:
                bone |= (r < 1) & (r > 0.8)
                continue
            bone |= r < 1
            marrow |= r < shell**2
    t[bone] = CORTEX
    t[marrow & bone] = MARROW
    # bladder above the prostate, its wall muscle-like
    bl = p["bladder"]
    bladder_centre = (pcx, pcy - 8, pcz + rz + bl[2] * 0.8)
    b = ellipsoid(x, y, z, bladder_centre, bl)
    t[b < 1] = BLADDER_WALL
    t[b < (1 - 3.0 / min(bl)) ** 2] = URINE
    # rectum behind the prostate, curving posteriorly with height; gas pockets in its lumen
    rr = p["rectum_radius"]
    rcy = pcy + ry + rr + p["rectum_offset"] + 0.003 * np.clip(z, -80, 80) ** 2 * (z > 0)
    rect = ((x - pcx) / (rr * 1.2)) ** 2 + ((y - rcy) / rr) ** 2
    t[rect < 1] = RECTAL_WALL
    lumen = rect < (1 - 3.5 / rr) ** 2
    t[lumen] = STOOL
    for gx, gy, gz, gr in p["gas"]:
        g = ellipsoid(x, y, z, (pcx + gx, pcy + ry + rr + p["rectum_offset"] + gy, gz), (gr, gr, gr * 1.5))
        t[lumen & (g < 1)] = GAS
    # periprostatic fat with the venous plexus, seminal vesicles above-behind the prostate
    t[ellipsoid(x, y, z, (pcx, pcy, pcz), (rx + 7, ry + 5, rz + 6)) < 1] = PERIPROSTATIC
    rng = np.random.default_rng(anatomy.seed)
    for vx, vy, vz in p["veins"]:
        angle = np.arctan2(vy, vx)
        centre = (pcx + np.cos(angle) * (rx + 3.5), pcy + np.sin(angle) * (ry + 3) - 2, pcz + vz * rz * 0.8)
        t[ellipsoid(x, y, z, centre, (1.6, 1.6, 4 + 3 * rng.random())) < 1] = VEIN
    sl, sw = p["seminal"]
    for side in (-1, 1):
        sv_centre = (pcx + side * (sl * 0.6), pcy + ry * 0.8, pcz + rz * 0.9)
        # elongated, tilted lateral-upward
        dx, dz = x - sv_centre[0], z - sv_centre[2]
        u_ax = (dx * 0.85 - side * dz * 0.5) / sl
        v_ax = (dx * 0.5 * side + dz * 0.85) / (sw * 1.3)
        sv = u_ax**2 + ((y - sv_centre[1]) / sw) ** 2 + v_ax**2
        t[sv < 1] = SEMINAL
    # prostate: a tilted, deformed ellipsoid; peripheral zone posterior-lateral, central gland anterior-central
    tilt = p["tilt"]
    yy = (y - pcy) * np.cos(tilt) - (z - pcz) * np.sin(tilt)
    zz = (y - pcy) * np.sin(tilt) + (z - pcz) * np.cos(tilt)
    xx = x - pcx
    theta = np.arctan2(yy / ry, xx / rx)
    a = p["prostate_shape"]
    deform = 1 + a[0] * np.cos(2 * theta) + a[1] * np.sin(theta) + a[2] * np.cos(3 * theta) + a[3] * zz / rz
    # the apex narrows: radii shrink towards the inferior end, posterior surface flattened by the rectum
    taper = 1 - 0.25 * np.clip(-zz / rz, 0, 1)
    radius = ((xx / rx) ** 2 + (np.minimum(yy, yy * 1.3) / ry) ** 2) / (deform * taper) ** 2 + (zz / rz) ** 2
    gland = radius < 1
    t[gland & (radius > 0.86)] = CAPSULE
    pz = gland & (radius <= 0.86) & ((yy / ry) + 0.4 * np.abs(xx / rx) > 1 - 2 * p["pz_fraction"]) & (zz < rz * 0.5)
    t[gland & (radius <= 0.86)] = CG
    t[pz] = PZ
    return t


# -- rendering ----------------------------------------------------------------------------------------------------
MR_MEANS = {  # T2-weighted TSE, arbitrary scanner units
    AIR: 5,
    FAT: 620,
    MUSCLE: 130,
    OBTURATOR: 125,
    LEVATOR: 115,
    CORTEX: 20,
    MARROW: 430,
    URINE: 1100,
    BLADDER_WALL: 160,
    RECTAL_WALL: 190,
    STOOL: 320,
    GAS: 8,
    PERIPROSTATIC: 560,
    VEIN: 900,
    SEMINAL: 950,
    PZ: 700,
    CG: 290,
    CAPSULE: 150,
}


def coil_ramp(shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """The clinical preset's extra coil shading: ``1 + a * t`` with ``t`` running from -1 to 1 across the in-plane
    field of view in a random direction and ``a`` drawn from ``CLINICAL["bias_amplitude"]``; ``(z, y, x)``."""
    amplitude = rng.uniform(*CLINICAL["bias_amplitude"])
    angle = rng.uniform(0, 2 * np.pi)
    y, x = (np.linspace(-1, 1, n) for n in shape[1:])
    t = np.cos(angle) * x[None, :] + np.sin(angle) * y[:, None]
    t = t / np.abs(t).max()
    return np.broadcast_to(1 + amplitude * t, shape).astype(np.float32)


def render_mr(anatomy: Anatomy, rng: np.random.Generator, realism: str = "default") -> PhantomImage:
    """T2 MR on the small-FOV thick-slice grid: texture, partial volume, bias field, Rician noise."""
    shape = CLINICAL["mr_shape"] if realism == "clinical" else MR_SHAPE
    sx, sy, sz = anatomy.params["shift"]
    centre = (sx * 0.4, sy * 0.4, sz * 0.4)  # MR is planned on the prostate
    fine_shape = (shape[0] * MR_SUBSLICES, *shape[1:])
    fine_spacing = (MR_SPACING[0] / MR_SUBSLICES, *MR_SPACING[1:])
    z, y, x = grid_coords(fine_shape, fine_spacing, centre)
    tissues = label_map(anatomy, z, y, x)
    scale = rng.uniform(0.8, 1.25)
    lut = np.zeros(32, np.float32)
    for code, mean in MR_MEANS.items():
        lut[code] = mean * rng.uniform(0.9, 1.1)
    lut[PZ] = lut[FAT] * rng.uniform(1.0, 1.25)  # the PZ is about as bright as fat, well above muscle
    image = lut[tissues]
    # texture: fine for all tissues, coarse nodular (BPH) in the central gland, striated for the PZ
    image *= 1 + 0.06 * smooth_noise(rng, fine_shape, (1.0, 1.5, 1.5))
    nodules = smooth_noise(rng, fine_shape, (2.0, 3.0, 3.0))
    image = np.where(tissues == CG, image * (1 + 0.18 * nodules), image)
    image = np.where(tissues == PZ, image * (1 + 0.08 * nodules), image)
    image = image.reshape(shape[0], MR_SUBSLICES, *shape[1:]).mean(1)
    image = ndimage.gaussian_filter(image, (0, 0.6, 0.6))
    centre_slices = tissues[MR_SUBSLICES // 2 :: MR_SUBSLICES]
    # bias field: smooth multiplicative, brighter towards the (posterior and anterior) coil elements
    y2 = grid_coords(shape, MR_SPACING, centre)[1]
    coil = 1 + 0.25 * np.exp(-(((y2 - 90) / 60) ** 2)) + 0.15 * np.exp(-(((y2 + 110) / 60) ** 2))
    low_res = ndimage.zoom(rng.normal(0, 0.12, (3, 4, 4)), np.asarray(shape) / (3, 4, 4), order=3)
    image = image * coil * np.exp(low_res[: shape[0], : shape[1], : shape[2]]) * scale
    sigma = rng.uniform(0.025, 0.04) * MR_MEANS[FAT] * scale
    image = np.hypot(image + rng.normal(0, sigma, image.shape), rng.normal(0, sigma, image.shape))  # Rician
    image = np.clip(image, 0, 4000).astype(np.int16)
    if realism == "clinical":  # drawn after the default's draws, so the default phantom stays as it was
        image = image * coil_ramp(shape, rng)
        levels = CLINICAL["mr_levels"]
        image = np.clip(np.rint(image * (levels / np.percentile(image, 99.9))), 0, levels).astype(np.uint8)
    mask = np.isin(centre_slices, PROSTATE_TISSUES).astype(np.uint8)
    return PhantomImage(
        volume_at(image, MR_SPACING, centre),
        volume_at(mask, MR_SPACING, centre),
        volume_at(centre_slices, MR_SPACING, centre),
    )


CT_MEANS = {  # Hounsfield units
    AIR: -1000,
    FAT: -100,
    CORTEX: 1200,
    MARROW: 250,
    URINE: 10,
    STOOL: -20,
    GAS: -980,
    PERIPROSTATIC: -85,
    VEIN: 40,
    SEMINAL: 30,
    TABLE: -850,
    TABLE_SHELL: 350,
}


def render_ct(anatomy: Anatomy, rng: np.random.Generator, realism: str = "default") -> PhantomImage:
    """CT in HU on the large-FOV grid with the scanner table; prostate within 5-15 HU of the adjacent muscle."""
    clinical = realism == "clinical"
    shape = CLINICAL["ct_shape"] if clinical else CT_SHAPE
    p = anatomy.params
    sx, sy, sz = p["shift"]
    back = 1.03 * p["body"][1] + p["body_centre_y"]  # most posterior skin (buttocks)
    centre = (sx, sy + 30.0, sz + (CLINICAL["ct_centre_z"] if clinical else 0.0))  # the table below the body
    z, y, x = grid_coords(shape, CT_SPACING, centre)
    if clinical:  # the patient rolled on the table: the anatomy turns about the body axis, the table does not
        extra = np.random.default_rng(anatomy.seed + 1)  # its own stream: the default's draws stay as they were
        roll = np.deg2rad(extra.uniform(-1, 1) * CLINICAL["roll_degrees"])
        tissues = label_map(anatomy, z, y * np.cos(roll) - x * np.sin(roll), x * np.cos(roll) + y * np.sin(roll))
    else:
        tissues = label_map(anatomy, z, y, x)
    # scanner table: a curved carbon-fibre shell around a foam core, just behind the body
    table_y = back + 1 - 0.0004 * x**2 + 0 * z
    slab = (y > table_y) & (y < table_y + 40) & (np.abs(x) < 190) & (tissues == AIR)
    tissues[slab] = TABLE
    tissues[slab & ((y < table_y + 4) | (y > table_y + 36))] = TABLE_SHELL
    muscle = p["muscle_hu"]
    lut = np.zeros(32, np.float32)
    for code, mean in CT_MEANS.items():
        lut[code] = mean + rng.normal(0, 5)
    for code in (MUSCLE, OBTURATOR, LEVATOR, BLADDER_WALL, RECTAL_WALL):
        lut[code] = muscle + rng.normal(0, 2)
    prostate = muscle - p["prostate_hu_gap"]
    lut[[PZ, CG, CAPSULE]] = prostate
    lut[CORTEX] = rng.uniform(900, 1400)
    lut[MARROW] = rng.uniform(180, 350)
    if clinical:
        share, (low, high) = CLINICAL["bladder_contrast"]
        if extra.random() < share:
            lut[URINE] = extra.uniform(low, high)
    image = lut[tissues]
    image += np.where(tissues == STOOL, 120 * smooth_noise(rng, shape, 1.0), 0)  # mottled stool
    image = ndimage.gaussian_filter(image, (0.5, 0.7, 0.7))  # scanner resolution (partial volume)
    noise_sd = rng.uniform(10, 20)
    noise = smooth_noise(rng, shape, (0.3, 0.6, 0.6)) * noise_sd
    image = image + np.where(tissues == AIR, 0.3, 1.0) * noise
    image = np.clip(np.rint(image), -1024, 3071).astype(np.int16)
    mask = np.isin(tissues, PROSTATE_TISSUES).astype(np.uint8)
    return PhantomImage(
        volume_at(image, CT_SPACING, centre),
        volume_at(mask, CT_SPACING, centre),
        volume_at(tissues, CT_SPACING, centre),
    )


def phantom_subject(seed: int, modality: str, realism: str = "default") -> PhantomImage:
    """Render subject ``seed`` (its anatomy depends only on the seed) as ``"MR"`` or ``"CT"``, in the ``realism``
    preset (`REALISMS`)."""
    if realism not in REALISMS:
        raise ConfigError(f"data.phantom.realism = {realism!r}: the prostate phantom has {list(REALISMS)}")
    sequence = np.random.SeedSequence(seed)
    anatomy_seed, mr_seed, ct_seed = sequence.spawn(3)
    anatomy = sample_anatomy(np.random.default_rng(anatomy_seed))
    if modality == "MR":
        return render_mr(anatomy, np.random.default_rng(mr_seed), realism)
    if modality == "CT":
        return render_ct(anatomy, np.random.default_rng(ct_seed), realism)
    raise ValueError(f"modality must be 'MR' or 'CT', got {modality!r}")


def write_phantom(out: str | Path, *, realism: str = "default", **layout: Any) -> None:
    """The task's phantom writer: `write_layout` (``n_source``, ``n_target``, ``n_evaluation``,
    ``n_target_labelled``, ``paired``, ``seed``) with this phantom's renderers in the ``realism`` preset (MR with
    prostate masks in source/, CT everywhere else)."""
    if realism not in REALISMS:  # before any file is written
        raise ConfigError(f"data.phantom.realism = {realism!r}: the prostate phantom has {list(REALISMS)}")
    write_layout(
        out,
        render_source=partial(phantom_subject, modality="MR", realism=realism),
        render_target=partial(phantom_subject, modality="CT", realism=realism),
        recorded={} if realism == "default" else {"realism": realism},  # older folders stay valid
        **layout,
    )


def save_figure(path: Path, seeds: tuple[int, ...] = (0, 1, 2)) -> Path:
    """MR | CT of the same subjects (paired rendering) at the prostate's widest slice, prostate contour in red.

    CT is shown in a soft-tissue window (-150..250 HU), where the prostate should be hard to tell from muscle.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(seeds), 2, figsize=(8, 4 * len(seeds)), facecolor="black")
    for row, seed in enumerate(seeds):
        for col, modality in enumerate(("MR", "CT")):
            rendered = phantom_subject(seed, modality)
            mask = rendered.mask.array
            z = int(np.argmax(mask.reshape(mask.shape[0], -1).sum(1)))
            ax = axes[row, col]
            image = rendered.image.array[z].astype(np.float32)
            low, high = (-150, 250) if modality == "CT" else np.percentile(image, [0.5, 99.5])
            ax.imshow(image, cmap="gray", vmin=low, vmax=high, interpolation="bilinear")
            ax.contour(mask[z], levels=[0.5], colors="red", linewidths=0.8)
            spacing = rendered.image.spacing
            ax.set_title(
                f"subject {seed}, {modality}: {mask.shape[2]}x{mask.shape[1]}x{mask.shape[0]}, "
                f"{spacing[0]:g}x{spacing[1]:g}x{spacing[2]:g} mm",
                color="white",
                fontsize=9,
            )
            ax.set_aspect(spacing[1] / spacing[0])
            ax.axis("off")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, facecolor="black")
    plt.close(fig)
    return path
