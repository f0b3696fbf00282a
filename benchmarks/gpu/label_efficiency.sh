#!/usr/bin/env bash
# The pre-registered protocols of BENCHMARKS.md, through the bundles, in one prepared script for one CUDA GPU:
#
#   ACDC  "ACDC (2D slices) through the bundles at 128 px": the validation learning curve (random, CURVE_LABELED
#         patients, CURVE_STEPS budgets) and the pretraining of every method (PRE_STEPS steps each) side by side;
#         then the fine-tuning length by the pre-registered rule (label_efficiency.py --choose-steps), then every
#         initialisation fine-tuned at LABELED patients with SEEDS, one process per initialisation; then the report.
#   LA    "Left atrium (3D)": benchmarks/la_3d.py --protocol gpu (the same split, seeds and scores as the CPU
#         protocol, with the full-width network on whole volumes; reported apart from the CPU results).
#   SEMI  the fine-tuning variants of both protocols (default "none": labeled only); SEMI="none mean_teacher
#         copy_paste" adds issue 23's semi-supervised fine-tuning ("Semi-supervised fine-tuning, composed with
#         pretraining", arm B) to every initialisation, paired by seed with the labeled-only runs.
#
#   bash benchmarks/gpu/label_efficiency.sh                      # on the GPU machine
#   DEVICE=cpu SIZE=32 PRE_STEPS=2 SEEDS=0 LABELED=1 CURVE_LABELED="1 2" CURVE_STEPS="2 4" CURVE_EVERY=2 \
#       METHODS=simclr TRAIN_DIR=<tiny ACDC-like folder> LA_ARGS="--toy --data-dir <tiny LA folder>" \
#       EXTRA="--num-test 5 --val-patients 2 --eval-every 1 --eval-last 2 --ae-steps 2 --num-clusters 2 4" \
#       bash benchmarks/gpu/label_efficiency.sh                  # toy size on CPU (tests/benchmarks/test_gpu_script.py)
#
# Every setting is an environment variable (defaults below); ACDC=0 or LA=0 skips a protocol. Every process writes
# its own JSON and log under $OUT (resumable: rerun the script after a kill and finished pretrainings, curve runs and
# fine-tunings are skipped); FT_STEPS set by hand skips the rule (then say so beside the results).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-python}
DEVICE=${DEVICE:-cuda}
SIZE=${SIZE:-128}
PRE_STEPS=${PRE_STEPS:-3000}
SEEDS=${SEEDS:-"0 1 2 3 4 5 6 7 8 9"}
LABELED=${LABELED:-2}
CURVE_LABELED=${CURVE_LABELED:-"2 8"}
CURVE_STEPS=${CURVE_STEPS:-"250 500 1000 2000 4000"}
CURVE_EVERY=${CURVE_EVERY:-250}
FT_STEPS=${FT_STEPS:-}
METHODS=${METHODS:-"simclr global_local cluster_guided cluster_guided_gd"}
OUT=${OUT:-benchmarks/results/gpu}
TRAIN_DIR=${TRAIN_DIR:-}
EXTRA=${EXTRA:-}
ACDC=${ACDC:-1}
LA=${LA:-1}
LA_ARGS=${LA_ARGS:-}
SEMI=${SEMI:-none}
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
start=$(date +%s)

if [ "$ACDC" = "1" ]; then
  COMMON=(--dataset heart --image-size "$SIZE" --heart-crop 0.66 --device "$DEVICE" $AMP
          --work-dir "$OUT/acdc_work")
  if [ -n "$TRAIN_DIR" ]; then COMMON+=(--train-dir "$TRAIN_DIR"); fi
  # shellcheck disable=SC2206
  COMMON+=($EXTRA)
  echo "ACDC: learning curve and pretraining ($METHODS, $PRE_STEPS steps each) on $DEVICE"
  pids=()
  "$PY" benchmarks/label_efficiency.py "${COMMON[@]}" --learning-curve --methods random --seeds 0 \
      --curve-labeled $CURVE_LABELED --curve-steps $CURVE_STEPS --curve-every "$CURVE_EVERY" \
      --out "$OUT/acdc_curve.json" > "$OUT/logs/acdc_curve.log" 2>&1 &
  pids+=($!)
  for m in $METHODS; do
    "$PY" benchmarks/label_efficiency.py "${COMMON[@]}" --pretrain-only --methods "$m" --pretrain-steps "$PRE_STEPS" \
        --out "$OUT/acdc_pre_$m.json" > "$OUT/logs/acdc_pre_$m.log" 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || { echo "a curve or pretraining process failed; see $OUT/logs"; exit 1; }; done
  if [ -z "$FT_STEPS" ]; then
    FT_STEPS=$("$PY" benchmarks/label_efficiency.py --dataset heart --choose-steps "$OUT/acdc_curve.json")
    echo "fine-tuning steps by the pre-registered rule: $FT_STEPS"
  else
    echo "fine-tuning steps set by hand (not the pre-registered rule): $FT_STEPS"
  fi
  echo "$FT_STEPS" > "$OUT/acdc_finetune_steps.txt"
  echo "ACDC: curve and pretraining done at $(( $(date +%s) - start )) s; fine-tuning at $LABELED patients"
  pids=()
  for m in random $METHODS; do
    "$PY" benchmarks/label_efficiency.py "${COMMON[@]}" --methods "$m" --pretrain-steps "$PRE_STEPS" --seeds $SEEDS \
        --num-labeled $LABELED --finetune-steps $FT_STEPS --semi-supervised $SEMI \
        --out "$OUT/acdc_ft_$m.json" > "$OUT/logs/acdc_ft_$m.log" 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || { echo "a fine-tuning process failed; see $OUT/logs"; exit 1; }; done
  "$PY" benchmarks/label_efficiency.py "${COMMON[@]}" --methods random $METHODS --pretrain-steps "$PRE_STEPS" \
      --seeds $SEEDS --num-labeled $LABELED --finetune-steps $FT_STEPS --semi-supervised $SEMI \
      --report-only --merge "$OUT"/acdc_ft_*.json \
      --out "$OUT/acdc_label_efficiency_gpu.json" --plot "$OUT/acdc_paired.png" | tee "$OUT/acdc_label_efficiency_gpu.md"
  echo "ACDC done at $(( $(date +%s) - start )) s"
fi

if [ "$LA" = "1" ]; then
  echo "LA: la_3d.py on $DEVICE"
  # shellcheck disable=SC2086
  "$PY" benchmarks/la_3d.py --device "$DEVICE" ${LA_ARGS:---protocol gpu} --semi-supervised $SEMI --work-dir "$OUT/la_work" \
      --out "$OUT/la3d_gpu.json" --records "$OUT" --plot "$OUT/la3d_gpu_paired.png" 2>&1 | tee "$OUT/logs/la3d.log"
  echo "LA done at $(( $(date +%s) - start )) s"
fi
echo "total $(( $(date +%s) - start )) s; results in $OUT"
