#!/usr/bin/env bash
# Detection quality of the default recipe on the demo data: 3 seeds, each trained with the default training command
# and evaluated with the evaluation bundle (BiGAN beside the z-score and PCA baselines), then aggregated.
# Usage (from the repository root, inside the installed environment): bash benchmarks/quality.sh [RUNS_DIR] [extra overrides...]
set -euo pipefail
runs=${1:-/tmp/bigan_quality}
shift || true
for seed in 0 1 2; do
  root="$runs/seed$seed"
  python -m monai.bundle run training --config_file bundles/bigan/train.json --bundle_root "$root" \
    --dataset_dir bundles/bigan/data/demo --seed "$seed" "$@"
  python -m monai.bundle run evaluating --config_file "['bundles/bigan/inference.json','bundles/bigan/evaluate.json']" --bundle_root "$root" \
    --dataset_dir bundles/bigan/data/demo --output_dir "$root/evaluation" "$@"
done
python benchmarks/aggregate_metrics.py "$runs"/seed*/evaluation/metrics.json
