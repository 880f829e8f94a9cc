#!/bin/sh
# Adversarial training (RP-PGD++, docs/method.md §6) of PSPNet-ResNet50 on Pascal VOC 2012 + SBD: config/voc2012/voc2012_pspnet50_sat.yaml
# sh tool_train/voc2012/psp_train_sat.sh [SECTION.key value ...]   NPROC=N processes (default: all GPUs, else 1 CPU)
exec sh "$(dirname "$0")/../../util/launch.sh" tool_train/train.py config/voc2012/voc2012_pspnet50_sat.yaml "$@"
