#!/usr/bin/env bash
# GPU check for a lent CUDA machine (bare image with PyTorch; nothing can be downloaded there).
#
# Needs the wheels the image lacks in .whl/ (kornia, kornia_rs, segmentation_models_pytorch, SimpleITK, pydantic,
# pydantic_core, annotated_types, typing_inspection; see docs/performance.md). Runs, each under a time limit:
#   1. the device-parametrised unit tests (augmentation, translators, segmenters, slices, training) on CUDA;
#   2. README's main job, `daseg run examples/prostate_mr2ct.toml`, on the GPU (device "auto");
#   3. benchmarks/cyclegan_quality.py for many more updates than a CPU affords.
# Logs and the run's report land in $OUT (or /tmp/gpu_check).
set -u -o pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site
python3 -m pip install -q --no-index --no-deps --no-build-isolation \
    -e . -e plugins/prostate_mr2ct -e plugins/cardiac_mr2ct >/dev/null || exit 1
nvidia-smi -L
python3 -c "import torch, da_seg; print('torch', torch.__version__, torch.cuda.get_device_name(), 'cpus', __import__('os').cpu_count())"

echo "== 1. unit tests on CUDA"
timeout "${TESTS_S:-150}" python3 -m pytest -q -p no:cacheprovider tests/test_augment.py tests/translators \
    tests/segmenters tests/test_segmentation.py tests/test_slices.py tests/test_training.py 2>&1 | tee "$OUT/tests.log" | tail -12

echo "== 2. main example on the GPU"
start=$(date +%s)
timeout "${RUN_S:-240}" python3 -m da_seg run examples/prostate_mr2ct.toml --set 'output="/tmp/gpu_runs"' 2>&1 \
    | tee "$OUT/run.log" | tail -25
echo "main example: $(( $(date +%s) - start )) s"
cp /tmp/gpu_runs/prostate_mr2ct/report.md /tmp/gpu_runs/prostate_mr2ct/timings.json "$OUT/" 2>/dev/null

echo "== 3. CycleGAN fidelity, long training"
timeout "${QUALITY_S:-150}" python3 benchmarks/cyclegan_quality.py --device cuda --precision bf16 --threads 4 \
    ${QUALITY_ARGS:---subjects 3 --batch-size 2 --epochs 20 --iterations 500} --out /tmp/cq 2>&1 \
    | tee "$OUT/cyclegan_quality.log" | tail -20
cp /tmp/cq/work/samples/epoch_0020.png "$OUT/cyclegan_samples.png" 2>/dev/null
exit 0
