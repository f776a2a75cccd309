"""Wall time and memory of ``mosl prepare`` on BUSI; prints one JSON object.

Runs :func:`mosl_cli.prepare.run_prepare` (detect, list, decode + resize + hash in a process pool,
group, split, write) on BUSI from ``../shared/data`` at 256 px, as a user would, into a temporary
folder. Target: under 10 s on a 2-core machine. Without the real data the ``synthetic`` source
(780 scans) stands in, and the JSON says so.

    python benchmarks/prepare.py [--source PATH|synthetic] [--size 256] [--workers 0] [--serial]

``--serial`` also times ``--workers 1`` for comparison. Stage times come from the progress callback.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

BUSI = Path(__file__).resolve().parents[2] / "shared" / "data" / "busi"
TARGET_S = 10.0


def timed_prepare(source: str, size: int, workers: int, out: Path) -> dict:
    """One ``run_prepare``: seconds in total and per stage, samples, duplicate statistics."""
    from mosl_cli.config import PrepareConfig
    from mosl_cli.prepare import run_prepare

    stages: dict[str, list[float]] = {}
    t0 = time.perf_counter()

    def progress(stage: str, done: int, total: int) -> None:
        now = time.perf_counter() - t0
        span = stages.setdefault(stage, [now, now])
        span[1] = now

    cfg = PrepareConfig(sources=(source,), out=str(out), size=size, workers=workers, synthetic_count=780)
    summary = run_prepare(cfg, progress)
    seconds = time.perf_counter() - t0
    return {
        "seconds": round(seconds, 3),
        "stages_s": {k: round(v[1] - v[0], 3) for k, v in stages.items()},
        "samples": summary.total,
        "groups_merged": summary.groups_merged,
        "dedup": summary.dedup,
        "skipped": len(summary.skipped),
        "bytes_written": sum(p.stat().st_size for p in Path(summary.out).iterdir()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=str(BUSI) if BUSI.is_dir() else "synthetic")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--serial", action="store_true", help="also time --workers 1")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        result = timed_prepare(args.source, args.size, args.workers, Path(tmp) / "ds")
        if args.serial:
            result["serial_seconds"] = timed_prepare(args.source, args.size, 1, Path(tmp) / "serial")["seconds"]
    kb = 1024.0
    result.update(
        {
            "source": "busi" if args.source == str(BUSI) else args.source,
            "size": args.size,
            "workers": args.workers or os.cpu_count(),
            # the main process (about 500 MB of it is torch itself, imported to write the file); decode
            # workers are not counted: Linux carries the parent's peak into a forked child's ru_maxrss
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / kb, 1),
            "target_s": TARGET_S,
            "meets_target": result["seconds"] < TARGET_S,
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "machine": platform.machine(),
        }
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
