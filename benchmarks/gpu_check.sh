#!/usr/bin/env bash
# GPU check for a lent CUDA machine (bare image with PyTorch; nothing can be downloaded there).
#
# Needs the wheels the image lacks in .whl/ (kornia, kornia_rs, segmentation_models_pytorch, SimpleITK, pydantic,
# pydantic_core, annotated_types, typing_inspection; docs/performance.md says how to fetch them). STAGES picks what
# runs (default all), each under its own time limit:
#   tests    the whole test suite, whose device-parametrised tests then run on CUDA;
#   run      README's main job, `daseg run examples/prostate_mr2ct.toml`, on the GPU (device "auto");
#   quality  benchmarks/cyclegan_quality.py on the GPU (QUALITY_ARGS);
#   speed    benchmarks/cyclegan_speed.py and benchmarks/segmenter_speed.py on the GPU;
#   overhead benchmarks/host_overhead.py on the GPU: host ms and aten ops per iteration at width 1, and the steady
#            state eager vs runtime.compile (whole step, CUDA graphs).
# Logs and the run's report land in $OUT (or /tmp/gpu_check).
set -u -o pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_check}
STAGES=${STAGES:-tests run quality speed overhead}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site
python3 -m pip install -q --no-index --no-deps --no-build-isolation \
    -e . -e plugins/prostate_mr2ct -e plugins/cardiac_mr2ct >/dev/null || exit 1
nvidia-smi -L
python3 -c "import torch, da_seg; print('torch', torch.__version__, torch.cuda.get_device_name(), 'cpus', __import__('os').cpu_count())"

if [[ " $STAGES " == *" tests "* ]]; then
    echo "== tests (CUDA where a test takes the device fixture)"
    timeout "${TESTS_S:-240}" python3 -m pytest -q -p no:cacheprovider -x 2>&1 | tee "$OUT/tests.log" | tail -12
fi
if [[ " $STAGES " == *" run "* ]]; then
    echo "== main example on the GPU"
    start=$(date +%s)
    timeout "${RUN_S:-240}" python3 -m da_seg run examples/prostate_mr2ct.toml --set 'output="/tmp/gpu_runs"' 2>&1 \
        | tee "$OUT/run.log" | tail -25
    echo "main example: $(( $(date +%s) - start )) s"
    cp /tmp/gpu_runs/prostate_mr2ct/report.md /tmp/gpu_runs/prostate_mr2ct/timings.json "$OUT/" 2>/dev/null
fi
if [[ " $STAGES " == *" quality "* ]]; then
    echo "== CycleGAN fidelity"
    timeout "${QUALITY_S:-150}" python3 benchmarks/cyclegan_quality.py --device cuda --precision bf16 --threads 4 \
        ${QUALITY_ARGS:---subjects 3 --batch-size 2 --epochs 30 --iterations 100} --out /tmp/cq 2>&1 \
        | tee "$OUT/cyclegan_quality.log" | tail -20
fi
if [[ " $STAGES " == *" speed "* ]]; then
    echo "== speed"
    timeout "${SPEED_S:-150}" python3 benchmarks/cyclegan_speed.py --device cuda --iterations 20 2>&1 \
        | tee "$OUT/cyclegan_speed.log" | tail -20
    timeout "${SPEED_S:-150}" python3 benchmarks/segmenter_speed.py --device cuda --batch 16 --no-write \
        --cyclegan-batch 1 4 2>&1 | tee "$OUT/segmenter_speed.log" | tail -30
fi
if [[ " $STAGES " == *" overhead "* ]]; then
    echo "== host overhead per iteration (width 1)"
    timeout "${OVERHEAD_S:-300}" python3 benchmarks/host_overhead.py --device cuda --iterations 50 --threads auto \
        --compile 2>&1 | grep -v USDT | tee "$OUT/host_overhead.log" | tail -16
fi
exit 0
