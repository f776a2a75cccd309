"""Each step's settings: one frozen dataclass, built by the CLI, consumed by the core, saved as JSON.

Defaults here are the product's defaults; the README documents them, and ``studies/`` holds the experiments
behind the ones that were chosen by measurement.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, TypeVar

from mosl_cli.names import WEIGHTS_FILE as WEIGHTS_FILE  # re-exported: older code imports it from here

# Default locations in the working directory, so that the steps chain with no options.
DEFAULT_DATASET = "mosl_data"
DEFAULT_PRETRAIN_RUN = "mosl_pretrain"
DEFAULT_FINETUNE_RUN = "mosl_finetune"
DEFAULT_EVAL_DIR = "mosl_eval"
DEFAULT_REPORT_DIR = "mosl_report"
DEFAULT_GROUP_PATTERN = r"(?i)(?<![a-z])(?:patient|pat)[ _-]?(\d+)"  # patient_12, Patient 3, pat7 -> its number


@dataclass(frozen=True)
class PrepareConfig:
    """``mosl prepare``: raw folders in, one dataset directory out."""

    sources: tuple[str, ...]
    out: str = DEFAULT_DATASET
    format: str = "auto"
    size: int = 256
    channels: int = 1
    seed: int = 0
    splits: tuple[float, float, float] = (0.7, 0.1, 0.2)
    frames_per_video: int | None = 8  # None: every frame
    camus_label: int = 1
    synthetic_count: int = 600
    dedup_distance: int = 6  # max Hamming distance of two 64-bit perceptual hashes to group them (see data/splits.py)
    workers: int = 0  # 0: one decode process per core
    region_crop: bool = True  # crop DICOM frames to their ultrasound imaging region (data/readers/dicom.py)
    overwrite: bool = False  # replace a dataset already in ``out``
    organ: str | None = None  # organ of the folder-read sources (None: the folder rule, see readers/folder.py)
    group_pattern: str = DEFAULT_GROUP_PATTERN  # patient key in file names (readers/tree.py)
    crop: bool = True  # crop folder-read screen exports to the ultrasound image (data/crop.py)


# The network and input size of the default fine-tuning recipe; pre-training defaults to the same, so
# that `pretrain` then `finetune` with no options pre-train exactly the model that is fine-tuned.
RECIPE_ENCODER = "resnet18"
RECIPE_SIZE = 128
UNETPLUSPLUS_MIN_SIZE = 256  # from here up the default decoder is UNet++ (studies/finetune-recipe/README.md)


def recipe_arch(size: int, deep_supervision: bool = False) -> str:
    """The default decoder at ``size`` px: UNet++ from 256 px, where it won on val; U-Net below that
    and with deep supervision (built for U-Net only)."""
    return "unetplusplus" if size >= UNETPLUSPLUS_MIN_SIZE and not deep_supervision else "unet"


@dataclass(frozen=True)
class PretrainConfig:
    """``mosl pretrain``: self-supervised pre-training of a U-Net encoder (or the whole U-Net).

    ``None`` means "the method's published default" (see ``methods/``).
    """

    method: str = "mim"  # the best measured arm: studies/pretraining-baseline/README.md
    data: tuple[str, ...] = (DEFAULT_DATASET,)
    data_weights: tuple[float, ...] | None = None
    arch: str = "auto"  # recipe_arch: the decoder finetune builds at this size, so that one is pre-trained
    encoder: str = RECIPE_ENCODER
    scope: str = None  # type: ignore[assignment]  # None: the method's own, resolved below
    positives: str = (
        "views"  # views: two views of one scan; group: two scans or frames of one group (data/positives.py)
    )
    dense_weight: float = 0.0  # weight of the pixel-level loss on the decoder (methods/dense.py); needs encoder-decoder
    size: int = RECIPE_SIZE
    epochs: int = 200  # studies/pretraining/pretraining-study.md: the gain against pre-training length
    batch_size: int = 64
    lr: float | None = None
    weight_decay: float | None = None
    warmup_epochs: int = 5
    preset: str = "ultrasound"
    crop_scale: tuple[float, float] | None = None  # None: the preset's own (ultrasound 0.2-1, simclr 0.08-1)
    jitter: float = 0.4  # brightness/contrast jitter strength of the views (augment.JITTER)
    temperature: float | None = None
    proj_dim: int | None = None
    proj_hidden: int | None = None
    pred_hidden: int | None = None
    momentum: float | None = None
    queue_size: int | None = None
    mask_ratio: float | None = None  # mim: fraction of patches masked
    patch_size: int | None = None  # mim: masked patch side in pixels (None: size // 8, at least 4)
    steps_per_epoch: int | None = None  # default: one pass over the data
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    channels_last: bool = True
    include_test: bool = False  # test-split images are held out of pre-training unless asked
    checkpoint_every: float = 60.0  # seconds between checkpoints (train.CheckpointClock); 0: every epoch
    out: str = DEFAULT_PRETRAIN_RUN
    resume: bool = False
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.arch == "auto":
            object.__setattr__(self, "arch", recipe_arch(self.size))
        if self.scope is None:  # masked image modelling reconstructs through the decoder: the whole U-Net
            object.__setattr__(self, "scope", "encoder-decoder" if self.method == "mim" else "encoder")


@dataclass(frozen=True)
class FinetuneConfig:
    """``mosl finetune``: supervised segmentation training from pre-trained (or random) weights.

    The default recipe (``finetune.py``; ``benchmarks/finetune_recipe.py`` compares it with a plain
    loop): resnet18 U-Net at 128 px, 100 epochs of AdamW with warm-up and cosine decay to 0,
    per-image soft Dice + BCE, nnU-Net-like augmentation, the scans with a lesion (``empty_masks``
    adds the normal ones), the last epoch's weights kept, a post-processing rule chosen on val.
    """

    data: str = DEFAULT_DATASET
    init: str = "auto"
    init_part: str = "all"  # or "encoder": load only the encoder of --init (decoder and head start random)
    arch: str = "auto"  # resolved in __post_init__ by recipe_arch
    encoder: str = RECIPE_ENCODER
    label_fraction: float = 1.0
    size: int = RECIPE_SIZE
    epochs: int = 100
    batch_size: int = 16
    dice: str = "image"  # the soft Dice loss per image, averaged, or "batch": over the whole batch's pixels
    optimizer: str = "adamw"  # or "sgd": Nesterov momentum 0.99, as nnU-Net (with a larger lr, e.g. 0.01)
    lr: float = 1e-3
    schedule: str = "cosine"  # after warm-up: half-cosine decay to 0, or "poly" (nnU-Net's (1 - t)^0.9)
    warmup_epochs: int = 5
    encoder_lr_scale: float = 1.0
    weight_decay: float = 1e-4
    freeze_encoder_epochs: int = 0
    freeze_encoder_bn: bool = False  # keep the initial weights' BN statistics in the encoder (eval-mode BN)
    select: str = "last"  # which weights become model.safetensors: last, ema (moving average), or best (val Dice)
    ema_decay: float = 0.998
    patience: int = 0  # with select=best: stop after this many epochs without a better val Dice (0: never)
    steps_per_epoch: int | None = None  # default: one pass over the labelled images, at least 10 steps
    augment: bool = True
    augment_strength: str = "strong"  # augment.SEG_AUGMENTS
    cutmix: float = 0.0  # probability per scan of a box of another scan pasted in, mask with it (augment.cutmix)
    elastic: float = 0.0  # probability per scan of an elastic deformation of image and mask (augment.elastic)
    normalisation: str = "fixed"  # models.NORMALISATIONS: fixed mean and std, or each image standardised
    empty_masks: bool = False  # train on labelled scans whose mask is empty too (BUSI's normal scans)
    postprocess: bool = True  # choose a post-processing rule on val (postprocess.py) and store it
    lesion_head: bool = False  # an image-level lesion-present output, trained on every scan, gating masks
    teacher: str | None = None  # self-training: this model's masks label the train scans outside the fraction
    # with teacher: the fraction of its lesion masks kept, those it is surest of (0.7 won on val over 1, all of
    # them: studies/pretraining-baseline/README.md, section "Confidence-filtered self-training")
    teacher_keep: float = 0.7
    # with teacher: its pixels with a probability strictly between 1 - teacher_sure and teacher_sure are left
    # out of the loss (0.5: none)
    teacher_sure: float = 0.5
    # with teacher: the share of each batch drawn from the labelled scans (None: in proportion to the counts)
    labelled_share: float | None = None
    semi: str = "none"  # or "fixmatch": weak-to-strong consistency on the unlabelled train scans (consistency.py)
    semi_threshold: float = 0.95  # --semi: pixels whose probability is this sure become pseudo-labels
    semi_weight: float = 1.0  # --semi: weight of the consistency term beside the supervised loss
    deep_supervision: bool = False  # auxiliary mask heads on the decoder's coarser blocks while training
    class_aux: float = 0.0  # weight of a benign/malignant output trained beside the masks (class_aux.py); 0: off
    decoder_attention: str = "none"  # or "scse": squeeze-and-excitation in each U-Net decoder block
    folds: int = 1  # > 1: cross-validation over train+val, one model per fold in out/fold_<k>
    fold: int | None = None  # with folds > 1: train this fold only (else every fold, one after another)
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    channels_last: bool = True
    checkpoint_every: float = 60.0  # seconds between checkpoints (train.CheckpointClock); 0: every epoch
    out: str = DEFAULT_FINETUNE_RUN
    resume: bool = False
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.arch == "auto":
            object.__setattr__(self, "arch", recipe_arch(self.size, self.deep_supervision))


@dataclass(frozen=True)
class EvaluateConfig:
    """``mosl evaluate``: per-case and per-class metrics of a segmentation model on one split."""

    model: str | tuple[str, ...] = f"{DEFAULT_FINETUNE_RUN}/{WEIGHTS_FILE}"  # a file, a run folder, folds, or several
    data: str = DEFAULT_DATASET
    split: str = "test"
    out: str = DEFAULT_EVAL_DIR
    tta: bool = True
    postprocess: bool = True
    threshold: float = 0.5
    batch_size: int = 64
    device: str = "auto"
    nsd_tolerance: float = 2.0  # mm: normalised surface Dice tolerance, where samples have a spacing
    detector: str | tuple[str, ...] | None = None  # a model whose empty masks call scans normal (inference.py)


@dataclass(frozen=True)
class EvaluateFolderConfig:
    """``mosl evaluate --pred DIR --ref DIR``: mask files scored against reference masks, no model."""

    pred: str
    ref: str
    out: str = DEFAULT_EVAL_DIR


@dataclass(frozen=True)
class PredictConfig:
    """``mosl predict``: scans in, 0/255 masks (at each scan's own size) out."""

    inputs: tuple[str, ...]
    model: str | tuple[str, ...] = f"{DEFAULT_FINETUNE_RUN}/{WEIGHTS_FILE}"  # a file, a run folder, folds, or several
    out: str | None = None
    overlay: bool = False
    probabilities: bool = False  # also the probability map, 0-255, before threshold and post-processing
    tta: bool = True
    postprocess: bool = True
    threshold: float = 0.5
    batch_size: int = 32
    device: str = "auto"
    mask_values: str = "0-255"  # or "0-1" (what nnU-Net and MONAI read)
    measurements: str | None = None  # CSV of lesion area (mm²) and largest diameter per mask
    region_crop: bool = True  # crop DICOM frames to their ultrasound imaging region
    dicom_seg: bool = False  # also the mask of each single-frame DICOM scan as a DICOM SEG (<stem>_seg.dcm)
    detector: str | tuple[str, ...] | None = None  # a model whose empty masks call scans normal (inference.py)


@dataclass(frozen=True)
class ReportConfig:
    """``mosl report``: tables and figures from many finetune/evaluate run folders."""

    runs: tuple[str, ...]
    out: str = DEFAULT_REPORT_DIR
    cases: int = 4


C = TypeVar("C")


def to_dict(cfg: Any) -> dict[str, Any]:
    """A settings dataclass as a JSON-ready dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def from_dict(cls: type[C], data: dict[str, Any]) -> C:
    """Rebuild a settings dataclass from :func:`to_dict` output; unknown keys are ignored."""
    names = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in names}
    return cls(**kwargs)


__all__ = [
    "PrepareConfig",
    "PretrainConfig",
    "FinetuneConfig",
    "EvaluateConfig",
    "EvaluateFolderConfig",
    "PredictConfig",
    "ReportConfig",
    "to_dict",
    "from_dict",
    "field",
]
