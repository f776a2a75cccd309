"""The last epoch's weights of a finished ``mosl finetune --select ema`` run, as ``--select last`` would
have saved them: the same training trajectory (the moving average does not feed back into training),
the live model from ``checkpoint.safetensors``, its post-processing rule chosen on val as ``finetune``
chooses it. Lets one run answer both "ema" and "last".

    python studies/finetune-recipe/last_from_checkpoint.py RUN_DIR OUT.safetensors
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from mosl_cli.config import FinetuneConfig, from_dict
from mosl_cli.data.store import load_dataset
from mosl_cli.finetune import final_validation, split_indices
from mosl_cli.models import model_from_file, save_weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="a finished `mosl finetune --select ema` run folder")
    parser.add_argument("out", type=Path, help="the weight file to write (.safetensors)")
    args = parser.parse_args()
    run, out = args.run, args.out
    for name in ("config.json", "model.safetensors", "checkpoint.safetensors"):
        if not (run / name).is_file():
            parser.error(f"{run / name}: no such file; give the folder of a finished `mosl finetune` run")
    doc = json.loads((run / "config.json").read_text())
    cfg = from_dict(FinetuneConfig, doc["config"])
    model, meta = model_from_file(run / "model.safetensors")
    tensors = load_file(str(run / "checkpoint.safetensors"))
    model.load_state_dict({k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")})
    ds = load_dataset(cfg.data)
    _, val = split_indices(ds, cfg)
    chosen = final_validation(model, meta, ds, val, torch.device("cpu"))
    meta = {**meta, "select": "last", "postprocess": chosen["postprocess"]}
    save_weights(out, model.state_dict(), meta)
    print(json.dumps({k: v for k, v in chosen.items() if k != "postprocess_candidates"}))


if __name__ == "__main__":
    main()
