#!/usr/bin/env bash
# The main job of monai_cluster, on the synthetic data the bundles generate (no real data needed):
#   1. cluster-guided contrastive pretraining on unlabeled images (autoencoder -> pseudo-classes -> contrastive)
#   2. dermoscopy lesion segmentation fine-tuned from those weights
#   3. evaluation of the fine-tuned network (Dice, HD95) and inference with overlay PNGs
# Extra arguments go to the fine-tuning run, e.g. `bash tutorials/run_chain.sh --label_fraction 0.1`.
# Outputs: bundles/cluster_contrastive_pretrain/{models,runs}, bundles/dermoscopy_segmentation/{models,runs,eval,outputs}
set -euo pipefail
cd "$(dirname "$0")/.."
P=bundles/cluster_contrastive_pretrain
S=bundles/dermoscopy_segmentation

python -m monai.bundle run --config_file "$P/configs/train.json" --meta_file "$P/configs/metadata.json" \
    --logging_file "$P/configs/logging.conf" --bundle_root "$P"
python -m monai.bundle run --config_file "$S/configs/train.json" --meta_file "$S/configs/metadata.json" \
    --logging_file "$S/configs/logging.conf" --bundle_root "$S" "$@"
python -m monai.bundle run --config_file "['$S/configs/train.json','$S/configs/evaluate.json']" \
    --meta_file "$S/configs/metadata.json" --logging_file "$S/configs/logging.conf" --bundle_root "$S" "$@"
python -m monai.bundle run --config_file "$S/configs/inference.json" --meta_file "$S/configs/metadata.json" \
    --logging_file "$S/configs/logging.conf" --bundle_root "$S"
echo "metrics: $S/eval/metrics.json   overlays: $S/outputs/overlays/   TensorBoard: tensorboard --logdir bundles"
