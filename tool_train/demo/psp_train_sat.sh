#!/bin/sh
# Adversarial training (RP-PGD++, docs/method.md §6) of PSPNet-ResNet18 on the generated demo dataset: config/demo/demo_pspnet18_sat.yaml
# sh tool_train/demo/psp_train_sat.sh [SECTION.key value ...]   NPROC=N processes (default: all GPUs, else 1 CPU)
exec sh "$(dirname "$0")/../../util/launch.sh" tool_train/train.py config/demo/demo_pspnet18_sat.yaml "$@"
