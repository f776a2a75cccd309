"""How a step ends when it fails: one line on stderr and an exit code, never a traceback.

Exit codes: 1 for a :class:`~mosl_cli.errors.MoslError` or an OS error (no space, read-only, not a
folder), 2 for a :class:`~mosl_cli.errors.UsageError`, 130 for Ctrl-C (SIGINT) and 143 for SIGTERM,
which behaves like Ctrl-C. Also the output-folder rule: made before the work, removed again when the
step fails while it is still empty. Imports nothing heavy (``mosl --help`` stays fast).
"""

from __future__ import annotations

import errno
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from mosl_cli.errors import MoslError, UsageError


class Terminated(KeyboardInterrupt):
    """SIGTERM (what schedulers send), raised where the step is, like Ctrl-C's KeyboardInterrupt."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


def _catch_sigterm() -> Any:
    """Install the SIGTERM handler (main thread only); return the one it replaced."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_terminated)


@contextmanager
def one_line_errors(console: Console, debug: bool, interrupted: str) -> Iterator[None]:
    """Turn every expected failure into one line on ``console`` and :class:`typer.Exit` with its code
    (the traceback too with ``debug``); ``interrupted`` is what the line says after Ctrl-C or SIGTERM."""
    previous = _catch_sigterm()
    try:
        yield
    except (MoslError, OSError) as exc:
        if debug:
            console.print_exception()
        text = str(exc) if isinstance(exc, MoslError) else os_error_line(exc)
        # escaped: a file name or an extra such as mosl-cli[dicom] is text, not rich markup
        console.print(f"[bold red]error:[/] {escape(' '.join(text.split()))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2 if isinstance(exc, UsageError) else 1) from None
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, Terminated)
        console.print(
            f"[yellow]{'terminated' if terminated else 'interrupted'}[/]: {escape(interrupted)}",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(143 if terminated else 130) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


_OS_ADVICE = {
    errno.ENOSPC: "free space or write elsewhere",
    errno.EDQUOT: "free space or write elsewhere",
    errno.EROFS: "write elsewhere",
    errno.ENOTDIR: "a part of the path is a file; choose another path",
    errno.EEXIST: "choose another path",
    errno.EACCES: "check the permissions or choose another path",
    errno.EPERM: "check the permissions or choose another path",
}


def os_error_line(exc: OSError) -> str:
    """``PATH: reason; what to do`` for an OS failure."""
    reason = (exc.strerror or str(exc)).rstrip(".")
    reason = reason[:1].lower() + reason[1:]
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{reason}; {_OS_ADVICE.get(exc.errno or 0, 'check the path')}"


def make_out(path: Path) -> list[Path]:
    """Create the output folder ``path`` early (an unusable one fails before any work); return the
    folders created, deepest first, for :func:`remove_empty` when the step fails."""
    if path.exists() and not path.is_dir():
        raise MoslError(f"--out {path}: exists and is a file, not a folder; pass a folder name")
    blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise MoslError(f"--out {path}: {blocker} is a file, not a folder; choose another --out")
    missing = [p for p in (path, *path.parents) if not p.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MoslError(f"--out {path}: cannot create the folder ({exc.strerror}); choose another --out") from None
    if not os.access(path, os.W_OK):
        why = "read-only file system" if os.statvfs(path).f_flag & os.ST_RDONLY else "permission denied"
        remove_empty(missing)
        raise MoslError(f"--out {path}: not writable ({why}); choose another --out")
    return missing


def remove_empty(folders: list[Path]) -> None:
    """Remove ``folders`` (deepest first) while they are empty; one that holds anything stays."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            break
