"""Atomic file writes: a temporary name in the same folder, then ``os.replace``.

An interrupted step therefore never leaves a truncated weight, dataset or metrics file behind; the
temporary files a hard kill leaves are removed by :func:`remove_stale_temps` when that step starts
again. Files are created with mode 0666 minus the umask, like any other program's.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789_"
# ".<target name>.<8 random characters>.tmp": what atomic_path and temp_dir create (and mkstemp did).
_TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp$")
# safetensors reports write failures as text that embeds the OS error number.
_RUST_OS_ERROR = re.compile(r"Os \{ code: (\d+)|\(os error (\d+)\)")


def _token() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(8))


def temp_name(target: Path) -> Path:
    """A fresh temporary name beside ``target`` (not created)."""
    return target.with_name(f".{target.name}.{_token()}.tmp")


def as_os_error(exc: BaseException, path: str | os.PathLike[str]) -> OSError | None:
    """``exc`` as an :class:`OSError` naming ``path`` when it is an OS failure (also safetensors'), else ``None``."""
    if isinstance(exc, OSError):
        return OSError(exc.errno, exc.strerror or str(exc), str(path)) if exc.errno else exc
    match = _RUST_OS_ERROR.search(str(exc))
    if match:
        code = int(match.group(1) or match.group(2))
        return OSError(code, os.strerror(code), str(path))
    return None


def umask() -> int:
    """The process's umask, read without changing it where Linux shows it."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` when the block succeeds.

    An OS failure while writing (no space, read-only file system) is re-raised as an
    :class:`OSError` that names ``path`` rather than the temporary file.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(target.parent)) from None
    while True:
        tmp_path = temp_name(target)
        try:
            os.close(os.open(tmp_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            break
        except FileExistsError:
            continue
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, str(target)) from None
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~umask())  # some writers (safetensors) re-create the file as 0600
        os.replace(tmp_path, target)
    except Exception as exc:
        os_error = as_os_error(exc, target)
        if os_error is None or os_error is exc:
            raise
        raise os_error from exc
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def make_temp_dir(target: Path) -> Path:
    """Create an empty folder beside ``target`` under a temporary name (mode 0777 minus the umask)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = temp_name(target)
        try:
            tmp.mkdir()
            return tmp
        except FileExistsError:
            continue


def remove_stale_temps(folder: str | os.PathLike[str], target: str | None = None) -> list[Path]:
    """Delete the temporary files and folders a killed write left in ``folder`` (only those for
    ``target`` when given); return what was removed. Other files are never touched."""
    removed: list[Path] = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        match = _TEMP_NAME.match(entry.name)
        if not match or (target is not None and match.group("target") != target):
            continue
        with contextlib.suppress(OSError):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
    return removed


def exchange(src: Path, dst: Path) -> bool:
    """Swap two existing folders in one atomic step (Linux ``renameat2``); False where unsupported."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(dst))


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def append_jsonl(path: str | os.PathLike[str], record: dict[str, Any]) -> None:
    """Append one JSON line (a log record; a torn last line is ignored by :func:`read_jsonl`)."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
        fh.flush()


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a JSON-lines file, skipping a torn last line left by a kill."""
    out: list[dict[str, Any]] = []
    p = Path(path)
    if not p.exists():
        return out
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out
