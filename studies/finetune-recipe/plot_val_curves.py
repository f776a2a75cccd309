"""Val Dice per epoch of the study's runs (``log.jsonl`` copies in ``results/``): the live weights
and, where logged, their moving average. One panel per input size.

    python studies/finetune-recipe/plot_val_curves.py
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from mosl_cli.report.figures import save_png  # noqa: E402

HERE = Path(__file__).parent
RUNS = {  # results/<file>: label
    64: {
        "64_normal_scans_ema.jsonl": "normal scans in, strong aug.",
        "64_mild_ema.jsonl": "normal scans in, mild aug.",
        "64_lesion_only_ema.jsonl": "lesion scans only, strong aug. (default)",
    },
    128: {"128_lesion_only_ema.jsonl": "lesion scans only, strong aug. (default)"},
}


def main() -> None:
    fig, axes = plt.subplots(1, len(RUNS), figsize=(11, 4), sharey=True)
    for ax, (size, runs) in zip(axes, RUNS.items()):
        for i, (name, label) in enumerate(runs.items()):
            path = HERE / "results" / name
            if not path.is_file():
                continue
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            epochs = [r["epoch"] for r in rows]
            colour = f"C{i}"
            ax.plot(epochs, [r["val_dice"] for r in rows], color=colour, label=f"{label}, last weights")
            if "val_dice_ema" in rows[0]:
                ax.plot(epochs, [r["val_dice_ema"] for r in rows], color=colour, linestyle="--", label=f"{label}, EMA")
        ax.set_title(f"{size} px, resnet18 U-Net, seed 0")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    axes[0].set_ylabel("val Dice, all 77 val scans (training size, no TTA)")
    fig.tight_layout()
    save_png(fig, HERE / "results" / "val_curves.png", dpi=120)


if __name__ == "__main__":
    main()
