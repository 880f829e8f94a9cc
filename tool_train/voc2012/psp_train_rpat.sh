#!/bin/sh
# RP-PGD++ inside PIR-AT (docs/training.md) of PSPNet-ResNet50 on Pascal VOC 2012 + SBD from the robust ImageNet
# ResNet-50: config/voc2012/voc2012_pspnet50_rpat.yaml
# sh tool_train/voc2012/psp_train_rpat.sh [SECTION.key value ...]   NPROC=N processes (default: all GPUs, else 1 CPU)
exec sh "$(dirname "$0")/../../util/launch.sh" tool_train/train.py config/voc2012/voc2012_pspnet50_rpat.yaml "$@"
