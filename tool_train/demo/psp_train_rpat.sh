#!/bin/sh
# RP-PGD++ inside PIR-AT's recipe (docs/training.md) on the demo PSPNet-ResNet18: config/demo/demo_pspnet18_rpat.yaml
# sh tool_train/demo/psp_train_rpat.sh [SECTION.key value ...]   NPROC=N processes (default: all GPUs, else 1 CPU)
exec sh "$(dirname "$0")/../../util/launch.sh" tool_train/train.py config/demo/demo_pspnet18_rpat.yaml "$@"
