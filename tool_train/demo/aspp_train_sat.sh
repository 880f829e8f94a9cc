#!/bin/sh
# Adversarial training (RP-PGD++, docs/method.md §6) of DeepLabv3 (ASPP)-ResNet18 on the generated demo dataset: config/demo/demo_aspp18_sat.yaml
# sh tool_train/demo/aspp_train_sat.sh [SECTION.key value ...]   NPROC=N processes (default: all GPUs, else 1 CPU)
exec sh "$(dirname "$0")/../../util/launch.sh" tool_train/train.py config/demo/demo_aspp18_sat.yaml "$@"
