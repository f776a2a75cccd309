"""Choosing the torch device (``--device``) and the mixed-precision context used on it."""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import torch

from mosl_cli.errors import MoslError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` → ``cuda`` when available, else ``cpu``; otherwise the named device, checked.

    Raises :class:`MoslError` for an unknown name or a CUDA device that is not there.
    """
    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise MoslError(f"--device {name}: unknown device; use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise MoslError(f"--device {name}: no CUDA device is available; use --device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise MoslError(
                f"--device {name}: only {torch.cuda.device_count()} CUDA device(s); use cuda:0 … "
                f"cuda:{torch.cuda.device_count() - 1}"
            )
    elif device.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise MoslError(f"--device {name}: MPS is not available; use --device cpu or auto")
    elif device.type != "cpu":
        raise MoslError(f"--device {name}: unsupported device type; use auto, cpu, cuda or cuda:N")
    return device


@functools.cache
def cpu_bf16() -> bool:
    """Whether this CPU has native bfloat16 instructions (AVX512-BF16 or AMX), where bf16 autocast runs
    convolutions about twice as fast as float32 (benchmarks/cpu_precision.py). Other CPUs emulate bf16
    and would gain nothing, so they stay in float32."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return bool({"avx512_bf16", "amx_bf16"} & set(flags)) and torch.backends.mkldnn.is_available()


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager[object]:
    """Mixed precision: bf16 on CUDA (float16 where bf16 is unsupported) and on CPUs with native bf16
    (:func:`cpu_bf16`); a no-op elsewhere or when ``enabled`` is False (``--no-amp``)."""
    if enabled and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast(device_type="cuda", dtype=dtype)
    if enabled and device.type == "cpu" and cpu_bf16():
        return torch.autocast(device_type="cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def memory_format(device: torch.device, channels_last: bool = True) -> torch.memory_format:
    """``torch.channels_last`` on CUDA and CPU when asked (faster convolutions there, with or without
    autocast), else contiguous."""
    return torch.channels_last if channels_last and device.type in ("cuda", "cpu") else torch.contiguous_format


def fused_optimizer(device: torch.device) -> bool:
    """Whether to use the fused AdamW/SGD kernels: one kernel over all parameters instead of a loop of
    per-tensor ops, which makes an optimiser step several times faster on CPU and CUDA (the devices
    that have them)."""
    return device.type in ("cpu", "cuda")
