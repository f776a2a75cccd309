"""Helpers for the hostile-input tests: run a step and check it ended in one clean line."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from mosl_cli.cli import app

runner = CliRunner()


def fails(args: list[str], code: int = 1, started: bool = False) -> str:
    """Run ``mosl ARGS`` in-process; assert exit ``code``, exactly one stderr line, no traceback and
    no uncaught exception; return that line. ``started``: the failure comes after training began, so
    the lines of the progress display come first and the error is the one last line."""
    result = runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "400"})
    assert result.exit_code == code, (args, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    if code == 2 and not lines[0].startswith("error:"):  # the parser's own usage box
        lines = [line for line in lines if line.startswith("│")]
    if started:
        assert lines[-1].startswith("error:") and sum(line.startswith("error:") for line in lines) == 1, lines
        lines = lines[-1:]
    assert len(lines) == 1, result.stderr
    return lines[0]


def succeeds(args: list[str]) -> Any:
    result = runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "400"})
    assert result.exit_code == 0, (args, result.output, result.exception)
    return result


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width × height`` pixels (no image data): a decompression bomb."""
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")
    )
    return path


def bad_weight_files(good: Path, folder: Path) -> dict[str, Path]:
    """Damaged or foreign weight files made from the mosl segmentation model ``good``."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    blob = good.read_bytes()
    with safe_open(str(good), framework="pt") as fh:
        meta = json.loads((fh.metadata() or {})["mosl"])
    files: dict[str, Path] = {}

    def put(name: str, data: bytes) -> None:
        files[name] = folder / f"{name}.safetensors"
        files[name].write_bytes(data)

    put("truncated", blob[: len(blob) // 2])
    put("empty", b"")
    put("garbage-header", struct.pack("<Q", 40) + b"this is not json at all, not at all!!!!!" + b"\0" * 64)
    put("header-longer-than-file", struct.pack("<Q", 10**9) + b"{}")
    files["pickle"] = folder / "pickle.safetensors"
    torch.save({"encoder.conv1.weight": torch.zeros(2)}, files["pickle"])
    tensor = {"encoder.conv1.weight": torch.zeros(2)}
    for name, value in (
        ("meta-list", [1, 2]),
        ("meta-no-arch", {k: v for k, v in meta.items() if k != "arch"}),
        ("meta-no-encoder", {k: v for k, v in meta.items() if k != "encoder"}),
    ):
        files[name] = folder / f"{name}.safetensors"
        save_file(tensor, str(files[name]), metadata={"mosl": json.dumps(value)})
    return files


def edit_manifest(src: Path, dst: Path, edit: Any) -> Path:
    """A copy of dataset ``src`` at ``dst`` whose manifest is ``edit(manifest)``."""
    import shutil

    shutil.copytree(src, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    (dst / "manifest.json").write_text(json.dumps(edit(manifest)))
    return dst
