#!/usr/bin/env bash
# GPU checks for mammoseg on one CUDA machine (not part of the test suite; CI has no GPU).
# Sized for the 15-minute device budget of a session; every figure lands under $OUT.
#
#   1. the exact median of the device augmentation rows: each method, k = 3/7/11, on CUDA;
#   2. training throughput of the four models at the paper's setting (512 px, crop 448,
#      batch 32, every Table 1 row): step-only vs end-to-end (the real loop), eager fp32,
#      bf16 + channels_last, and compiled; FLOPs, TFLOP/s and MFU against a bf16 matmul peak;
#   3. the `paper` preset through torchrun + DDP (NCCL) with compile on, one short fold,
#      interrupted and resumed.
#
# Usage: OUT=results bash benchmarks/gpu.sh   (wheels for missing packages may sit in .whl/)
set -uo pipefail
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD/src
else
  export PYTHONPATH=$PWD/src
fi
export PYTHONUNBUFFERED=1
MS="python3 -m mammoseg"
W=/tmp/mammoseg_gpu
rm -rf "$W" && mkdir -p "$W"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0), 'bf16', torch.cuda.is_bf16_supported())" | tee "$OUT/env.txt"

echo "== exact median on the device"
timeout 120 python3 benchmarks/median.py --device cuda --json "$OUT/median.json" 2>&1 | tee "$OUT/median.txt"

echo "== training throughput (512 px, crop 448, batch 32, every Table 1 row)"
timeout 420 python3 benchmarks/train_throughput.py --device cuda --size 512 --crop 448 --batch 32 --images 256 \
  --steps 10 --variants fp32,bf16,compiled --models resnet34-unet,resnet22-unet,resnet34-fpn,resnet22-fpn \
  --json "$OUT/throughput.json" 2>&1 | tee "$OUT/throughput.txt"

echo "== paper preset through torchrun (DDP, NCCL, compile auto), 1 fold, stopped and resumed"
$MS synth --out $W/synth --patients 24 --shape 1600x1300 --seed 0 >/dev/null 2>&1 || exit 1
$MS prepare --format manifest --src $W/synth --out $W/prep512 --size 512 --workers 8 --no-progress 2>&1 | tail -2
run() {
  torchrun --standalone --nproc_per_node=1 -m mammoseg train --config paper --data $W/prep512 --out $W/run_paper \
    --folds 0 --device cuda --no-progress model.encoder_weights=null epochs.combo=1 epochs.focal_tversky=2 \
    'lr_milestones=[2]' "$@"
}
start=$(date +%s)
( run epochs.focal_tversky=1 && run --resume ) > "$OUT/paper_ddp.log" 2>&1  # a config change is refused ...
run --resume >> "$OUT/paper_ddp.log" 2>&1                                     # ... the same config resumes
echo "paper rc=$? seconds=$(( $(date +%s) - start ))" | tee -a "$OUT/paper_ddp.log"
cp $W/run_paper/fold0/log.csv "$OUT/paper_fold0_log.csv" 2>/dev/null
