#!/bin/sh
# The GPU measurement of the issue "Speed and memory at the floor": PSPNet-ResNet50 at the VOC crop (473, batch 8),
# the floor, a PGD and an RP-PGD++ step, clean and AT training steps and one robustly evaluated image, in fp32, bf16
# and with channels_last; images per second and peak memory in exp/bench/gpu_<variant>.json and on stdout.
# sh tool_bench/gpu_voc.sh          (about 5 minutes on one recent GPU; dry-run on a CPU: BENCH_DRY=1, tiny sizes)
set -eu
cd "$(dirname "$0")/.."
PY="${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}"
if [ "${BENCH_DRY:-0}" = 1 ]; then
    sizes="--batch 2 --size 65 --train-batch 2 --train-size 65 --eval-size 97x97 --repeats 1 MODEL.layers 18"
    sizes="$sizes TEST.crop_size 65"
else
    sizes="--batch 8 --size 473 --train-batch 8 --train-size 473 --eval-size 512x512 --repeats 10"
fi
mkdir -p exp/bench
for variant in fp32 bf16 channels_last; do
    case $variant in
        fp32) extra="";;
        bf16) extra="--amp bf16";;
        channels_last) extra="--channels-last";;
    esac
    # shellcheck disable=SC2086
    "$PY" tool_bench/bench.py --config config/voc2012/voc2012_pspnet50_sat.yaml --attacks pgd,rppgd++ \
        --loader-batches 0 $extra --out "exp/bench/gpu_$variant.json" $sizes
done
