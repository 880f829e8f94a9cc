#!/bin/sh
# PIR-AT (SEA's configs/voc_pspnet_cais.yaml, docs/training.md) of PSPNet-ResNet50 on Pascal VOC 2012 + SBD from the
# robust ImageNet ResNet-50: config/voc2012/voc2012_pspnet50_pirat.yaml
# sh tool_train/voc2012/psp_train_pirat.sh [SECTION.key value ...]   NPROC=N processes (default: all GPUs, else 1 CPU)
exec sh "$(dirname "$0")/../../util/launch.sh" tool_train/train.py config/voc2012/voc2012_pspnet50_pirat.yaml "$@"
