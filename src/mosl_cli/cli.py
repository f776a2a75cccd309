"""The ``mosl`` command: one thin function per step. Each parses its options into a settings
dataclass, calls one core function and renders the result with Rich. Core modules are imported
inside the commands, so ``mosl --help`` never imports torch.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from mosl_cli import choices as K
from mosl_cli import config as C

app = typer.Typer(
    name="mosl",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    help="Multi-organ self-supervised pre-training for breast-lesion segmentation in ultrasound.\n\n"
    "Steps: prepare → pretrain → finetune → evaluate → predict (and report). Each reads what the "
    "previous one wrote; with default folders they chain with no options.",
)
console = Console(stderr=True)  # notes and errors: markup in the label only, the text escaped
out_console = Console(markup=False)  # results: paths and names printed as they are
_STATE = {"debug": False}
T = TypeVar("T")
RESUME_HINT = "finished epochs are kept; rerun the same command with --resume"


def _positive(value: int) -> int:
    """``--epochs`` and ``--batch-size``: a usage error below 1."""
    if value < 1:
        raise typer.BadParameter(f"{value}: use 1 or more")
    return value


def _one_of(option: str, value: str, choices: Any) -> None:
    if value not in choices:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(choices)}", param_hint=option)


def _check_size(value: int) -> int:
    """``--size`` of pretrain and finetune: a usage error outside 16-4096 pixels."""
    if not 16 <= value <= 4096:
        raise typer.BadParameter(f"{value} is outside 16 to 4096 pixels (e.g. 64)")
    return value


# Options shared by several steps, defined once.
DataDir = Annotated[Path, typer.Option("--data", "-d", help="Dataset directory written by `mosl prepare`.")]
OutDir = Annotated[Path, typer.Option("--out", "-o", help="Output folder.")]
Seed = Annotated[int, typer.Option("--seed", help="Random seed (weights, order, augmentation, label subset).")]
Device = Annotated[str, typer.Option("--device", help="auto (CUDA when present), cpu, cuda or cuda:N.")]
Arch = Annotated[
    K.ArchOrAuto,
    typer.Option(
        "--arch",
        help="smp architecture (unet, unetplusplus, fpn, ...); auto: UNet++ from 256 px, U-Net below (and with "
        "finetune --deep-supervision).",
    ),
]
Encoder = Annotated[str, typer.Option("--encoder", help="smp encoder (resnet18, resnet34, resnet50, ...).")]
Size = Annotated[
    int,
    typer.Option(
        "--size", callback=_check_size, help="Input size in pixels, 16 to 4096 (images are resized on the device)."
    ),
]
Epochs = Annotated[int, typer.Option("--epochs", callback=_positive, help="Number of epochs.")]
BatchSize = Annotated[
    int, typer.Option("--batch-size", "-b", callback=_positive, help="Global batch size (all processes together).")
]
Resume = Annotated[
    bool,
    typer.Option(
        "--resume",
        help=(
            "Continue the run in --out from its last finished epoch. Only --device, --checkpoint-every and --out "
            "may differ from the run's options; any other change is refused (it would change the result)."
        ),
    ),
]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace a run already in --out.")]
NoAmp = Annotated[
    bool, typer.Option("--no-amp", help="Disable bfloat16 autocast (used on CUDA and on CPUs with native bf16).")
]
CheckpointEvery = Annotated[
    float,
    typer.Option(
        "--checkpoint-every",
        help="Seconds between checkpoints for --resume (the first and last epoch always write one; 0: every epoch).",
    ),
]
ModelFile = Annotated[Path, typer.Option("--model", "-m", help="Segmentation weight file written by `mosl finetune`.")]
Models = Annotated[
    list[Path],
    typer.Option(
        "--model",
        "-m",
        help=(
            "Segmentation weight file written by `mosl finetune`, a run folder, or a folder of --folds runs; "
            "repeat to average several models."
        ),
    ),
]
Detector = Annotated[
    Optional[list[Path]],
    typer.Option(
        "--detector",
        help=(
            "A second model (file, run folder or folds; repeat to average) that decides which scans show a "
            "lesion: where its own mask is empty the scan is called normal (e.g. one fine-tuned with "
            "--lesion-head --empty-masks --dice lesion)."
        ),
    ),
]
TTA = Annotated[bool, typer.Option("--tta/--no-tta", help="Average with the left-right mirrored prediction.")]
Postprocess = Annotated[
    bool,
    typer.Option(
        "--postprocess/--no-postprocess",
        help="Apply the post-processing rule stored in the weight file (chosen on val by finetune).",
    ),
]
Threshold = Annotated[float, typer.Option("--threshold", help="Probability threshold for the lesion mask.")]

ConfigFile = Annotated[
    Optional[Path],
    typer.Option(
        "--config",
        help=(
            "Replay a run's config.json (its settings become the defaults; options given here override them; "
            "not --out/--resume/--overwrite)."
        ),
        is_eager=True,
        callback=lambda ctx, value: _replay_config(ctx, value),
        exists=True,
        dir_okay=False,
    ),
]
JsonOut = Annotated[
    bool, typer.Option("--json", help="Print one JSON document on stdout (for scripts) instead of tables.")
]


def _replay_config(ctx: typer.Context, value: Optional[Path]) -> Optional[Path]:
    """--config: a run's settings as click's default map, read before the other options are."""
    if value is None or ctx.resilient_parsing:
        return value
    from mosl_cli.errors import MoslError
    from mosl_cli.replay import cli_defaults, read_run_config

    try:
        doc = read_run_config(value, str(ctx.info_name))
    except MoslError as exc:
        raise typer.BadParameter(str(exc), param_hint="--config") from None
    names = {p.name for p in ctx.command.params if p.name}
    ctx.default_map = {**(ctx.default_map or {}), **cli_defaults(doc, names)}
    return value


def _show_flags_as_flags() -> None:
    """typer's rich help labels every flag `<bool>`, which reads as "takes a value": show no type for flags."""
    from typer.core import TyperOption

    original = getattr(TyperOption, "display_type_rich", None)
    if original is None or getattr(original, "_mosl", False):
        return

    def display_type_rich(self: Any, ctx: Any) -> Optional[str]:
        return None if getattr(self, "is_flag", False) else original(self, ctx)

    display_type_rich._mosl = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_show_flags_as_flags()


def _is_main_rank() -> bool:
    return os.environ.get("RANK", "0") == "0"


def _call(
    fn: Callable[..., T],
    *args: Any,
    out: Path | None = None,
    interrupted: str = "nothing half-written was left",
    **kwargs: Any,
) -> T:
    """Run one step's core function so that every expected failure ends in one line and its exit code
    (:func:`mosl_cli.exits.one_line_errors`); ``out``: the step's output folder, created first and
    removed again if the step fails while it is still empty."""
    from mosl_cli.exits import make_out, one_line_errors, remove_empty

    created: list[Path] = []
    with one_line_errors(console, _STATE["debug"], interrupted):
        try:
            if out is not None and _is_main_rank():
                created = make_out(out)
            return fn(*args, **kwargs)
        except BaseException:
            remove_empty(created)
            raise


def _print_json(doc: Any) -> None:
    """One JSON document on stdout, nothing else (NaN written as null)."""
    import json
    import math

    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return str(v) if isinstance(v, Path) else v

    print(json.dumps(clean(doc)), flush=True)


class _TrainingProgress:
    """Training progress (rank 0 only): a Rich bar on a terminal, plain lines on stdout when either
    stream is not one (nohup, SLURM, CI); see :mod:`mosl_cli.progress`."""

    def __init__(self, title: str, expect: dict[str, str] | None = None, log_every: int = 0) -> None:
        from mosl_cli.progress import PlainLines

        self.title = title
        self.expect = expect or {}  # the --arch/--encoder asked for: a notice when the init file builds another
        self.progress: Progress | None = None
        self.task: Any = None
        self.steps = 0
        interactive = console.is_terminal and out_console.is_terminal
        self.lines = PlainLines(title, log_every) if _is_main_rank() and not interactive else None

    def __enter__(self) -> _TrainingProgress:
        return self

    def run(self, fn: Callable[[Any, Any], T], cfg: Any) -> T:
        """``fn(cfg, self)`` with the bar closed before an error is printed (the error stays the last line)."""
        with self:
            return fn(cfg, self)

    def __exit__(self, *exc: Any) -> None:
        if self.progress:
            self.progress.__exit__(*exc)

    def _start(self) -> None:
        """Show the bar from the loop's first event (a step that fails before prints only its error)."""
        if _is_main_rank() and self.progress is None and console.is_terminal:
            from mosl_cli.progress import make_bar

            self.progress = make_bar(console)
            self.progress.__enter__()

    def _notice_other_model(self, init: dict[str, Any]) -> None:
        if any(init.get(k) and init.get(k) != v for k, v in self.expect.items()):
            asked = " ".join(f"--{k} {v}" for k, v in self.expect.items())
            console.print(
                f"[yellow]note:[/] {escape(str(init['init']))} was made for {init.get('arch')}/{init.get('encoder')}, "
                f"so that model is built, not {asked}",
                highlight=False,
                soft_wrap=True,
            )

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        if event == "start":
            self._start()
            if "init" in info:
                self._notice_other_model(info["init"])
        if self.lines:
            self.lines(event, info)
            if event == "start" and "init" in info:
                print(f"{self.title}: initialised from {_describe_init(info['init'])}", flush=True)
        if not self.progress:
            return
        from mosl_cli.progress import epoch_text, step_text

        if event == "start":
            self.steps = info["steps_per_epoch"]
            total = info["epochs"] * self.steps
            self.task = self.progress.add_task(
                self.title, total=total, completed=info["start_epoch"] * self.steps, info=""
            )
            console.print(
                f"{self.title}: {info['images']} images on {info['device']}"
                + (f", resuming after epoch {info['start_epoch']}" if info["start_epoch"] else ""),
                markup=False,
            )
            if "init" in info:
                console.print(f"initialised from: {_describe_init(info['init'])}", markup=False)
        elif event == "step":
            done = (info["epoch"] - 1) * self.steps + info["step"]
            self.progress.update(self.task, completed=done, info=f"ep {info['epoch']} {step_text(info)}")
        elif event == "epoch":
            self.progress.update(
                self.task, completed=info["epoch"] * self.steps, info=f"ep {info['epoch']} {epoch_text(info)}"
            )


def _describe_init(init: dict[str, Any]) -> str:
    if init.get("init") == "none":
        return "random weights (supervised baseline)"
    load = init.get("load", {})
    auto = " (found by --init auto)" if init.get("auto") else ""
    part = ", encoder only" if init.get("init_part") == "encoder" else ""
    return (
        f"{init['init']}{auto}{part}: {load.get('loaded', 0)} tensors loaded, {load.get('missing', 0)} missing, "
        f"{load.get('unexpected', 0)} unexpected"
    )


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=lambda v: _print_version(v), help="Print the version and exit."
        ),
    ] = False,
) -> None:
    _STATE["debug"] = debug


def _print_version(value: bool) -> None:
    if value:
        from mosl_cli import __version__

        out_console.print(f"mosl {__version__}")
        raise typer.Exit()


# --------------------------------------------------------------------------- prepare / info


def _dataset_table(rows: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    for col in ("source", "organ", "images", "masks", "classes", "train/val/test", "skipped"):
        table.add_column(col, justify="right" if col in ("images", "masks", "skipped") else "left")
    for r in rows:
        classes = ", ".join(f"{k} {v}" for k, v in sorted(r["classes"].items()))
        splits = "/".join(str(r["splits"].get(s, 0)) for s in ("train", "val", "test"))
        table.add_row(
            str(r["source"]), str(r["organ"]), str(r["images"]), str(r["masks"]), classes, splits, str(r["skipped"])
        )
    return table


def _int_option(text: str, hint: str, expected: str) -> int:
    """``text`` as an int, or a usage error (exit code 2) naming the option."""
    try:
        return int(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not {expected}", param_hint=hint) from None


@app.command(epilog="Example: mosl prepare ./Dataset_BUSI_with_GT ./hc18 --out multiorgan --size 256")
def prepare(
    sources: Annotated[list[str], typer.Argument(help="Dataset folders in their native layouts, or `synthetic`.")],
    out: OutDir = Path(C.DEFAULT_DATASET),
    format: Annotated[
        K.ReaderFormat, typer.Option("--format", "-f", help="Force a reader (auto: detect from the folder layout).")
    ] = "auto",
    size: Annotated[
        int, typer.Option("--size", help="Stored image size S (resized again on the device at training time).")
    ] = 256,
    channels: Annotated[int, typer.Option("--channels", help="1 (luminance) or 3 (RGB).")] = 1,
    seed: Seed = 0,
    splits: Annotated[str, typer.Option("--splits", help="train,val,test fractions.")] = "0.7,0.1,0.2",
    frames_per_video: Annotated[
        str,
        typer.Option(
            "--frames-per-video", help="Frames sampled evenly from each video or multi-frame DICOM, or `all`."
        ),
    ] = "8",
    camus_label: Annotated[
        int, typer.Option("--camus-label", help="CAMUS label used as the mask (1 = left-ventricle cavity).")
    ] = 1,
    synthetic_count: Annotated[
        int, typer.Option("--synthetic-count", help="Scans generated for the `synthetic` source.")
    ] = 600,
    dedup_distance: Annotated[
        int, typer.Option("--dedup-distance", help="Max perceptual-hash Hamming distance grouping near-duplicates.")
    ] = C.PrepareConfig.dedup_distance,
    workers: Annotated[int, typer.Option("--workers", help="Decode processes (0 = one per core).")] = 0,
    no_region_crop: Annotated[
        bool,
        typer.Option(
            "--no-region-crop", help="Keep whole DICOM frames (default: crop to the ultrasound imaging region)."
        ),
    ] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a dataset already in --out.")] = False,
    organ: Annotated[
        Optional[str],
        typer.Option(
            "--organ",
            help=(
                "Organ of the folders read as plain trees (e.g. muscle); "
                "default: unknown, or natural for CIFAR/ImageNet class folders."
            ),
        ),
    ] = None,
    group_pattern: Annotated[
        str,
        typer.Option(
            "--group-pattern",
            help="Regex finding a patient key in file or folder names; its scans and videos share a split.",
        ),
    ] = C.DEFAULT_GROUP_PATTERN,
    crop: Annotated[
        bool, typer.Option("--crop/--no-crop", help="Crop screen exports in plain trees to the ultrasound image.")
    ] = True,
) -> None:
    """Decode raw datasets once into a split, device-ready dataset directory."""
    if channels not in (1, 3):
        raise typer.BadParameter("use 1 or 3", param_hint="--channels")
    from mosl_cli.data.splits import parse_splits
    from mosl_cli.errors import MoslError

    try:
        split_tuple = parse_splits(splits)
    except MoslError as exc:  # a usage error: exit code 2, like every other bad option
        raise typer.BadParameter(str(exc).removeprefix("--splits").lstrip(" :"), param_hint="--splits") from None
    fpv = (
        None
        if frames_per_video.strip().lower() == "all"
        else _int_option(frames_per_video, "--frames-per-video", "a number or all")
    )
    cfg = C.PrepareConfig(
        sources=tuple(sources),
        out=str(out),
        format=format,
        size=size,
        channels=channels,
        seed=seed,
        splits=split_tuple,  # type: ignore[arg-type]
        frames_per_video=fpv,
        camus_label=camus_label,
        synthetic_count=synthetic_count,
        dedup_distance=dedup_distance,
        workers=workers,
        region_crop=not no_region_crop,
        overwrite=overwrite,
        organ=organ,
        group_pattern=group_pattern,
        crop=crop,
    )
    from mosl_cli.prepare import run_prepare

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    ) as bar:
        tasks: dict[str, Any] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        summary = _call(run_prepare, cfg, progress, out=out, interrupted=f"{out} was left as it was")
    out_console.print(_dataset_table(summary.rows, f"{summary.out}: {summary.total} images"))
    out_console.print(
        f"near-duplicate groups merged: {summary.groups_merged}; files skipped: {len(summary.skipped)}"
        + (" (reasons in manifest.json)" if summary.skipped else "")
    )


@app.command(epilog="Example: mosl info mosl_data")
def info(
    data: Annotated[Path, typer.Argument(help="Dataset directory.")] = Path(C.DEFAULT_DATASET),
    json_out: JsonOut = False,
) -> None:
    """Print the summary table of an existing dataset directory again."""
    from mosl_cli.data.store import read_manifest
    from mosl_cli.prepare import summarize

    manifest = _call(read_manifest, data)
    rows = summarize(manifest)
    total = sum(r["images"] for r in rows)
    if json_out:
        _print_json(
            {
                "data": data,
                "images": total,
                "size": manifest["size"],
                "channels": manifest["channels"],
                "rows": rows,
                "groups_merged": manifest.get("groups_merged", 0),
                "skipped": len(manifest.get("skipped", [])),
            }
        )
        return
    out_console.print(
        _dataset_table(rows, f"{data}: {total} images at {manifest['size']} px, {manifest['channels']} channel(s)")
    )
    out_console.print(
        f"near-duplicate groups merged: {manifest.get('groups_merged', 0)}; "
        f"files skipped: {len(manifest.get('skipped', []))}"
    )


# --------------------------------------------------------------------------- pretrain


@app.command(
    epilog="Example: mosl pretrain --method simsiam --data busi --data hc18 --encoder resnet50 --size 64 --epochs 100"
)
def pretrain(
    method: Annotated[
        K.Method,
        typer.Option("--method", help="Self-supervised method (mim: masked image modelling of the whole U-Net)."),
    ] = C.PretrainConfig.method,  # type: ignore[assignment]
    data: Annotated[
        Optional[list[Path]], typer.Option("--data", "-d", help="Dataset directory (repeat to mix several).")
    ] = None,
    data_weights: Annotated[
        Optional[str], typer.Option("--data-weights", help="Comma-separated sampling weight per --data.")
    ] = None,
    arch: Arch = C.PretrainConfig.arch,
    encoder: Encoder = C.PretrainConfig.encoder,
    scope: Annotated[
        Optional[K.Scope],  # noqa: UP045 - typer reads the annotation
        typer.Option(
            "--scope",
            help=(
                "Pre-train the encoder, or the whole U-Net (encoder-decoder); "
                "default: encoder-decoder for mim, else encoder."
            ),
        ),
    ] = None,
    positives: Annotated[
        str,
        typer.Option(
            "--positives",
            help=(
                "views: two views of one scan; "
                "group: one scan and another frame/scan of its video or patient group (USCL)."
            ),
        ),
    ] = C.PretrainConfig.positives,
    dense_weight: Annotated[
        float,
        typer.Option(
            "--dense-weight",
            help="Weight of the pixel-level contrastive loss on the decoder (0: off; needs --scope encoder-decoder).",
        ),
    ] = C.PretrainConfig.dense_weight,
    size: Size = C.PretrainConfig.size,
    epochs: Epochs = C.PretrainConfig.epochs,
    batch_size: BatchSize = 64,
    lr: Annotated[
        Optional[float],
        typer.Option("--lr", help="Base lr per 256 images (scaled by batch/256); default: the method's paper."),
    ] = None,
    weight_decay: Annotated[
        Optional[float], typer.Option("--weight-decay", help="Default: the method's paper.")
    ] = None,
    warmup_epochs: Annotated[int, typer.Option("--warmup-epochs", help="Linear warm-up before the cosine decay.")] = 5,
    preset: Annotated[K.Preset, typer.Option("--preset", help="Augmentation preset.")] = "ultrasound",
    crop_min: Annotated[
        Optional[float],
        typer.Option(
            "--crop-min",
            help="Smallest random-resized-crop area fraction (default: the preset's, 0.2 ultrasound / 0.08 simclr).",
        ),
    ] = None,
    jitter: Annotated[
        float, typer.Option("--jitter", help="Brightness/contrast jitter strength of the views (0: none).")
    ] = C.PretrainConfig.jitter,
    temperature: Annotated[
        Optional[float], typer.Option("--temperature", help="SimCLR/MoCo softmax temperature.")
    ] = None,
    proj_dim: Annotated[Optional[int], typer.Option("--proj-dim", help="Projector output size.")] = None,
    proj_hidden: Annotated[Optional[int], typer.Option("--proj-hidden", help="Projector hidden size.")] = None,
    pred_hidden: Annotated[Optional[int], typer.Option("--pred-hidden", help="SimSiam predictor bottleneck.")] = None,
    momentum: Annotated[Optional[float], typer.Option("--momentum", help="MoCo key-encoder momentum.")] = None,
    queue_size: Annotated[Optional[int], typer.Option("--queue-size", help="MoCo queue length.")] = None,
    mask_ratio: Annotated[
        Optional[float], typer.Option("--mask-ratio", help="MIM: fraction of patches masked (default 0.6).")
    ] = None,
    patch_size: Annotated[
        Optional[int], typer.Option("--patch-size", help="MIM: masked patch side in pixels (default: size/8, ≥ 4).")
    ] = None,
    steps_per_epoch: Annotated[
        Optional[int], typer.Option("--steps-per-epoch", help="Default: one pass over the data.")
    ] = None,
    include_test: Annotated[bool, typer.Option("--include-test", help="Also pre-train on test-split images.")] = False,
    seed: Seed = 0,
    device: Device = "auto",
    no_amp: NoAmp = False,
    checkpoint_every: CheckpointEvery = C.PretrainConfig.checkpoint_every,
    log_every: Annotated[
        int,
        typer.Option(
            "--log-every",
            help=(
                "Without a terminal, also print a line every N steps (at the loop's 10-step granularity; "
                "0: epochs only)."
            ),
            min=0,
        ),
    ] = 0,
    out: OutDir = Path(C.DEFAULT_PRETRAIN_RUN),
    resume: Resume = False,
    overwrite: Overwrite = False,
    config: ConfigFile = None,
) -> None:
    """Self-supervised pre-training (SimCLR, MoCo v2, SimSiam, masked image modelling) of a U-Net or its encoder."""
    weights = None
    if data_weights:
        try:
            weights = tuple(float(w) for w in data_weights.split(","))
        except ValueError:
            raise typer.BadParameter("comma-separated numbers, one per --data", param_hint="--data-weights") from None
    cfg = C.PretrainConfig(
        method=method,
        data=tuple(str(d) for d in (data or [Path(C.DEFAULT_DATASET)])),
        data_weights=weights,
        arch=arch,
        encoder=encoder,
        scope=scope,
        positives=positives,
        dense_weight=dense_weight,
        size=size,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        warmup_epochs=warmup_epochs,
        preset=preset,
        crop_scale=(crop_min, 1.0) if crop_min is not None else None,
        jitter=jitter,
        temperature=temperature,
        proj_dim=proj_dim,
        proj_hidden=proj_hidden,
        pred_hidden=pred_hidden,
        momentum=momentum,
        queue_size=queue_size,
        mask_ratio=mask_ratio,
        patch_size=patch_size,
        steps_per_epoch=steps_per_epoch,
        seed=seed,
        device=device,
        amp=not no_amp,
        include_test=include_test,
        checkpoint_every=checkpoint_every,
        out=str(out),
        resume=resume,
        overwrite=overwrite,
    )
    from mosl_cli.augment import PRESETS
    from mosl_cli.methods import METHODS, SCOPES
    from mosl_cli.pretrain import run_pretrain

    _one_of("--method", method, METHODS)
    _one_of("--scope", cfg.scope, SCOPES)
    _one_of("--preset", preset, PRESETS)
    bar = _TrainingProgress(f"pretrain {method}", log_every=log_every)
    result = _call(bar.run, run_pretrain, cfg, out=out, interrupted=RESUME_HINT)
    if _is_main_rank():
        out_console.print(
            f"pre-trained weights: {result.out / C.WEIGHTS_FILE}  (loss {result.final_loss:.4f}, "
            f"embedding std {result.embedding_std:.4f}, {result.images_per_s:.0f} img/s)",
            soft_wrap=True,
        )


# --------------------------------------------------------------------------- finetune


@app.command(
    epilog=(
        "Example: mosl finetune --data busi --size 128 --seed 0   |   "
        "mosl finetune --init mosl_pretrain/model.safetensors --label-fraction 0.25"
    )
)
def finetune(
    data: DataDir = Path(C.DEFAULT_DATASET),
    init: Annotated[
        str,
        typer.Option(
            "--init",
            help=(
                "auto (mosl_pretrain/model.safetensors if present), none, imagenet (or another published name of "
                "the encoder: ssl, swsl, ...; from the Hugging Face cache, downloaded when online), or a weight file "
                "(mosl, torchvision, lightly/solo-learn .ckpt, MoCo/SimSiam .pth.tar)."
            ),
        ),
    ] = C.FinetuneConfig.init,
    init_part: Annotated[
        str,
        typer.Option(
            "--init-part",
            help="What --init loads: all (every tensor that fits), or encoder (the decoder and head start random).",
        ),
    ] = C.FinetuneConfig.init_part,
    arch: Arch = C.FinetuneConfig.arch,
    encoder: Encoder = C.FinetuneConfig.encoder,
    label_fraction: Annotated[
        float,
        typer.Option("--label-fraction", help="Fraction of train labels used, in (0, 1]; nested across fractions."),
    ] = C.FinetuneConfig.label_fraction,
    size: Size = C.FinetuneConfig.size,
    epochs: Epochs = C.FinetuneConfig.epochs,
    batch_size: BatchSize = C.FinetuneConfig.batch_size,
    dice: Annotated[
        str,
        typer.Option(
            "--dice",
            help="Soft Dice loss over the batch's pixels (batch), per image, averaged (image), or per image over "
            "the scans with a lesion only, normal scans in the BCE term only (lesion; for --empty-masks), per "
            "image as -ln(Dice), which weighs a missed lesion more (log), or per image the Lovász hinge, a "
            "convex surrogate of 1 - IoU, in place of the soft Dice (lovasz).",
        ),
    ] = C.FinetuneConfig.dice,
    optimizer: Annotated[
        str,
        typer.Option("--optimizer", help="adamw, or sgd (Nesterov momentum 0.99 as in nnU-Net; pass e.g. --lr 0.01)."),
    ] = C.FinetuneConfig.optimizer,
    lr: Annotated[
        float, typer.Option("--lr", help="Peak learning rate (linear warm-up, then --schedule's decay to 0).")
    ] = C.FinetuneConfig.lr,
    schedule: Annotated[
        str,
        typer.Option(
            "--schedule", help="lr decay after the warm-up: cosine (to 0), or poly (nnU-Net's lr·(1 − t)^0.9)."
        ),
    ] = C.FinetuneConfig.schedule,
    warmup_epochs: Annotated[
        int, typer.Option("--warmup-epochs", help="Epochs of linear lr warm-up.")
    ] = C.FinetuneConfig.warmup_epochs,
    encoder_lr_scale: Annotated[
        float, typer.Option("--encoder-lr-scale", help="Encoder lr = lr × this.")
    ] = C.FinetuneConfig.encoder_lr_scale,
    weight_decay: Annotated[float, typer.Option("--weight-decay")] = C.FinetuneConfig.weight_decay,
    freeze_encoder_epochs: Annotated[
        int, typer.Option("--freeze-encoder-epochs", help="Epochs with the encoder frozen.")
    ] = C.FinetuneConfig.freeze_encoder_epochs,
    freeze_encoder_bn: Annotated[
        bool,
        typer.Option(
            "--freeze-encoder-bn",
            help=(
                "Keep the pre-trained encoder's BatchNorm statistics "
                "(its BN layers stay in eval mode; their scale and shift still train)."
            ),
        ),
    ] = C.FinetuneConfig.freeze_encoder_bn,
    select: Annotated[
        str,
        typer.Option(
            "--select",
            help="Weights kept as model.safetensors: last (epoch), ema (moving average), or best (highest val Dice).",
        ),
    ] = C.FinetuneConfig.select,
    ema_decay: Annotated[
        float, typer.Option("--ema-decay", help="Per-step decay of the weight moving average.")
    ] = C.FinetuneConfig.ema_decay,
    patience: Annotated[
        int,
        typer.Option(
            "--patience", help="With --select best: stop after this many epochs without a better val Dice (0: never)."
        ),
    ] = C.FinetuneConfig.patience,
    steps_per_epoch: Annotated[
        Optional[int], typer.Option("--steps-per-epoch", help="Default: one pass over the labelled images (≥ 10).")
    ] = None,
    no_augment: Annotated[bool, typer.Option("--no-augment", help="Resize only, no augmentation.")] = False,
    augment_strength: Annotated[
        str,
        typer.Option(
            "--augment-strength",
            help=(
                "strong (nnU-Net-like: rotation, scaling, noise, blur, brightness, contrast, low resolution, gamma) "
                "or mild."
            ),
        ),
    ] = C.FinetuneConfig.augment_strength,
    cutmix: Annotated[
        float,
        typer.Option(
            "--cutmix",
            help=(
                "Probability per scan of CutMix after the augmentation: a box of another scan of the batch "
                "(2-40 % of the image) pasted in with its mask; 0 (default) turns it off."
            ),
        ),
    ] = C.FinetuneConfig.cutmix,
    elastic: Annotated[
        float,
        typer.Option(
            "--elastic",
            help=(
                "Probability per scan of an elastic deformation of scan and mask (a smooth random displacement "
                "field, about 2 % of the side); 0 (default) turns it off."
            ),
        ),
    ] = C.FinetuneConfig.elastic,
    normalisation: Annotated[
        str,
        typer.Option(
            "--normalisation",
            help=(
                "Input intensities: fixed (x/255 - 0.5) / 0.25 (default), or image: each scan standardised to "
                "mean 0 and sd 1 (nnU-Net's z-score), stored with the model and applied by evaluate and predict."
            ),
        ),
    ] = C.FinetuneConfig.normalisation,
    empty_masks: Annotated[
        bool,
        typer.Option(
            "--empty-masks/--no-empty-masks",
            help="Train on scans whose mask is empty (normal scans) too; off by default (it cost lesion Dice).",
        ),
    ] = C.FinetuneConfig.empty_masks,
    lesion_head: Annotated[
        bool,
        typer.Option(
            "--lesion-head/--no-lesion-head",
            help=(
                "Add an image-level lesion-present output, trained on every scan (normal ones too); "
                "masks of scans it calls lesion-free are emptied at a threshold chosen on val."
            ),
        ),
    ] = C.FinetuneConfig.lesion_head,
    teacher: Annotated[
        Optional[str],
        typer.Option(
            "--teacher",
            help=(
                "Self-training: a segmentation model (file, run folder or folds) whose masks label the train scans "
                "outside --label-fraction; the run trains on them too (scans it leaves empty are dropped unless "
                "--empty-masks)."
            ),
        ),
    ] = C.FinetuneConfig.teacher,
    teacher_keep: Annotated[
        float,
        typer.Option(
            "--teacher-keep",
            help=(
                "With --teacher: keep this fraction of its lesion masks, those it is surest of (highest mean "
                "probability inside the mask); 1 keeps all. Ignored without --teacher."
            ),
        ),
    ] = C.FinetuneConfig.teacher_keep,
    teacher_sure: Annotated[
        float,
        typer.Option(
            "--teacher-sure",
            help=(
                "With --teacher: leave out of the loss the pixels of its masks whose probability lies between "
                "1 - P and P (0.9: only pixels it is at least 90 % sure of); 0.5 (default) leaves none out."
            ),
        ),
    ] = C.FinetuneConfig.teacher_sure,
    labelled_share: Annotated[
        Optional[float],  # noqa: UP045 - typer reads the annotation
        typer.Option(
            "--labelled-share",
            help=(
                "With --teacher: the share of each batch drawn from the labelled scans, the rest from the "
                "teacher-labelled ones (default: in proportion to their counts)."
            ),
        ),
    ] = C.FinetuneConfig.labelled_share,
    semi: Annotated[
        str,
        typer.Option(
            "--semi",
            help=(
                "none, or fixmatch: also learn from the train scans outside --label-fraction, without their "
                "labels, by weak-to-strong consistency (the model's sure pixels on a weakly augmented scan "
                "label a strongly perturbed, CutMixed copy)."
            ),
        ),
    ] = C.FinetuneConfig.semi,
    semi_threshold: Annotated[
        float,
        typer.Option("--semi-threshold", help="With --semi: pixels at least this sure become pseudo-labels."),
    ] = C.FinetuneConfig.semi_threshold,
    semi_weight: Annotated[
        float,
        typer.Option("--semi-weight", help="With --semi: weight of the consistency loss beside the labelled loss."),
    ] = C.FinetuneConfig.semi_weight,
    deep_supervision: Annotated[
        bool,
        typer.Option(
            "--deep-supervision/--no-deep-supervision",
            help=(
                "Train auxiliary mask heads on the U-Net decoder's 1/2, 1/4 and 1/8 scale blocks "
                "(nnU-Net's deep supervision; the saved model is unchanged)."
            ),
        ),
    ] = C.FinetuneConfig.deep_supervision,
    class_aux: Annotated[
        float,
        typer.Option(
            "--class-aux",
            help=(
                "Weight of an auxiliary benign/malignant output on the deepest encoder features, trained "
                "beside the masks on the labelled lesion scans (the saved model is unchanged); 0: off."
            ),
        ),
    ] = C.FinetuneConfig.class_aux,
    decoder_attention: Annotated[
        str,
        typer.Option(
            "--decoder-attention",
            help="none, or scse: spatial and channel squeeze-and-excitation in each U-Net decoder block.",
        ),
    ] = C.FinetuneConfig.decoder_attention,
    no_postprocess: Annotated[
        bool, typer.Option("--no-postprocess", help="Do not choose and store a post-processing rule on val.")
    ] = False,
    folds: Annotated[
        int,
        typer.Option(
            "--folds",
            help=(
                "K > 1: cross-validation, K models on train+val folds in OUT/fold_<k> "
                "(evaluate/predict --model OUT averages them)."
            ),
        ),
    ] = C.FinetuneConfig.folds,
    fold: Annotated[
        Optional[int],
        typer.Option(
            "--fold",
            help="With --folds K: train fold k only (0 to K-1), so that the K folds run as separate processes or jobs.",
        ),
    ] = C.FinetuneConfig.fold,
    seed: Seed = 0,
    device: Device = "auto",
    no_amp: NoAmp = False,
    checkpoint_every: CheckpointEvery = C.FinetuneConfig.checkpoint_every,
    out: OutDir = Path(C.DEFAULT_FINETUNE_RUN),
    resume: Resume = False,
    overwrite: Overwrite = False,
    config: ConfigFile = None,
) -> None:
    """Fine-tune a segmentation U-Net from pre-trained or random weights on a fraction of the labels."""
    cfg = C.FinetuneConfig(
        data=str(data),
        init=init,
        init_part=init_part,
        arch=arch,
        encoder=encoder,
        label_fraction=label_fraction,
        size=size,
        epochs=epochs,
        batch_size=batch_size,
        dice=dice,
        optimizer=optimizer,
        lr=lr,
        schedule=schedule,
        warmup_epochs=warmup_epochs,
        encoder_lr_scale=encoder_lr_scale,
        weight_decay=weight_decay,
        freeze_encoder_epochs=freeze_encoder_epochs,
        freeze_encoder_bn=freeze_encoder_bn,
        select=select,
        ema_decay=ema_decay,
        patience=patience,
        steps_per_epoch=steps_per_epoch,
        augment=not no_augment,
        augment_strength=augment_strength,
        cutmix=cutmix,
        elastic=elastic,
        normalisation=normalisation,
        empty_masks=empty_masks,
        lesion_head=lesion_head,
        teacher=teacher,
        teacher_keep=teacher_keep,
        teacher_sure=teacher_sure,
        labelled_share=labelled_share,
        semi=semi,
        semi_threshold=semi_threshold,
        semi_weight=semi_weight,
        deep_supervision=deep_supervision,
        class_aux=class_aux,
        decoder_attention=decoder_attention,
        postprocess=not no_postprocess,
        folds=folds,
        fold=fold,
        seed=seed,
        device=device,
        amp=not no_amp,
        checkpoint_every=checkpoint_every,
        out=str(out),
        resume=resume,
        overwrite=overwrite,
    )
    from mosl_cli.finetune import run_folds

    if not 0 < label_fraction <= 1:
        raise typer.BadParameter(
            f"{label_fraction} is outside (0, 1]; use e.g. 0.1 for 10 % of the labels", param_hint="--label-fraction"
        )

    asked = {"arch": arch, "encoder": encoder}
    if arch == "auto":  # no decoder was asked for: the init file's is the right one
        del asked["arch"]
    bar = _TrainingProgress(f"finetune {label_fraction:g} labels", expect=asked)
    results = _call(bar.run, run_folds, cfg, out=out, interrupted=RESUME_HINT)
    if _is_main_rank():
        for result in results:
            best = (
                f"best val Dice {result.best_val_dice:.4f} at epoch {result.best_epoch}"
                if not math.isnan(result.best_val_dice)
                else "no labelled val image to score"
            )
            out_console.print(
                f"segmentation model: {result.out / C.WEIGHTS_FILE}  ({cfg.select} weights after "
                f"{result.epochs_run} epochs; {best}; {result.labelled} labelled images)",
                soft_wrap=True,
            )


# --------------------------------------------------------------------------- evaluate / predict


@app.command(
    epilog=(
        "Example: mosl evaluate --model mosl_finetune/model.safetensors --split test   |   "
        "mosl evaluate --model cv_run/ (all folds)   |   mosl evaluate --pred masks/ --ref annotations/"
    )
)
def evaluate(
    ctx: typer.Context,
    model: Models = [Path(C.DEFAULT_FINETUNE_RUN) / C.WEIGHTS_FILE],
    detector: Detector = None,
    data: DataDir = Path(C.DEFAULT_DATASET),
    split: Annotated[K.Split, typer.Option("--split", help="Dataset split to score.")] = "test",
    out: OutDir = Path(C.DEFAULT_EVAL_DIR),
    tta: TTA = C.EvaluateConfig.tta,
    postprocess: Postprocess = C.EvaluateConfig.postprocess,
    threshold: Threshold = C.EvaluateConfig.threshold,
    batch_size: BatchSize = C.EvaluateConfig.batch_size,
    device: Device = "auto",
    nsd_tolerance: Annotated[
        float,
        typer.Option(
            "--nsd-tolerance",
            help="Normalised surface Dice tolerance in mm (for samples with a pixel spacing, e.g. DICOM).",
        ),
    ] = C.EvaluateConfig.nsd_tolerance,
    pred: Annotated[
        Optional[Path],
        typer.Option(
            "--pred",
            help="Score the mask files in this folder (e.g. mosl predict's) against --ref's, with no model or dataset.",
        ),
    ] = None,
    ref: Annotated[
        Optional[Path],
        typer.Option("--ref", help="With --pred: the folder of reference masks (sub-folders name the classes)."),
    ] = None,
    json_out: JsonOut = False,
) -> None:
    """Dice, IoU, precision, recall and HD95 per case and per class (and ASSD, mm, NSD); \
metrics.json and per_case.csv."""
    if pred is not None or ref is not None:
        _evaluate_folders(ctx, pred, ref, out, json_out)
        return
    models = _model_spec(model)
    cfg = C.EvaluateConfig(
        model=models,
        data=str(data),
        split=split,
        out=str(out),
        tta=tta,
        postprocess=postprocess,
        threshold=threshold,
        batch_size=batch_size,
        device=device,
        nsd_tolerance=nsd_tolerance,
        detector=_model_spec(detector) if detector else None,
    )
    from mosl_cli.evaluate import run_evaluate

    result = _call(run_evaluate, cfg, out=out)
    if json_out:
        _print_evaluation_json(
            result, ("model", "models", "detector", "data", "split", "tta", "postprocess", "threshold")
        )
        return
    _print_evaluation(result, f"{' + '.join(str(m) for m in model)} on {data} [{split}]")


_MODEL_OPTIONS = (
    "model",
    "detector",
    "data",
    "split",
    "tta",
    "postprocess",
    "threshold",
    "batch_size",
    "device",
    "nsd_tolerance",
)


def _evaluate_folders(ctx: typer.Context, pred: Path | None, ref: Path | None, out: Path, json_out: bool) -> None:
    """``mosl evaluate --pred DIR --ref DIR`` (:mod:`mosl_cli.evaluate_folder`)."""
    if pred is None or ref is None:
        raise typer.BadParameter("--pred and --ref go together: pass both folders", param_hint="--pred/--ref")
    given = [n for n in _MODEL_OPTIONS if getattr(ctx.get_parameter_source(n), "name", "") == "COMMANDLINE"]
    if given:
        flags = ", ".join("--" + n.replace("_", "-") for n in given)
        raise typer.BadParameter(f"{flags}: not used when scoring mask folders; drop it", param_hint="--pred")
    from mosl_cli.evaluate_folder import run_evaluate_folder

    result = _call(run_evaluate_folder, C.EvaluateFolderConfig(pred=str(pred), ref=str(ref), out=str(out)), out=out)
    if json_out:
        _print_evaluation_json(result, ("pred", "ref", "predictions_without_reference"))
        return
    _print_evaluation(result, f"{pred} against {ref}")
    unpaired = result.metrics["predictions_without_reference"]
    if unpaired:
        console.print(f"{unpaired} mask(s) in {pred} have no reference in {ref} and were left out", markup=False)


def _model_spec(paths: list[Path]) -> str | tuple[str, ...]:
    """A repeated ``--model`` / ``--detector`` option as a config's model spec: one path, or several."""
    return str(paths[0]) if len(paths) == 1 else tuple(str(p) for p in paths)


def _print_evaluation_json(result: Any, settings: tuple[str, ...]) -> None:
    """An evaluation as one JSON document: ``settings`` and the summaries from metrics.json, the table
    rows, and the files written."""
    doc = {k: result.metrics.get(k) for k in (*settings, "summary", "per_class", "lesion")}
    _print_json({**doc, "rows": result.rows, "files": [result.out / "metrics.json", result.out / "per_case.csv"]})


def _print_evaluation(result: Any, title: str) -> None:
    """The per-group table of an evaluation, then the files it wrote."""
    table = Table(title=title)
    columns = ("group", "n", "dice", "iou", "precision", "recall", "hd95")
    if result.metrics.get("cases_with_spacing"):  # millimetres beside pixels
        columns += ("hd95_mm", "assd_mm", "nsd")
    for col in columns:
        table.add_column(col, justify="left" if col == "group" else "right")
    for row in result.rows:
        table.add_row(*(str(row.get(col, "")) for col in columns))
    out_console.print(table)
    out_console.print(f"written: {result.out / 'metrics.json'}, {result.out / 'per_case.csv'}")


@app.command(epilog="Example: mosl predict scan.png --out mask.png --overlay   |   mosl predict scans/ --out masks/")
def predict(
    inputs: Annotated[
        list[str],
        typer.Argument(help="Scans (PNG, JPEG, BMP, TIFF, DICOM) or videos / DICOM cines: files, folders or globs."),
    ],
    model: Models = [Path(C.DEFAULT_FINETUNE_RUN) / C.WEIGHTS_FILE],
    detector: Detector = None,
    out: Annotated[
        Optional[Path],
        typer.Option("--out", "-o", help="Mask file for one scan, else a folder (default mosl_predict/)."),
    ] = None,
    overlay: Annotated[bool, typer.Option("--overlay", help="Also write the scan with the lesion outline.")] = False,
    probabilities: Annotated[
        bool,
        typer.Option(
            "--probabilities",
            help="Also write the lesion probability map (0-255 for 0-1, before the threshold and post-processing) "
            "as <stem>_prob.png.",
        ),
    ] = False,
    tta: TTA = C.PredictConfig.tta,
    postprocess: Postprocess = C.PredictConfig.postprocess,
    threshold: Threshold = C.PredictConfig.threshold,
    batch_size: BatchSize = C.PredictConfig.batch_size,
    device: Device = "auto",
    mask_values: Annotated[
        str, typer.Option("--mask-values", help="0-255, or 0-1 (what nnU-Net and MONAI read).")
    ] = C.PredictConfig.mask_values,
    measurements: Annotated[
        Optional[Path],
        typer.Option(
            "--measurements", help="CSV of lesion area (mm² when the scan has a spacing) and largest diameter per mask."
        ),
    ] = None,
    no_region_crop: Annotated[
        bool,
        typer.Option(
            "--no-region-crop", help="Predict on whole DICOM frames (default: their ultrasound imaging region)."
        ),
    ] = False,
    dicom_seg: Annotated[
        bool,
        typer.Option(
            "--dicom-seg",
            help="Also write each single-frame DICOM scan's mask as a DICOM SEG referencing it (<stem>_seg.dcm; "
            "the dicom-seg extra).",
        ),
    ] = False,
    json_out: JsonOut = False,
) -> None:
    """Write a 0/255 lesion mask at each scan's own size, one per frame of a cine or video (and an overlay)."""
    models = _model_spec(model)
    cfg = C.PredictConfig(
        inputs=tuple(inputs),
        model=models,
        out=str(out) if out else None,
        overlay=overlay,
        probabilities=probabilities,
        tta=tta,
        postprocess=postprocess,
        threshold=threshold,
        batch_size=batch_size,
        device=device,
        mask_values=mask_values,
        measurements=str(measurements) if measurements else None,
        region_crop=not no_region_crop,
        dicom_seg=dicom_seg,
        detector=_model_spec(detector) if detector else None,
    )
    from mosl_cli.imageio import has_image_suffix
    from mosl_cli.predict import DEFAULT_PREDICT_DIR, run_predict

    folder = out if out and not has_image_suffix(out) else (out.parent if out else Path(DEFAULT_PREDICT_DIR))
    results = _call(
        run_predict, cfg, out=folder, interrupted="masks written so far are complete; the others are not written"
    )
    if json_out:
        _print_json(
            {
                "model": models,
                "detector": cfg.detector,
                "count": len(results),
                "files": [
                    {
                        "input": r.input,
                        "frame": r.frame,
                        "mask": r.mask,
                        "overlay": r.overlay,
                        "probabilities": r.probabilities,
                        "dicom_seg": r.dicom_seg,
                        "height": r.height,
                        "width": r.width,
                        "lesion_pixels": r.lesion_pixels,
                    }
                    for r in results
                ],
            }
        )
        return
    for r in results[:20]:
        extra = (
            (f", overlay {r.overlay}" if r.overlay else "")
            + (f", probabilities {r.probabilities}" if r.probabilities else "")
            + (f", DICOM SEG {r.dicom_seg}" if r.dicom_seg else "")
        )
        out_console.print(
            f"{r.input}{'' if r.frame is None else f' #{r.frame}'} → {r.mask} "
            f"({r.width}×{r.height}, {r.lesion_pixels} lesion px{extra})"
        )
    if len(results) > 20:
        out_console.print(f"... and {len(results) - 20} more")
    if measurements:
        out_console.print(f"measurements: {measurements}")


@app.command(epilog="Example: mosl report paper_grid --out paper_grid/report")
def report(
    runs: Annotated[
        list[Path],
        typer.Argument(
            help="Finetune run folders, or folders holding them and their evaluate outputs (searched recursively)."
        ),
    ],
    out: OutDir = Path(C.DEFAULT_REPORT_DIR),
    cases: Annotated[
        int, typer.Option("--cases", help="Benign and malignant test cases each in the mask grid (0: no grid).")
    ] = C.ReportConfig.cases,
) -> None:
    """Tables (CSV, Markdown: mean ± std over seeds, Δ vs supervised) and figures from finetune and evaluate runs."""
    if cases < 0:
        raise typer.BadParameter("0 (no mask grid) or more", param_hint="--cases")
    cfg = C.ReportConfig(tuple(str(r) for r in runs), str(out), cases)
    from mosl_cli.report import run_report

    result = _call(run_report, cfg, out=out)
    columns, rows = result.columns, result.table
    title = f"test Dice of {len(result.runs)} finetune runs, mean ± std over n seeds"
    if len({row[0] for row in rows}) == 1:  # one model and size: named in the title
        title, columns, rows = f"{title} ({rows[0][0]})", columns[1:], [row[1:] for row in rows]
    table = Table(title=title)
    for col in columns:
        table.add_column(
            col, justify="right" if col in ("labels", "n") or col.startswith(("Dice", "Δ", "IoU")) else "left"
        )
    for row in rows:
        table.add_row(*row)
    # Piped or redirected output gets the whole table rather than one squeezed to 80 columns.
    (out_console if out_console.is_terminal else Console(width=max(out_console.width, 200), markup=False)).print(table)
    for note in result.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
    for problem in result.problems:
        console.print(f"[yellow]problem:[/] {escape(problem)}", highlight=False, soft_wrap=True)
    out_console.print("written: " + ", ".join(str(f) for f in result.files))


# --------------------------------------------------------------------------- export


@app.command(epilog="Example: mosl export mosl_finetune/model.safetensors --format onnx --out lesion.onnx")
def export(
    model: Annotated[Path, typer.Argument(help="Segmentation weight file written by `mosl finetune`.")] = Path(
        C.DEFAULT_FINETUNE_RUN
    )
    / C.WEIGHTS_FILE,
    format: Annotated[
        K.ExportFormat,
        typer.Option(
            "--format",
            "-f",
            help=(
                "onnx, torchscript, or smp "
                "(a folder for segmentation_models_pytorch.from_pretrained, with a model card)."
            ),
        ),
    ] = "onnx",
    out: Annotated[
        Optional[Path], typer.Option("--out", "-o", help="Output file (folder for smp); default beside MODEL.")
    ] = None,
    metrics: Annotated[
        Optional[Path],
        typer.Option(
            "--metrics",
            help=(
                "metrics.json of `mosl evaluate` for the model card "
                "(default: mosl_eval/metrics.json when it is this model's)."
            ),
        ),
    ] = None,
    json_out: JsonOut = False,
) -> None:
    """Export a segmentation model (normalisation inside the graph) and check it against PyTorch."""
    from mosl_cli.export import run_export

    result = _call(run_export, model, format, out, str(metrics) if metrics else None)
    if json_out:
        _print_json(result.summary())
        return
    check = (
        ""
        if result.max_abs_diff is None
        else f" (max |logit difference| vs PyTorch {result.max_abs_diff:.1e} ≤ {result.tolerance:g})"
    )
    out_console.print(f"{result.format}: {result.out}{check}")


def _parser_usage_error() -> type[Exception]:
    """The option parser's usage-error class (typer vendors click; its BadParameter derives from it)."""
    return next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


def main() -> None:
    """Console-script entry point. A usage error the option parser finds (a value out of range, an
    unknown choice or option) is one line on stderr and exit code 2, like mosl's own usage errors."""
    import sys

    try:
        code = app(prog_name="mosl", standalone_mode=False)
    except _parser_usage_error() as exc:
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:  # `mosl` or `mosl STEP` alone
            out_console.print(ctx.get_help(), highlight=False, markup=False)
            sys.exit(2)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        message = escape(f"{exc.format_message()}{hint}")  # type: ignore[attr-defined]
        console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except typer.Abort:  # Ctrl-C at a prompt
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
