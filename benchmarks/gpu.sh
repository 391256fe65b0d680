#!/usr/bin/env bash
# GPU checks in one short go (under 10 minutes on one GPU): training speed with AMP for 2D slices and 3D volumes (engine
# overhead, images/s, peak GPU memory at three sizes), GPU utilization and memory sampled during the runs, a short
# bundle training, the inference breakdown on the demo data, and distributed inference (multi_gpu_inference.json under
# torch.distributed.run, one process per GPU) on an archive of demo volumes: steady volumes/s and start-up time, then
# training seconds per epoch against scans and image size. Prints Markdown tables to paste into benchmarks/README.md.
# Usage, from the repository root in an installed environment with a CUDA build of torch:  bash benchmarks/gpu.sh
set -euo pipefail
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
util_log=$(mktemp)
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits -lms 500 > "$util_log" &
sampler=$!
trap 'kill $sampler 2>/dev/null || true' EXIT
python benchmarks/train_speed.py --device cuda --amp --batch 128 --iterations 50 --sizes 64,128,256 --only overhead,scaling
python benchmarks/train_speed.py --device cuda --amp --batch 16 --iterations 30 --sizes 32,64,96 --spatial_dims 3 --only overhead,scaling
python -m monai.bundle run training --config_file bundles/bigan/train.json --bundle_root /tmp/bigan_gpu \
  --dataset_dir bundles/bigan/data/demo --max_epochs 3 --device cuda:0 --resume false
python benchmarks/train_speed.py --device cuda --amp --only loader
python benchmarks/inference_speed.py --device cuda --num_volumes 12 --sw_batch_size 256 \
  --bundle_root /tmp/bigan_gpu --dataset_dir bundles/bigan/data/demo
gpus=$(nvidia-smi --query-gpu=name --format=csv,noheader | wc -l)
python benchmarks/archive_scaling.py --bundle_root /tmp/bigan_gpu --dataset_dir bundles/bigan/data/demo \
  --only processes,size,training --processes "$(seq -s, 1 "$gpus")" --volumes 24 --scans 12,48 --image_sizes 64,128
kill $sampler 2>/dev/null || true
awk -F', ' '{u+=$1; m=($2>m?$2:m); n++} END {printf "\nGPU utilization while benchmarking: mean %.0f %% over %d samples, max memory used %d MiB\n", u/n, n, m}' "$util_log"
