"""Run under ``torchrun``: pre-train or fine-tune with the real core, then dump this rank's weights.

Usage: torchrun --nproc_per_node=2 tests/ddp_worker.py {pretrain,finetune} DATA OUT DUMP_DIR METHOD
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from safetensors.torch import save_file

from mosl_cli.config import FinetuneConfig, PretrainConfig
from mosl_cli.finetune import run_finetune
from mosl_cli.pretrain import run_pretrain


def main() -> None:
    kind, data, out, dump, method = sys.argv[1:6]
    if kind == "pretrain":
        cfg = PretrainConfig(
            method=method,
            data=(data,),
            encoder="resnet18",
            size=32,
            epochs=2,
            batch_size=8,
            warmup_epochs=0,
            proj_hidden=64,
            proj_dim=32,
            steps_per_epoch=2,
            device="cpu",
            out=out,
        )
        model = run_pretrain(cfg).model
    else:
        cfg_f = FinetuneConfig(
            data=data,
            init="none",
            encoder="resnet18",
            size=32,
            epochs=2,
            batch_size=8,
            steps_per_epoch=2,
            device="cpu",
            out=out,
        )
        model = run_finetune(cfg_f).model
    rank = os.environ["RANK"]
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(Path(dump) / f"rank{rank}.safetensors"))


if __name__ == "__main__":
    main()
