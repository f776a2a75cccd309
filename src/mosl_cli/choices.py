"""The fixed value lists of CLI options, as ``Literal`` types typer turns into real choices (listed in
``--help``, completed by the shell, a wrong value a usage error with exit 2).

Written out here so that ``mosl --help`` imports no torch; ``tests/test_conventions.py`` checks each
list against the registry it mirrors.
"""

from __future__ import annotations

from typing import Literal

Method = Literal["simclr", "moco", "simsiam", "mim"]  # methods.METHODS
Scope = Literal["encoder", "encoder-decoder"]  # methods.backbone.SCOPES
Preset = Literal["ultrasound", "simclr"]  # augment.PRESETS
Split = Literal["test", "val", "train", "all"]  # data.splits.SPLITS and "all"
ReaderFormat = Literal[
    "auto", "busi", "udiat", "hc18", "pocus", "camus", "cifar10", "miniimagenet", "dicom", "folder", "synthetic"
]  # data.readers.FORMATS
Arch = Literal[
    "unet",
    "unetplusplus",
    "manet",
    "linknet",
    "fpn",
    "pspnet",
    "deeplabv3",
    "deeplabv3plus",
    "pan",
    "upernet",
    "segformer",
    "dpt",
]  # smp.MODEL_ARCHITECTURES_MAPPING
ArchOrAuto = Literal["auto", Arch]  # auto: config.recipe_arch picks the decoder by --size
ExportFormat = Literal["onnx", "torchscript", "smp"]  # export.FORMATS
