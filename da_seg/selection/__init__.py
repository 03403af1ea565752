"""Checkpoint selection without target labels, and an audit of how well each criterion ranks checkpoints.

A CycleGAN's losses say little about which epoch gives the best segmentation of real CT, and a target domain without
labels offers no validation Dice. The registered ``selectors`` score a candidate from unlabelled data instead:

Translator criteria (``kind = "translator"``; a candidate exposes ``translate(volume)``; the cycle and identity
criteria also need ``translate_slices(stacks, direction)`` and ``context``, as `da_seg.translators.cyclegan.CycleGAN`
has; data: ``source`` = held-out ``(image, mask)`` source cases, ``target`` = unlabelled target volumes):

- ``cycle_error`` (lower is better): mean ``|G_ba(G_ab(a)) - a|`` over source slices and ``|G_ab(G_ba(b)) - b|`` over
  target slices, averaged; the cycle consistency on images the translator did not train on.
- ``identity_error`` (lower is better): mean ``|G_ab(b) - b|`` and ``|G_ba(a) - a|``. Only meaningful when the two
  domains share intensities (or the identity loss was on); for MR -> CT it mostly measures the domain gap.
- ``kid`` (lower is better): kernel inception distance (Binkowski et al. 2018: unbiased MMD^2, cubic polynomial
  kernel) between SynCT and real target slices, on features of a fixed, seeded, *random* 3-layer convolutional
  network (multi-scale channel means and standard deviations). No pretrained network is downloaded; random
  convolutional embeddings are a known usable substitute outside ImageNet-like domains (Naeem et al. 2020), but they
  are weaker than a trained Inception network: read KID values as relative, within one dataset.
- ``proxy_dice`` (higher is better): a tiny 2D segmenter is trained for a few hundred steps on one half of the
  SynCT (with the source masks, foreground vs background) and scored (Dice) on the other half: whether the SynCT
  keeps the anatomy recognisable.

Segmenter criteria (``kind = "segmenter"``; a candidate is a `da_seg.segmentation.TrainedSegmenter`, or anything with
``predict(volume) -> probabilities``; data: ``target`` = unlabelled target volumes):

- ``mean_entropy`` (lower is better): mean binary entropy of the foreground probabilities over all voxels.
- ``flip_agreement`` (higher is better): Dice between the labels of a volume and the mirrored-back labels of its
  left-right mirrored copy: a segmenter that understood the anatomy is equivariant to the flip.
- ``soft_neighbourhood_density`` (higher is better): SND (Saito et al. 2021). Adaptation to segmentation: a sample
  is a voxel, chosen uniformly at random (seeded), and its feature is the class-probability vector
  ``[background, structure 1..K]`` of its 3x3 in-plane neighbourhood, flattened and L2-normalised (a probability
  vector alone has 2 dimensions in the binary case, too few for neighbourhoods to mean anything). SND is the mean
  entropy of the softmax (temperature 0.05) over each sample's similarities to the others: confident, spatially
  coherent predictions form dense neighbourhoods.

`rank_checkpoints` scores candidates with one selector; `best_checkpoint` picks a translator's ``epoch_NNNN``
snapshot; `audit_translator_checkpoints` puts every criterion next to the true target Dice of each snapshot and
reports Spearman's rho, so users learn which criterion to trust on their data.
"""

from da_seg.selection.audit import (
    CheckpointAudit,
    audit_translator_checkpoints,
    best_checkpoint,
    build_selector,
    checkpoints,
    rank_checkpoints,
    spearman_with_truth,
    target_dice,
)
from da_seg.selection.criteria import (
    KID,
    CycleError,
    FlipAgreement,
    IdentityError,
    MeanEntropy,
    ProxyDice,
    RandomFeatures,
    Selector,
    SoftNeighbourhoodDensity,
    kid_from_features,
    register_selectors,
    snd_from_features,
)

__all__ = [
    "KID",
    "CheckpointAudit",
    "CycleError",
    "FlipAgreement",
    "IdentityError",
    "MeanEntropy",
    "ProxyDice",
    "RandomFeatures",
    "Selector",
    "SoftNeighbourhoodDensity",
    "audit_translator_checkpoints",
    "best_checkpoint",
    "build_selector",
    "checkpoints",
    "kid_from_features",
    "rank_checkpoints",
    "register_selectors",
    "snd_from_features",
    "spearman_with_truth",
    "target_dice",
]
