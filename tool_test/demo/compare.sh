#!/bin/sh
# Clean training vs adversarial training with RP-PGD++ vs with PGD on the demo dataset: trains each PSPNet-R18
# that is missing or unfinished (TRAIN.resume auto), evaluates all three under the same attacks
# (config/demo/demo_pspnet18.yaml, ATTACK) and writes exp/demo/compare.md and exp/demo/compare.json.
# sh tool_test/demo/compare.sh          (about 35 minutes on 2 CPU cores when nothing is trained yet)
set -eu
cd "$(dirname "$0")/../.."
for cfg in demo_pspnet18 demo_pspnet18_sat demo_pspnet18_pgdat; do
    sh util/launch.sh tool_train/train.py "config/demo/$cfg.yaml" TRAIN.resume auto
    sh util/launch.sh tool_test/test.py "config/demo/$cfg.yaml" TEST.run_name compare
done
"${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}" tool_test/compare.py \
    --out exp/demo/compare --result compare \
    "clean=exp/demo/demo_pspnet18" "RP-PGD++-AT=exp/demo/demo_pspnet18_sat" "PGD-AT=exp/demo/demo_pspnet18_pgdat"
