#!/bin/sh
# PIR-AT (SEA's recipe, docs/training.md) of Segmenter ViT-S on ade20k from the robust ImageNet backbone: config/ade20k/ade20k_segmenter_vit_s_pirat.yaml
# sh tool_train/ade20k/segmenter_train_pirat.sh [SECTION.key value ...]   NPROC=N processes (default: all GPUs, else 1 CPU)
exec sh "$(dirname "$0")/../../util/launch.sh" tool_train/train.py config/ade20k/ade20k_segmenter_vit_s_pirat.yaml "$@"
