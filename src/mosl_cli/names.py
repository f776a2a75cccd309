"""The names of the files mosl exchanges and the format tags inside them: the one place they are written.

Torch-free (nothing but constants), so that ``report``, the CLI and scripts can import it cheaply.
The layouts these names make up are described in ``docs/design.md`` ("Files exchanged").
"""

from __future__ import annotations

# Dataset directory (``mosl prepare --out``)
DATA_FILE = "data.safetensors"  # images uint8 [N, C, S, S], masks uint8 [N, 1, S, S]
MANIFEST_FILE = "manifest.json"  # format tag, size, channels, sources, one record per sample
DATASET_FORMAT = "mosl-dataset"  # the manifest's ``format``
SPLITS: tuple[str, ...] = ("train", "val", "test")  # the split names a manifest record may carry

# Run directory (``mosl pretrain --out``, ``mosl finetune --out``)
WEIGHTS_FILE = "model.safetensors"  # the weight file (``mosl finetune --init``, ``evaluate``/``predict --model``)
CONFIG_FILE = "config.json"  # the command, its settings and what they resolved to
LOG_FILE = "log.jsonl"  # one JSON object per epoch
METRICS_FILE = "metrics.json"  # a run's final figures; also the file ``mosl evaluate`` writes
CHECKPOINT_FILE = "checkpoint.safetensors"  # the state ``--resume`` continues from
WEIGHTS_FORMAT = "mosl-weights"  # the weight file's metadata ``format``
DATA_TAG_FILE = "data_tag.txt"  # optional, beside a pre-training's weights: the name ``mosl report`` gives its data
FOLD_PREFIX = "fold_"  # ``mosl finetune --folds K --out OUT``: fold k's run directory is OUT/fold_<k>

# Evaluation folder (``mosl evaluate --out``)
METRICS_FORMAT = "mosl-metrics"  # ``format`` of an evaluation's metrics.json
PER_CASE_FILE = "per_case.csv"  # one row per scored case

# Prediction folder (``mosl predict --out``): <stem><TAG>.png per scan (a folder <stem><TAG>/ for a cine)
MASK_TAG = "_mask"  # the mask
OVERLAY_TAG = "_overlay"  # --overlay: the scan with the lesion outline (.mp4 for a cine or video)
PROB_TAG = "_prob"  # --probabilities: the probability map
SEG_TAG = "_seg"  # --dicom-seg: <stem>_seg.dcm, the mask as a DICOM Segmentation

__all__ = [
    "DATA_FILE",
    "MANIFEST_FILE",
    "DATASET_FORMAT",
    "SPLITS",
    "WEIGHTS_FILE",
    "CONFIG_FILE",
    "LOG_FILE",
    "METRICS_FILE",
    "CHECKPOINT_FILE",
    "WEIGHTS_FORMAT",
    "DATA_TAG_FILE",
    "FOLD_PREFIX",
    "METRICS_FORMAT",
    "PER_CASE_FILE",
    "MASK_TAG",
    "OVERLAY_TAG",
    "PROB_TAG",
    "SEG_TAG",
]
