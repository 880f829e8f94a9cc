#!/bin/sh
# The GPU measurement at the VOC crop (473, batch 8): PSPNet-ResNet50 (the issue "Speed and memory at the floor") and
# UperNet-ConvNeXt-T with the conv stem (PIR-AT's network) beside it. Per network the floor, attack steps, clean and
# AT training steps and one robustly evaluated image, in fp32, bf16 and with channels_last; images per second and
# peak memory in exp/bench/gpu_<network>_<variant>.json and on stdout.
# sh tool_bench/gpu_voc.sh          (about 10 minutes on one recent GPU; dry-run on a CPU: BENCH_DRY=1, tiny sizes
#                                    and tiny networks)
set -eu
cd "$(dirname "$0")/.."
PY="${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}"
if [ "${BENCH_DRY:-0}" = 1 ]; then
    sizes="--batch 2 --size 65 --train-batch 2 --train-size 65 --eval-size 97x97 --repeats 1 TEST.crop_size 65"
    tiny_pspnet="MODEL.layers 18"
    tiny_upernet="MODEL.widths [16,32,48,64] MODEL.depths [1,1,2,1] MODEL.head_channels 32"
else
    sizes="--batch 8 --size 473 --train-batch 8 --train-size 473 --eval-size 512x512 --repeats 10"
    tiny_pspnet="" tiny_upernet=""
fi
mkdir -p exp/bench
for network in pspnet50 upernet_convnext_t; do
    case $network in
        pspnet50) config=config/voc2012/voc2012_pspnet50_sat.yaml attacks=pgd,rppgd++ tiny=$tiny_pspnet;;
        upernet_convnext_t) config=config/voc2012/voc2012_upernet_convnext_t_pirat.yaml
                            attacks=pgd,pirat-pgd,rppgd++,apgd-ce,padam-ce tiny=$tiny_upernet;;
    esac
    for variant in fp32 bf16 channels_last; do
        case $variant in
            fp32) extra="";;
            bf16) extra="--amp bf16";;
            channels_last) extra="--channels-last";;
        esac
        # shellcheck disable=SC2086
        "$PY" tool_bench/bench.py --config "$config" --attacks "$attacks" --loader-batches 0 $extra \
            --out "exp/bench/gpu_${network}_$variant.json" $sizes $tiny
    done
done
