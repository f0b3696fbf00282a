#!/usr/bin/env bash
# The label-efficiency protocol of BENCHMARKS.md ("Label efficiency on ACDC") in one prepared script for one CUDA GPU:
# ACDC 2D slices at 128 x 128, 10k pretraining steps per method with bfloat16 autocast, snapshots at 1k / 3k / 10k,
# then paired fine-tuning of random init and every pretraining at 1, 2, 8 and 50 labeled patients, and the report.
#
#   bash benchmarks/gpu/label_efficiency.sh                      # on the GPU machine (what BENCHMARKS.md reports)
#   DEVICE=cpu SIZE=32 STEPS=4 SEEDS=0 LABELED=1 FT_STEPS=8 WORKERS=0 TRAIN_DIR=<tiny ACDC-like folder> \
#       EXTRA="--num-test 5 --eval-every 2 --eval-last 2 --ae-steps 2 --num-clusters 2 4" \
#       bash benchmarks/gpu/label_efficiency.sh                  # toy size on CPU (tests/benchmarks/test_gpu_script.py)
#
# Every setting is an environment variable (defaults below). Pretrainings run as parallel processes on the one GPU,
# each with WORKERS data-loader processes for the bundle's per-sample view augmentation (16 cores: 5 processes x 3);
# fine-tuning runs one process per method. Every process writes its own JSON (resumable: rerun the script after a
# kill and finished pretraining steps and fine-tuning runs are skipped), and the last step merges them into
# $OUT/label_efficiency_gpu.json and .md. The CPU results of the same protocol are in BENCHMARKS.md beside these.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-python}
DEVICE=${DEVICE:-cuda}
SIZE=${SIZE:-128}
STEPS=${STEPS:-10000}
SEEDS=${SEEDS:-"0 1 2 3 4 5 6 7 8 9"}
LABELED=${LABELED:-"1 2 8 50"}
FT_STEPS=${FT_STEPS:-"1:1000 2:1000 8:2000 3000"}
WORKERS=${WORKERS:-3}
OUT=${OUT:-benchmarks/results/gpu}
TRAIN_DIR=${TRAIN_DIR:-}
EXTRA=${EXTRA:-}
METHODS=${METHODS:-"simclr global_local cluster_guided cluster_guided_staged local_discrimination"}
mkdir -p "$OUT/logs"

AMP=""
if [ "$DEVICE" != "cpu" ]; then
  AMP="--amp"
  "$PY" - <<'PYEOF'
import torch
if not torch.cuda.is_available():
    raise SystemExit("DEVICE is not cpu but torch.cuda.is_available() is False; set DEVICE=cpu for a CPU run")
print("GPU:", torch.cuda.get_device_name(0), "| torch", torch.__version__)
PYEOF
fi
SNAPSHOTS="$(( STEPS / 10 > 0 ? STEPS / 10 : 1 )) $(( STEPS * 3 / 10 > 0 ? STEPS * 3 / 10 : 1 )) $STEPS"
SNAPSHOTS=$(echo $SNAPSHOTS | tr ' ' '\n' | sort -nu | tr '\n' ' ')
COMMON=(--dataset heart --pipeline tensors --image-size "$SIZE" --heart-crop 0.66 --pretrain-steps $SNAPSHOTS --local-steps $(( STEPS / 10 > 0 ? STEPS / 10 : 1 ))
        --pretrain-batch 64 --ld-batch 16 --ld-steps-factor 0.5 --device "$DEVICE" $AMP --workers "$WORKERS"
        --work-dir "$OUT/work" --log-every 250 --save-every 500)
if [ -n "$TRAIN_DIR" ]; then COMMON+=(--train-dir "$TRAIN_DIR"); fi
# shellcheck disable=SC2206
COMMON+=($EXTRA)
start=$(date +%s)
echo "pretraining: $METHODS (snapshots $SNAPSHOTS) on $DEVICE"
pids=()
for group in "simclr" "global_local" "cluster_guided cluster_guided_staged" "local_discrimination"; do
  todo=""
  for m in $group; do case " $METHODS " in *" $m "*) todo="$todo $m";; esac; done
  [ -z "$todo" ] && continue
  name=$(echo $todo | tr ' ' '+')
  "$PY" benchmarks/label_efficiency.py "${COMMON[@]}" --pretrain-only --methods $todo --out "$OUT/pre_$name.json" \
      > "$OUT/logs/pre_$name.log" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || { echo "a pretraining failed; see $OUT/logs"; exit 1; }; done
echo "pretraining done in $(( $(date +%s) - start )) s"
pids=()
for m in random $METHODS; do
  "$PY" benchmarks/label_efficiency.py "${COMMON[@]}" --methods $m --seeds $SEEDS --num-labeled $LABELED \
      --finetune-steps $FT_STEPS --out "$OUT/ft_$m.json" > "$OUT/logs/ft_$m.log" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || { echo "a fine-tuning failed; see $OUT/logs"; exit 1; }; done
echo "fine-tuning done at $(( $(date +%s) - start )) s"
"$PY" benchmarks/label_efficiency.py "${COMMON[@]}" --methods random $METHODS --seeds $SEEDS --num-labeled $LABELED \
    --finetune-steps $FT_STEPS --report-only --merge "$OUT"/ft_*.json --out "$OUT/label_efficiency_gpu.json" \
    | tee "$OUT/label_efficiency_gpu.md"
echo "total $(( $(date +%s) - start )) s; results in $OUT"
