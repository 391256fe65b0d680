#!/usr/bin/env bash
# GPU checks in one short go (about 5 minutes on one GPU): training speed with AMP (2D sizes), a 3D step, and the
# inference breakdown on the demo data. Prints Markdown tables to paste into benchmarks/README.md.
# Usage, from the repository root in an installed environment with a CUDA build of torch:  bash benchmarks/gpu.sh
set -euo pipefail
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python benchmarks/train_speed.py --device cuda --amp --batch 128 --iterations 50 --sizes 64,128,256
python -m monai.bundle run training --config_file bundles/bigan/train.json --bundle_root /tmp/bigan_gpu \
  --dataset_dir bundles/bigan/data/demo --max_epochs 3 --device cuda:0
python benchmarks/inference_speed.py --device cuda --num_volumes 12 --sw_batch_size 256 \
  --bundle_root /tmp/bigan_gpu --dataset_dir bundles/bigan/data/demo
