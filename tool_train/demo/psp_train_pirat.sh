#!/bin/sh
# PIR-AT's recipe (docs/training.md) on the demo PSPNet-ResNet18, every image attacked by SEA's training PGD:
# config/demo/demo_pspnet18_pirat.yaml
# sh tool_train/demo/psp_train_pirat.sh [SECTION.key value ...]   NPROC=N processes (default: all GPUs, else 1 CPU)
exec sh "$(dirname "$0")/../../util/launch.sh" tool_train/train.py config/demo/demo_pspnet18_pirat.yaml "$@"
