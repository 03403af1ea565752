"""TOML configuration -> typed, validated models.

Every key is documented in docs/config.md. Unknown keys are errors (a typo must never be silently ignored); a
validation error names the key path, the bad value and what is allowed. Component tables (``{name = "...", ...}``)
are checked against their registry by :func:`da_seg.api.validate`, which builds every component without training.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_serializer, model_validator

from da_seg.errors import ConfigError

ComponentSpec = dict[str, Any]
"""A component table: ``{name = "registered-name", other = "keyword arguments"}``."""

Probability = Annotated[float, Field(gt=0.0, lt=1.0)]
MIN_SPACING_MM = 0.1
DEVICE_PATTERN = r"auto|cpu|mps|cuda(:[0-9]+)?"
"""Device strings a config or ``--device`` may name (`da_seg.training.resolve_device` enforces it too)."""
DEVICE_HELP = "unknown device; use 'auto', 'cpu', 'cuda', 'cuda:N' (N = 0, 1, ...) or 'mps'"
THREADS_HELP = "use a whole number of threads >= 1, or 'auto' (the CPU cores other processes leave free)"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def mirrors_left_right(specs: Any) -> bool:
    """Whether augmentation ``specs`` flip images left-right, so a model trained with them knows mirrored input: what
    test-time flip averaging (`segmentation.tta_flip`, a translator's ``tta_flip``) relies on."""
    tables = [{"name": s} if isinstance(s, str) else s for s in specs or ()]
    return any(t.get("name") == "flip" and t.get("horizontal", True) and t.get("p", 0.5) > 0 for t in tables)


def _needs_name(spec: Any) -> Any:
    if isinstance(spec, str):
        return {"name": spec}
    if isinstance(spec, dict) and "name" not in spec:
        raise ValueError("a component table needs a 'name' key")
    return spec


class PhantomConfig(Strict):
    """Generate the task's phantom data set (into ``cache``) when the data folders are not given."""

    n_source: int = Field(12, ge=2, description="labelled source-domain subjects (e.g. MR with masks)")
    n_target: int = Field(12, ge=1, description="unlabelled target-domain subjects (CT) for translation training")
    n_evaluation: int = Field(8, ge=1, description="labelled target-domain subjects kept for evaluation only")
    n_target_labelled: int = Field(8, ge=0, description="labelled target subjects for the oracle baseline (0: none)")
    paired: bool = Field(True, description="also render each source subject in the target modality (fidelity)")
    seed: int = Field(0, ge=0)
    realism: str = Field(
        "default",
        description="the task's phantom preset: 'default', or 'clinical' (the prostate phantom: the real world's "
        "differences, docs/data.md)",
    )
    cache: Path | None = Field(None, description="where to write it; default ~/.cache/da_seg/phantom/<task>-<hash>")

    @model_serializer(mode="wrap")
    def _default_realism_unsaid(self, handler: Any) -> dict[str, Any]:
        """``realism = "default"`` is left out of dumps, so the fingerprints and phantom folders of every config
        written before the key existed stay what they were."""
        data = handler(self)
        if data.get("realism") == "default":
            data.pop("realism")
        return data


class DataConfig(Strict):
    """Where the images are. Folders hold ``images/`` and (when labelled) ``labels/`` with matching file names."""

    source: Path | None = Field(None, description="labelled source domain (MR): images/ + labels/")
    source_unlabelled: Path | None = Field(
        None, description="more source images without labels (images/): join the translator's training only"
    )
    target: Path | None = Field(None, description="unlabelled target domain (CT): images/; every image is segmented")
    predict: Path | None = Field(None, description="more target images to segment (images/); used for nothing else")
    evaluation: Path | None = Field(None, description="labelled target domain for evaluation only")
    target_labelled: Path | None = Field(None, description="labelled target training data: enables the oracle")
    paired_target: Path | None = Field(None, description="target-modality images of the source subjects")
    phantom: PhantomConfig | None = None
    spacing: tuple[float, float, float] | None = Field(None, description="(z, y, x) mm; default: the task's")
    size: tuple[int, int] | None = Field(None, description="in-plane (H, W) after resampling; default: the task's")
    centre: Literal["body", "grid"] | None = Field(
        None, description="centre of the in-plane crop: each volume's body centroid or its grid's; default: the task's"
    )
    source_intensity: ComponentSpec | None = Field(None, description="intensity preset; default: the task's")
    target_intensity: ComponentSpec | None = Field(None, description="intensity preset; default: the task's")
    extent: ComponentSpec | None = Field(
        None,
        description="cut every target image to the slices that hold the source images' anatomy: "
        "{name = 'mutual_information'} or {name = 'box', z_mm = [low, high]} (da_seg.extent); default: whole images",
    )
    cache: Path | None = Field(None, description="preprocessed-volume cache; default <output>/cache")

    _names = field_validator("source_intensity", "target_intensity", "extent", mode="before")(_needs_name)

    @model_serializer(mode="wrap")
    def _no_extent_unsaid(self, handler: Any) -> dict[str, Any]:
        """``extent`` unset is left out of dumps, so the fingerprints of configs written before the key existed stay
        what they were."""
        data = handler(self)
        if data.get("extent") is None:
            data.pop("extent", None)
        return data

    @field_validator("spacing")
    @classmethod
    def _positive_spacing(cls, v: tuple[float, float, float] | None) -> Any:
        if v is not None and min(v) < MIN_SPACING_MM:
            raise ValueError(f"every spacing must be at least {MIN_SPACING_MM} mm (finer grids do not fit in memory)")
        return v

    @field_validator("size")
    @classmethod
    def _positive_size(cls, v: tuple[int, int] | None) -> Any:
        if v is not None and min(v) < 8:
            raise ValueError("in-plane size must be at least 8 pixels")
        return v


DEFAULT_AUGMENT: list[ComponentSpec] = [
    {"name": "random_ratio_crop", "min_ratio": 0.5},
    {"name": "rotation", "degrees": 10.0},
    {"name": "flip", "horizontal": True, "vertical": False},
]


class SegmentationConfig(Strict):
    """The segmenter and how it is trained (on SynCT) and applied (to real target images)."""

    model: ComponentSpec = Field(default_factory=lambda: {"name": "resunet25d"})
    context: int = Field(1, ge=0, le=8, description="neighbour slices each side: 2*context+1 input channels")
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(1e-3, gt=0)
    loss: ComponentSpec = Field(default_factory=lambda: {"name": "bce"})
    multiclass: Literal["sigmoid", "softmax"] = Field(
        "sigmoid",
        description="'sigmoid': one channel per structure (bce, dice, bce_dice); 'softmax': background + one channel "
        "per structure, argmax (ce, softmax_dice, ce_dice)",
    )
    augment: list[ComponentSpec] = Field(default_factory=lambda: [dict(a) for a in DEFAULT_AUGMENT])
    self_training_rounds: int = Field(
        1, ge=1, le=10, description="rounds of the self_training baseline, each teaching the next"
    )
    randomise: list[ComponentSpec] = Field(
        default_factory=lambda: [{"name": "gin"}, {"name": "bezier"}],
        description="intensity remappings added after `augment` for the domain_randomisation baseline only",
    )
    val_fraction: float = Field(
        0.2, gt=0.0, le=0.5, description="share of the training subjects held out for validation (at most half)"
    )
    folds: int = Field(1, ge=1, description="k-fold cross-validation over the source subjects (1: one split)")
    members: int = Field(
        1,
        ge=1,
        le=16,
        description="ours: each segmenter the mean of this many models trained on the same cases with seeds seed, "
        "seed+1, ... (other initialisation, validation split, batch order, augmentation); member 0 is the single model",
    )
    threshold: Probability = 0.5
    calibrate: Literal["none", "source_volume"] = Field(
        "none",
        description="ours: 'source_volume' sets each trained segmenter's threshold (per structure) on the unlabelled "
        "target images so that their mean predicted volume matches the labelled source's mean; sigmoid models only",
    )
    tta_flip: bool = False
    largest_component: bool = True
    component_rule: Literal["largest", "most_confident"] = Field(
        "largest",
        description="which component `largest_component` keeps per structure: the largest, or the one with the "
        "highest mean probability (ours)",
    )

    _names = field_validator("model", "loss", mode="before")(_needs_name)

    @field_validator("augment", "randomise", mode="before")
    @classmethod
    def _aug_names(cls, v: Any) -> Any:
        return [_needs_name(a) for a in v] if isinstance(v, list) else v

    def stage_settings(self, exclude: set[str] = frozenset()) -> dict[str, Any]:
        """The settings a trained segmenter depends on, for stage keys. ``members`` enters only when > 1 and
        ``calibrate`` only when set, so the stages of runs from before they existed keep their keys (``--resume``
        redoes nothing)."""
        unset = {"members"} if self.members == 1 else set()
        unset |= {"calibrate"} if self.calibrate == "none" else set()
        return self.model_dump(mode="json", exclude=set(exclude) | unset)

    def inference_defaults(self) -> dict[str, Any]:
        """What a trained segmenter saves as its inference defaults (`TrainedSegmenter.defaults`)."""
        keys = ("threshold", "largest_component", "component_rule", "tta_flip")
        return {k: getattr(self, k) for k in keys}

    @model_validator(mode="after")
    def _calibrate_needs_sigmoid(self) -> SegmentationConfig:
        if self.calibrate != "none" and self.multiclass == "softmax":
            raise ValueError(
                f"segmentation.calibrate = '{self.calibrate}' sets a threshold, and a softmax model (multiclass = "
                "'softmax') takes the argmax without one: use multiclass = 'sigmoid' or calibrate = 'none'"
            )
        return self

    @model_validator(mode="after")
    def _folds_or_members(self) -> SegmentationConfig:
        if self.folds > 1 and self.members > 1:
            raise ValueError(
                f"segmentation.folds = {self.folds} and members = {self.members}: both make each segmenter an "
                "ensemble (of folds, or of seeds on the same cases); choose one"
            )
        return self

    @model_validator(mode="after")
    def _tta_flip_needs_flipped_training(self) -> SegmentationConfig:
        """A segmenter never shown mirrored images predicts nonsense on them where anatomy is lateralised (the
        cardiac phantom's mean Dice fell from 0.58 to 0.13 with ``tta_flip``): refuse the combination."""
        if self.tta_flip and not mirrors_left_right(self.augment):
            raise ValueError(
                "tta_flip averages with the prediction on the left-right mirrored image, but segmentation.augment "
                "has no left-right flip, so the segmenter never saw mirrored images (on lateralised anatomy, e.g. "
                'the heart, the mirrored prediction is wrong); add { name = "flip" } to augment or drop tta_flip'
            )
        return self


class RuntimeConfig(Strict):
    """How compute is used; the same config runs on a laptop CPU and a GPU machine."""

    device: str = Field("auto", description="'auto' (CUDA when present, else CPU), 'cpu', 'cuda', 'cuda:1', 'mps'")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description="autocast dtype; 'auto': bf16 on CPUs with native bf16 (measured 1.6-2.4x faster), fp32 on "
        "other CPUs and on GPUs (measured no slower there); fp16 only on GPU (docs/performance.md)",
    )
    channels_last: bool | Literal["auto"] = Field(
        "auto",
        description="NHWC memory layout; 'auto': segmenters NHWC, translator NCHW (measured, docs/performance.md)",
    )
    compile: bool = False
    threads: int | Literal["auto"] | None = Field(
        "auto",
        description="torch CPU threads; 'auto': the cores other processes leave free (da_seg.threads); None: torch's",
    )
    deterministic: bool = Field(False, description="deterministic GPU kernels (slower); see docs/errors.md")

    @field_validator("device")
    @classmethod
    def _known_device(cls, v: str) -> str:
        if not re.fullmatch(DEVICE_PATTERN, v):
            raise ValueError(DEVICE_HELP)
        return v

    @field_validator("threads", mode="before")
    @classmethod
    def _known_threads(cls, v: Any) -> Any:
        if v is None or v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
            return v
        raise ValueError(THREADS_HELP)

    def layout(self, part: str) -> bool:
        """Whether ``part`` (``"segmenter"`` or ``"translator"``) trains in channels_last, resolving ``"auto"``.

        ``auto`` follows the measurements in docs/performance.md: NHWC speeds up the U-Net segmenters (with bf16,
        2.84x instead of 2.01x) but not the CycleGAN, whose instance norm and reflection padding are slower in NHWC.
        """
        if self.channels_last == "auto":
            return part == "segmenter"
        return bool(self.channels_last)


class SelectionConfig(Strict):
    """Which translator checkpoint to trust without target labels, and an audit of the criteria."""

    translator: ComponentSpec | None = Field(None, description="criterion picking the translator snapshot; None: last")
    audit: bool = Field(False, description="rank every saved snapshot by every criterion against the true target Dice")
    criteria: list[ComponentSpec] = Field(
        default_factory=lambda: [
            {"name": n}
            for n in (
                "cycle_error",
                "kid",
                "proxy_dice",
                "mean_entropy",
                "flip_agreement",
                "soft_neighbourhood_density",
            )
        ],
        description="criteria the audit compares",
    )

    _names = field_validator("translator", mode="before")(_needs_name)

    @field_validator("criteria", mode="before")
    @classmethod
    def _criteria_names(cls, v: Any) -> Any:
        return [_needs_name(a) for a in v] if isinstance(v, list) else v


class Config(Strict):
    """A whole ``daseg run``: task, data, translator, segmenter, runtime."""

    task: str = Field(..., description="registered task name (`daseg plugins` lists them)")
    name: str | None = Field(None, description="run name (a plain folder name); default: the config file's stem")
    seed: int = Field(0, ge=0)
    output: Path = Field(Path("runs"), description="parent folder of run directories (relative to the cwd)")
    plugins: list[str] = Field(default_factory=list, description="extra plugin modules to load")
    data: DataConfig = Field(default_factory=DataConfig)
    translator: ComponentSpec = Field(default_factory=lambda: {"name": "cyclegan"})
    segmentation: SegmentationConfig = Field(default_factory=SegmentationConfig)
    baselines: list[Literal["no_adaptation", "oracle", "domain_randomisation", "self_training", "adabn", "two_way"]] = (
        Field(default_factory=lambda: ["no_adaptation", "oracle"])
    )
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    selection: SelectionConfig = Field(default_factory=SelectionConfig)

    _names = field_validator("translator", mode="before")(_needs_name)

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str | None) -> Any:
        if v is not None and (v in ("", ".", "..") or "/" in v or "\\" in v or "\0" in v):
            raise ValueError(
                "a run name is a plain folder name (no '/', '\\', '.' or '..'); the run goes to output/name"
            )
        return v

    @field_validator("baselines")
    @classmethod
    def _two_way_needs_source_segmenter(cls, v: list[str]) -> list[str]:
        if "two_way" in v and "no_adaptation" not in v:
            raise ValueError(
                "the two_way baseline averages the SynCT segmenter with the segmenter trained on the source images "
                '(the no_adaptation baseline); add "no_adaptation" to baselines'
            )
        return v

    @property
    def run_name(self) -> str:
        return self.name or "run"


def _format_error(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    path = ".".join(str(p) for p in first["loc"]) or "<top level>"
    kind = first["type"]
    if kind == "extra_forbidden":
        return f"{source}: unknown key '{path}'; remove it or check its spelling (see docs/config.md)"
    if kind == "missing":
        return f"{source}: missing required key '{path}'"
    value = first.get("input")
    more = f" (and {len(err.errors()) - 1} more problem(s))" if len(err.errors()) > 1 else ""
    return f"{source}: key '{path}' = {value!r}: {first['msg']}{more}"


def _resolve_paths(data: dict[str, Any], base: Path) -> None:
    section = data.get("data")
    if not isinstance(section, dict):
        return
    for key in ("source", "source_unlabelled", "target", "predict", "evaluation", "target_labelled", "paired_target"):
        if isinstance(section.get(key), str):
            section[key] = str((base / Path(section[key]).expanduser()).resolve())
    if isinstance(section.get("cache"), str):
        section["cache"] = str((base / Path(section["cache"]).expanduser()).resolve())
    phantom = section.get("phantom")
    if isinstance(phantom, dict) and isinstance(phantom.get("cache"), str):
        phantom["cache"] = str((base / Path(phantom["cache"]).expanduser()).resolve())


def parse_config(data: dict[str, Any], source: str = "<config>", base: Path | None = None) -> Config:
    """Validate a config dictionary; data paths are resolved against ``base`` (the config file's folder)."""
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    if base is not None:
        _resolve_paths(data, base)
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_error(err, source)) from None


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    """Read and validate a TOML config file. ``overrides`` are dotted keys (``{"segmentation.epochs": 2}``)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML ({err})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; a config is TOML saved as UTF-8") from None
    for dotted, value in (overrides or {}).items():
        set_dotted(data, dotted, value)
    data.setdefault("name", path.stem)
    return parse_config(data, source=str(path), base=path.parent)


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``a.b.c`` in nested dictionaries, creating the tables on the way."""
    *parents, leaf = dotted.split(".")
    node = data
    for key in parents:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"cannot set '{dotted}': '{key}' is not a table")
    node[leaf] = value
