"""The ``mosl`` command: one thin function per step. Each parses its options into a settings
dataclass, calls one core function and renders the result with Rich. Core modules are imported
inside the commands, so ``mosl --help`` never imports torch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from mosl_cli import config as C

app = typer.Typer(
    name="mosl", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    help="Multi-organ self-supervised pre-training for breast-lesion segmentation in ultrasound.\n\n"
    "Steps: prepare → pretrain → finetune → evaluate → predict (and report). Each reads what the "
    "previous one wrote; with default folders they chain with no options.",
)
console = Console(stderr=True)
out_console = Console()
_STATE = {"debug": False}
T = TypeVar("T")

# Options shared by several steps, defined once.
DataDir = Annotated[Path, typer.Option("--data", "-d", help="Dataset directory written by `mosl prepare`.")]
OutDir = Annotated[Path, typer.Option("--out", "-o", help="Output folder.")]
Seed = Annotated[int, typer.Option("--seed", help="Random seed (weights, order, augmentation, label subset).")]
Device = Annotated[str, typer.Option("--device", help="auto (CUDA when present), cpu, cuda or cuda:N.")]
Arch = Annotated[str, typer.Option("--arch", help="smp architecture (unet, unetplusplus, fpn, deeplabv3plus, ...).")]
Encoder = Annotated[str, typer.Option("--encoder", help="smp encoder (resnet18, resnet50, ...); built with encoder_weights=None.")]
Size = Annotated[int, typer.Option("--size", help="Input size in pixels (images are resized on the device).")]
Epochs = Annotated[int, typer.Option("--epochs", help="Number of epochs.")]
BatchSize = Annotated[int, typer.Option("--batch-size", "-b", help="Global batch size (all processes together).")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last finished epoch.")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace a run already in --out.")]
NoAmp = Annotated[bool, typer.Option("--no-amp", help="Disable bfloat16 autocast on CUDA.")]
CheckpointEvery = Annotated[float, typer.Option("--checkpoint-every", help="Seconds between checkpoints for --resume (the first and last epoch always write one; 0: every epoch).")]
ModelFile = Annotated[Path, typer.Option("--model", "-m", help="Segmentation weight file written by `mosl finetune`.")]
Threshold = Annotated[float, typer.Option("--threshold", help="Probability threshold for the lesion mask.")]


def _is_main_rank() -> bool:
    return os.environ.get("RANK", "0") == "0"


@contextmanager
def _user_errors() -> Iterator[None]:
    """Turn a MoslError into one red line and exit code 1 (a traceback only with --debug)."""
    from mosl_cli.errors import MoslError

    try:
        yield
    except MoslError as exc:
        if _STATE["debug"]:
            console.print_exception()
        console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: finished epochs are kept; rerun the same command with --resume")
        raise typer.Exit(130) from None


def _call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    with _user_errors():
        return fn(*args, **kwargs)


class _TrainingProgress:
    """A Rich progress bar fed by the training loops' callback (rank 0 only)."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.progress: Progress | None = None
        self.task: Any = None
        self.steps = 0

    def __enter__(self) -> _TrainingProgress:
        if _is_main_rank():
            self.progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=console, transient=False,
            )
            self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.progress:
            self.progress.__exit__(*exc)

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        if not self.progress:
            return
        if event == "start":
            self.steps = info["steps_per_epoch"]
            total = info["epochs"] * self.steps
            self.task = self.progress.add_task(self.title, total=total, completed=info["start_epoch"] * self.steps, info="")
            console.print(f"{self.title}: {info['images']} images on {info['device']}"
                          + (f", resuming after epoch {info['start_epoch']}" if info["start_epoch"] else ""))
            if "init" in info:
                console.print(f"initialised from: {_describe_init(info['init'])}")
        elif event == "step":
            done = (info["epoch"] - 1) * self.steps + info["step"]
            text = f"ep {info['epoch']} loss {info['loss']:.4f} lr {info['lr']:.2e} {info['images_per_s']:.0f} img/s"
            if info.get("embedding_std") == info.get("embedding_std"):
                text += f" std {info['embedding_std']:.4f}"
            self.progress.update(self.task, completed=done, info=text)
        elif event == "epoch":
            text = f"ep {info['epoch']} loss {info['loss']:.4f}"
            if "val_dice" in info:
                text += f" val Dice {info['val_dice']:.3f} (best ep {info['best_epoch']})"
            self.progress.update(self.task, completed=info["epoch"] * self.steps, info=text)


def _describe_init(init: dict[str, Any]) -> str:
    if init.get("init") == "none":
        return "random weights (supervised baseline)"
    load = init.get("load", {})
    auto = " (found by --init auto)" if init.get("auto") else ""
    return (f"{init['init']}{auto}: {load.get('loaded', 0)} tensors loaded, {load.get('missing', 0)} missing, "
            f"{load.get('unexpected', 0)} unexpected")


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    _STATE["debug"] = debug
    if version:
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
        table.add_row(str(r["source"]), str(r["organ"]), str(r["images"]), str(r["masks"]), classes, splits, str(r["skipped"]))
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
    format: Annotated[str, typer.Option("--format", "-f", help="Force a reader: auto, busi, udiat, hc18, pocus, camus, cifar10, miniimagenet, folder, synthetic.")] = "auto",
    size: Annotated[int, typer.Option("--size", help="Stored image size S (resized again on the device at training time).")] = 256,
    channels: Annotated[int, typer.Option("--channels", help="1 (luminance) or 3 (RGB).")] = 1,
    seed: Seed = 0,
    splits: Annotated[str, typer.Option("--splits", help="train,val,test fractions.")] = "0.7,0.1,0.2",
    frames_per_video: Annotated[str, typer.Option("--frames-per-video", help="Frames sampled evenly from each video, or `all`.")] = "8",
    camus_label: Annotated[int, typer.Option("--camus-label", help="CAMUS label used as the mask (1 = left-ventricle cavity).")] = 1,
    synthetic_count: Annotated[int, typer.Option("--synthetic-count", help="Scans generated for the `synthetic` source.")] = 600,
    dedup_distance: Annotated[int, typer.Option("--dedup-distance", help="Max perceptual-hash Hamming distance grouping near-duplicates.")] = C.PrepareConfig.dedup_distance,
    workers: Annotated[int, typer.Option("--workers", help="Decode processes (0 = one per core).")] = 0,
    organ: Annotated[Optional[str], typer.Option("--organ", help="Organ of the folders read as plain trees (e.g. muscle); default: unknown, or natural for CIFAR/ImageNet class folders.")] = None,
    group_pattern: Annotated[str, typer.Option("--group-pattern", help="Regex finding a patient key in file or folder names; its scans and videos share a split.")] = C.DEFAULT_GROUP_PATTERN,
    crop: Annotated[bool, typer.Option("--crop/--no-crop", help="Crop screen exports in plain trees to the ultrasound image.")] = True,
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
    fpv = None if frames_per_video.strip().lower() == "all" else _int_option(frames_per_video, "--frames-per-video", "a number or all")
    cfg = C.PrepareConfig(tuple(sources), str(out), format, size, channels, seed, split_tuple,  # type: ignore[arg-type]
                          fpv, camus_label, synthetic_count, dedup_distance, workers,
                          organ=organ, group_pattern=group_pattern, crop=crop)
    from mosl_cli.prepare import run_prepare

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console, transient=True) as bar:
        tasks: dict[str, Any] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        summary = _call(run_prepare, cfg, progress)
    out_console.print(_dataset_table(summary.rows, f"{summary.out}: {summary.total} images"))
    out_console.print(f"near-duplicate groups merged: {summary.groups_merged}; files skipped: {len(summary.skipped)}"
                      + (" (reasons in manifest.json)" if summary.skipped else ""))


@app.command(epilog="Example: mosl info mosl_data")
def info(data: Annotated[Path, typer.Argument(help="Dataset directory.")] = Path(C.DEFAULT_DATASET)) -> None:
    """Print the summary table of an existing dataset directory again."""
    from mosl_cli.data.store import read_manifest
    from mosl_cli.prepare import summarize

    manifest = _call(read_manifest, data)
    rows = summarize(manifest)
    total = sum(r["images"] for r in rows)
    out_console.print(_dataset_table(rows, f"{data}: {total} images at {manifest['size']} px, {manifest['channels']} channel(s)"))
    out_console.print(f"near-duplicate groups merged: {manifest.get('groups_merged', 0)}; files skipped: {len(manifest.get('skipped', []))}")


# --------------------------------------------------------------------------- pretrain


@app.command(epilog="Example: mosl pretrain --method simsiam --data busi --data hc18 --encoder resnet50 --size 64 --epochs 100")
def pretrain(
    method: Annotated[str, typer.Option("--method", help="simclr, moco or simsiam.")] = C.PretrainConfig.method,
    data: Annotated[Optional[list[Path]], typer.Option("--data", "-d", help="Dataset directory (repeat to mix several).")] = None,
    data_weights: Annotated[Optional[str], typer.Option("--data-weights", help="Comma-separated sampling weight per --data.")] = None,
    arch: Arch = "unet",
    encoder: Encoder = "resnet50",
    scope: Annotated[str, typer.Option("--scope", help="encoder, or encoder-decoder (the whole U-Net).")] = C.PretrainConfig.scope,
    positives: Annotated[str, typer.Option("--positives", help="views: two views of one scan; group: one scan and another frame/scan of its video or patient group (USCL).")] = C.PretrainConfig.positives,
    dense_weight: Annotated[float, typer.Option("--dense-weight", help="Weight of the pixel-level contrastive loss on the decoder (0: off; needs --scope encoder-decoder).")] = C.PretrainConfig.dense_weight,
    size: Size = 64,
    epochs: Epochs = C.PretrainConfig.epochs,
    batch_size: BatchSize = 64,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Base lr per 256 images (scaled by batch/256); default: the method's paper.")] = None,
    weight_decay: Annotated[Optional[float], typer.Option("--weight-decay", help="Default: the method's paper.")] = None,
    warmup_epochs: Annotated[int, typer.Option("--warmup-epochs", help="Linear warm-up before the cosine decay.")] = 5,
    preset: Annotated[str, typer.Option("--preset", help="Augmentation preset: ultrasound or simclr.")] = "ultrasound",
    crop_min: Annotated[Optional[float], typer.Option("--crop-min", help="Smallest random-resized-crop area fraction (default: the preset's, 0.2 ultrasound / 0.08 simclr).")] = None,
    jitter: Annotated[float, typer.Option("--jitter", help="Brightness/contrast jitter strength of the views (0: none).")] = C.PretrainConfig.jitter,
    temperature: Annotated[Optional[float], typer.Option("--temperature", help="SimCLR/MoCo softmax temperature.")] = None,
    proj_dim: Annotated[Optional[int], typer.Option("--proj-dim", help="Projector output size.")] = None,
    proj_hidden: Annotated[Optional[int], typer.Option("--proj-hidden", help="Projector hidden size.")] = None,
    pred_hidden: Annotated[Optional[int], typer.Option("--pred-hidden", help="SimSiam predictor bottleneck.")] = None,
    momentum: Annotated[Optional[float], typer.Option("--momentum", help="MoCo key-encoder momentum.")] = None,
    queue_size: Annotated[Optional[int], typer.Option("--queue-size", help="MoCo queue length.")] = None,
    steps_per_epoch: Annotated[Optional[int], typer.Option("--steps-per-epoch", help="Default: one pass over the data.")] = None,
    include_test: Annotated[bool, typer.Option("--include-test", help="Also pre-train on test-split images.")] = False,
    seed: Seed = 0,
    device: Device = "auto",
    no_amp: NoAmp = False,
    checkpoint_every: CheckpointEvery = C.PretrainConfig.checkpoint_every,
    out: OutDir = Path(C.DEFAULT_PRETRAIN_RUN),
    resume: Resume = False,
    overwrite: Overwrite = False,
) -> None:
    """Self-supervised pre-training (SimCLR, MoCo v2, SimSiam) of a U-Net encoder or the whole U-Net."""
    weights = None
    if data_weights:
        try:
            weights = tuple(float(w) for w in data_weights.split(","))
        except ValueError:
            raise typer.BadParameter("comma-separated numbers, one per --data", param_hint="--data-weights") from None
    cfg = C.PretrainConfig(
        method=method, data=tuple(str(d) for d in (data or [Path(C.DEFAULT_DATASET)])), data_weights=weights,
        arch=arch, encoder=encoder, scope=scope, positives=positives, dense_weight=dense_weight, size=size, epochs=epochs, batch_size=batch_size,
        lr=lr, weight_decay=weight_decay, warmup_epochs=warmup_epochs, preset=preset, crop_scale=(crop_min, 1.0) if crop_min is not None else None,
        jitter=jitter,
        temperature=temperature, proj_dim=proj_dim, proj_hidden=proj_hidden, pred_hidden=pred_hidden,
        momentum=momentum, queue_size=queue_size, steps_per_epoch=steps_per_epoch, seed=seed, device=device,
        amp=not no_amp, include_test=include_test, checkpoint_every=checkpoint_every, out=str(out), resume=resume, overwrite=overwrite,
    )
    from mosl_cli.pretrain import run_pretrain

    with _TrainingProgress(f"pretrain {method}") as bar:
        result = _call(run_pretrain, cfg, bar)
    if _is_main_rank():
        out_console.print(f"pre-trained weights: {result.out / C.WEIGHTS_FILE}  (loss {result.final_loss:.4f}, "
                          f"embedding std {result.embedding_std:.4f}, {result.images_per_s:.0f} img/s)")


# --------------------------------------------------------------------------- finetune


@app.command(epilog="Example: mosl finetune --init mosl_pretrain/model.safetensors --label-fraction 0.25 --size 64")
def finetune(
    data: DataDir = Path(C.DEFAULT_DATASET),
    init: Annotated[str, typer.Option("--init", help="auto (mosl_pretrain/model.safetensors if present), none, or a weight file (mosl, torchvision, lightly/solo-learn .ckpt, MoCo/SimSiam .pth.tar).")] = "auto",
    arch: Arch = "unet",
    encoder: Encoder = "resnet50",
    label_fraction: Annotated[float, typer.Option("--label-fraction", help="Fraction of train labels used, in (0, 1]; nested across fractions.")] = 1.0,
    size: Size = 64,
    epochs: Epochs = 50,
    batch_size: BatchSize = 16,
    lr: Annotated[float, typer.Option("--lr", help="AdamW learning rate.")] = 1e-3,
    encoder_lr_scale: Annotated[float, typer.Option("--encoder-lr-scale", help="Encoder lr = lr × this.")] = 1.0,
    weight_decay: Annotated[float, typer.Option("--weight-decay")] = 1e-4,
    freeze_encoder_epochs: Annotated[int, typer.Option("--freeze-encoder-epochs", help="Epochs with the encoder frozen.")] = 0,
    freeze_encoder_bn: Annotated[bool, typer.Option("--freeze-encoder-bn", help="Keep the pre-trained encoder's BatchNorm statistics (its BN layers stay in eval mode; their scale and shift still train).")] = C.FinetuneConfig.freeze_encoder_bn,
    patience: Annotated[int, typer.Option("--patience", help="Stop after this many epochs without a better val Dice.")] = 15,
    steps_per_epoch: Annotated[Optional[int], typer.Option("--steps-per-epoch", help="Default: one pass over the labelled images (≥ 10).")] = None,
    no_augment: Annotated[bool, typer.Option("--no-augment", help="Resize only, no augmentation.")] = False,
    seed: Seed = 0,
    device: Device = "auto",
    no_amp: NoAmp = False,
    checkpoint_every: CheckpointEvery = C.FinetuneConfig.checkpoint_every,
    out: OutDir = Path(C.DEFAULT_FINETUNE_RUN),
    resume: Resume = False,
    overwrite: Overwrite = False,
) -> None:
    """Fine-tune a segmentation U-Net from pre-trained or random weights on a fraction of the labels."""
    cfg = C.FinetuneConfig(
        data=str(data), init=init, arch=arch, encoder=encoder, label_fraction=label_fraction, size=size,
        epochs=epochs, batch_size=batch_size, lr=lr, encoder_lr_scale=encoder_lr_scale, weight_decay=weight_decay,
        freeze_encoder_epochs=freeze_encoder_epochs, freeze_encoder_bn=freeze_encoder_bn, patience=patience, steps_per_epoch=steps_per_epoch,
        augment=not no_augment, seed=seed, device=device, amp=not no_amp, checkpoint_every=checkpoint_every, out=str(out), resume=resume, overwrite=overwrite,
    )
    from mosl_cli.finetune import run_finetune

    with _TrainingProgress(f"finetune {label_fraction:g} labels") as bar:
        result = _call(run_finetune, cfg, bar)
    if _is_main_rank():
        out_console.print(f"segmentation model: {result.out / C.WEIGHTS_FILE}  (best val Dice {result.best_val_dice:.4f} "
                          f"at epoch {result.best_epoch}, {result.labelled} labelled images)")


# --------------------------------------------------------------------------- evaluate / predict


@app.command(epilog="Example: mosl evaluate --model mosl_finetune/model.safetensors --split test --tta")
def evaluate(
    model: ModelFile = Path(C.DEFAULT_FINETUNE_RUN) / C.WEIGHTS_FILE,
    data: DataDir = Path(C.DEFAULT_DATASET),
    split: Annotated[str, typer.Option("--split", help="test, val, train or all.")] = "test",
    out: OutDir = Path(C.DEFAULT_EVAL_DIR),
    tta: Annotated[bool, typer.Option("--tta", help="Average with the horizontally flipped prediction.")] = False,
    threshold: Threshold = 0.5,
    batch_size: BatchSize = 64,
    device: Device = "auto",
) -> None:
    """Dice, IoU, precision, recall and HD95 per case and per class; metrics.json and per_case.csv."""
    cfg = C.EvaluateConfig(str(model), str(data), split, str(out), tta, threshold, batch_size, device)
    from mosl_cli.evaluate import run_evaluate

    result = _call(run_evaluate, cfg)
    table = Table(title=f"{model} on {data} [{split}]")
    columns = ("group", "n", "dice", "iou", "precision", "recall", "hd95")
    for col in columns:
        table.add_column(col, justify="left" if col == "group" else "right")
    for row in result.rows:
        table.add_row(*(str(row.get(col, "")) for col in columns))
    out_console.print(table)
    out_console.print(f"written: {result.out / 'metrics.json'}, {result.out / 'per_case.csv'}")


@app.command(epilog="Example: mosl predict scan.png --out mask.png --overlay   |   mosl predict scans/ --out masks/")
def predict(
    inputs: Annotated[list[str], typer.Argument(help="Scans (PNG, JPEG, BMP, TIFF): files, folders or globs.")],
    model: ModelFile = Path(C.DEFAULT_FINETUNE_RUN) / C.WEIGHTS_FILE,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Mask file for one scan, else a folder (default mosl_predict/).")] = None,
    overlay: Annotated[bool, typer.Option("--overlay", help="Also write the scan with the lesion outline.")] = False,
    threshold: Threshold = 0.5,
    batch_size: BatchSize = 32,
    device: Device = "auto",
) -> None:
    """Write a 0/255 lesion mask at each scan's own size (and an overlay)."""
    cfg = C.PredictConfig(tuple(inputs), str(model), str(out) if out else None, overlay, threshold, batch_size, device)
    from mosl_cli.predict import run_predict

    results = _call(run_predict, cfg)
    for r in results[:20]:
        extra = f", overlay {r.overlay}" if r.overlay else ""
        out_console.print(f"{r.input} → {r.mask} ({r.width}×{r.height}, {r.lesion_pixels} lesion px{extra})")
    if len(results) > 20:
        out_console.print(f"... and {len(results) - 20} more")


@app.command(epilog="Example: mosl report paper_grid --out paper_grid/report")
def report(
    runs: Annotated[list[Path], typer.Argument(help="Finetune run folders, or folders holding them and their evaluate outputs (searched recursively).")],
    out: OutDir = Path(C.DEFAULT_REPORT_DIR),
    cases: Annotated[int, typer.Option("--cases", help="Benign and malignant test cases each in the mask grid (0: no grid).")] = C.ReportConfig.cases,
) -> None:
    """Tables (CSV, Markdown: mean ± std over seeds, Δ vs supervised) and figures from finetune and evaluate runs."""
    if cases < 0:
        raise typer.BadParameter("0 (no mask grid) or more", param_hint="--cases")
    cfg = C.ReportConfig(tuple(str(r) for r in runs), str(out), cases)
    from mosl_cli.report import run_report

    result = _call(run_report, cfg)
    columns, rows = result.columns, result.table
    title = f"test Dice of {len(result.runs)} finetune runs, mean ± std over n seeds"
    if len({row[0] for row in rows}) == 1:  # one model and size: named in the title
        title, columns, rows = f"{title} ({rows[0][0]})", columns[1:], [row[1:] for row in rows]
    table = Table(title=title)
    for col in columns:
        table.add_column(col, justify="right" if col in ("labels", "n") or col.startswith(("Dice", "Δ", "IoU")) else "left")
    for row in rows:
        table.add_row(*row)
    # Piped or redirected output gets the whole table rather than one squeezed to 80 columns.
    (out_console if out_console.is_terminal else Console(width=max(out_console.width, 200))).print(table)
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)
    for problem in result.problems:
        console.print(f"[yellow]problem:[/] {problem}", highlight=False, soft_wrap=True)
    out_console.print("written: " + ", ".join(str(f) for f in result.files))


def main() -> None:
    """Console-script entry point."""
    app(prog_name="mosl")


if __name__ == "__main__":
    main()
