#!/bin/sh
# Adversarial training (RP-PGD++, docs/method.md §6) of PSPNet-ResNet50 on ADE20k: config/ade20k/ade20k_pspnet50_sat.yaml
# sh tool_train/ade20k/psp_train_sat.sh [SECTION.key value ...]   NPROC=N processes (default: all GPUs, else 1 CPU)
exec sh "$(dirname "$0")/../../util/launch.sh" tool_train/train.py config/ade20k/ade20k_pspnet50_sat.yaml "$@"
