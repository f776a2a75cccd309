#!/usr/bin/env bash
# The CUDA path in one short run, for a lent GPU machine (CI has none):
#   1. the CUDA-only tests (evaluate and predict on CUDA match the CPU);
#   2. benchmarks/pretrain.py and benchmarks/predict.py (bf16 autocast and channels_last on, as mosl runs);
#   3. `mosl pretrain` with and without --no-amp (SimSiam, resnet50, 64 px, batch 256): images/s of each;
#   4. `mosl pretrain --scope encoder-decoder --dense-weight 1` (the pixel-level loss) end to end.
#
#   bash benchmarks/cuda_check.sh DATA OUTDIR     # DATA: a `mosl prepare`d folder, e.g. BUSI
#
# Each step prints its own output; OUTDIR gets the JSON of each benchmark and cuda_check.json
# (the AMP ratio). MOSL (default `mosl`) is the command.
set -uo pipefail
data=$1 out=$2
MOSL=${MOSL:-mosl}
mkdir -p "$out"
nvidia-smi -L
python3 -c "import torch, kornia, segmentation_models_pytorch as smp; print('torch', torch.__version__, 'kornia', kornia.__version__, 'smp', smp.__version__, torch.cuda.get_device_name())"

echo "== CUDA-only tests"
timeout 180 python3 -m pytest -q -p no:cacheprovider tests/test_evaluate.py tests/test_predict.py -k cuda

echo "== benchmarks"
timeout 180 python3 benchmarks/pretrain.py --device cuda --data "$data" --json-out "$out/bench_pretrain.json"
timeout 120 python3 benchmarks/predict.py --device cuda --synthetic > "$out/bench_predict.json"; cat "$out/bench_predict.json"

echo "== mosl pretrain: bf16 autocast on and off"
for amp in on off; do
  flag=; [ $amp = off ] && flag=--no-amp
  timeout 120 $MOSL pretrain --method simsiam --encoder resnet50 --size 64 --batch-size 256 --epochs 3 \
    --steps-per-epoch 15 --data "$data" --out "$out/tmp_amp_$amp" --overwrite $flag 2>&1 | tail -1
done
echo "== mosl pretrain: pixel-level loss on the decoder"
timeout 120 $MOSL pretrain --encoder resnet18 --size 64 --batch-size 64 --epochs 2 --steps-per-epoch 10 \
  --scope encoder-decoder --dense-weight 1 --data "$data" --out "$out/tmp_dense" --overwrite 2>&1 | tail -1

python3 - "$out" <<'EOF'
"""cuda_check.json: images/s of the last epoch with autocast on and off, and the dense run's loss."""
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
def last(run):
    log = out / run / "log.jsonl"
    return json.loads(log.read_text().splitlines()[-1]) if log.exists() else None
on, off, dense = last("tmp_amp_on"), last("tmp_amp_off"), last("tmp_dense")
result = {
    "images_per_s_amp": on and on["images_per_s"], "images_per_s_fp32": off and off["images_per_s"],
    "amp_speedup": on and off and on["images_per_s"] / off["images_per_s"],
    "dense_last_epoch": dense,
}
(out / "cuda_check.json").write_text(json.dumps(result, indent=1))
print(json.dumps(result))
EOF
rm -rf "$out"/tmp_*
