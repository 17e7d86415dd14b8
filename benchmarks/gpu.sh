#!/usr/bin/env bash
# GPU checks for mammoseg on one CUDA machine (not part of the test suite; CI has no GPU).
#
#   1. training throughput at the paper's setting (512 px, crop 448, batch 32, bf16 autocast,
#      channels_last) for the four models;
#   2. the `paper` preset end to end through torchrun + DDP (NCCL) for one short fold;
#   3. the `demo` preset and variants of it on the demo's own phantoms (3 folds each, run side
#      by side), to see which schedule reaches a good holdout Dice for the CPU budget.
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

echo "== demo data"
$MS synth --out $W/synth --patients 40 --shape 640x512 --seed 0 >/dev/null 2>&1 || exit 1
$MS prepare --format manifest --src $W/synth --out $W/prep256 --size 256 --seed 0 --workers 8 --no-progress 2>&1 | tail -2
$MS prepare --format manifest --src $W/synth --out $W/prep512 --size 512 --seed 0 --workers 8 --no-progress 2>&1 | tail -2

echo "== demo variants (3 folds each, side by side)"
variant() {  # name, overrides...
  local name=$1; shift
  ( start=$(date +%s)
    $MS train --config demo --data $W/prep256 --out $W/run_$name --device cuda --no-progress num_workers=2 "$@" \
    && $MS predict --run $W/run_$name --input $W/prep256 --split holdout --out $W/pred_$name --device cuda \
    && $MS evaluate --pred $W/pred_$name --data $W/prep256 --out $W/eval_$name
    echo "variant $name [$*] seconds=$(( $(date +%s) - start ))"
  ) > "$OUT/variant_$name.log" 2>&1 &
}
variant preset
variant long epochs.combo=40 epochs.focal_tversky=30 'lr_milestones=[60,66]'
variant long_table1 epochs.combo=40 epochs.focal_tversky=30 'lr_milestones=[60,66]' augmentation=table1
variant bs8 batch_size=8
variant short epochs.combo=16 epochs.focal_tversky=12 'lr_milestones=[22,26]'

echo "== training throughput (512 px, crop 448, batch 32)"
python3 benchmarks/train_throughput.py --device cuda --size 512 --crop 448 --batch 32 --steps 6 \
  --workers 8 --images 64 --models resnet34-unet,resnet22-unet,resnet34-fpn,resnet22-fpn 2>&1 | tee "$OUT/throughput.txt"

echo "== paper preset through torchrun (DDP, NCCL), 1 fold, 2+2 epochs"
start=$(date +%s)
torchrun --standalone --nproc_per_node=1 -m mammoseg train --config paper --data $W/prep512 --out $W/run_paper \
  --folds 0 --device cuda --no-progress model.encoder_weights=null epochs.combo=2 epochs.focal_tversky=2 \
  'lr_milestones=[3]' num_workers=6 > "$OUT/paper_ddp.log" 2>&1
echo "paper rc=$? seconds=$(( $(date +%s) - start ))" | tee -a "$OUT/paper_ddp.log"
cp $W/run_paper/fold0/log.csv "$OUT/paper_fold0_log.csv" 2>/dev/null

wait
echo "== demo variant results"
for f in "$OUT"/variant_*.log; do
  tail -n 1 "$f"; grep -h "Dice" "$f" | tail -n 1
done | tee "$OUT/variants.txt"
