"""Training a 2.5D segmenter and applying it to whole volumes (the paper's step 2, section 2.3).

`train_segmenter` builds any registered segmenter with ``2 * context + 1`` input channels and trains it with Adam and
a registered loss (BCE in the paper) on slices gathered from a `SliceBank`, augmented on the device. Cases (not
slices) are split into training and validation, and the checkpoint with the best validation 3D Dice is kept.
Checkpoints follow the translator's rules: ``workdir/last`` (weights, optimizer state, meta) is rewritten atomically
every epoch and a rerun with the same workdir resumes from it; ``workdir/model`` is the best model, a
self-contained directory that `TrainedSegmenter.load` and `predict_file` read.

``classes = 1`` is the binary case (one sigmoid channel). With ``classes = K > 1`` the network has one sigmoid
channel per structure (label ``k`` is channel ``k - 1``, one-vs-rest, so the same BCE/Dice losses apply) and a voxel
takes the most probable structure when its probability reaches the threshold. With ``multiclass = "softmax"`` the
network has ``K + 1`` channels (background first), is trained with a softmax loss (``ce``, ``softmax_dice``,
``ce_dice``) on one-hot targets, and a voxel takes the argmax class.

`match_source_volume` calibrates a trained segmenter's threshold on unlabelled target images (ours).
`adapt_batch_norm` adapts a trained segmenter to unlabelled target images without training (AdaBN).
`TwoWaySegmenter` averages a target-domain segmenter with a source-domain one applied through the translator's inverse.
"""

from da_seg.segmentation.adaptation import adapt_batch_norm
from da_seg.segmentation.apply import load_segmenter, model_domain, predict, predict_file
from da_seg.segmentation.calibration import match_source_volume, mean_volumes
from da_seg.segmentation.inference import (
    COMPONENT,
    ENSEMBLE,
    Case,
    Segmenter,
    SegmenterEnsemble,
    TrainedSegmenter,
    build_segmenter,
)
from da_seg.segmentation.postprocess import COMPONENT_RULES, largest_components, probabilities_to_labels
from da_seg.segmentation.train import (
    FoldResult,
    cross_validate,
    fold_indices,
    split_cases,
    targets,
    train_segmenter,
    validation_dice,
)
from da_seg.segmentation.two_way import TWO_WAY, TwoWaySegmenter

__all__ = [
    "COMPONENT",
    "COMPONENT_RULES",
    "ENSEMBLE",
    "TWO_WAY",
    "Case",
    "FoldResult",
    "Segmenter",
    "SegmenterEnsemble",
    "TrainedSegmenter",
    "TwoWaySegmenter",
    "adapt_batch_norm",
    "build_segmenter",
    "cross_validate",
    "fold_indices",
    "largest_components",
    "load_segmenter",
    "match_source_volume",
    "mean_volumes",
    "model_domain",
    "predict",
    "predict_file",
    "probabilities_to_labels",
    "split_cases",
    "targets",
    "train_segmenter",
    "validation_dice",
]
