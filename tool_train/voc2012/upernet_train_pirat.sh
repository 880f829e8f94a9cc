#!/bin/sh
# PIR-AT (SEA's recipe, docs/training.md) of UperNet-ConvNeXt-T (conv stem; the -S twin: config/voc2012/voc2012_upernet_convnext_s_pirat.yaml) on voc2012 from the robust ImageNet backbone: config/voc2012/voc2012_upernet_convnext_t_pirat.yaml
# sh tool_train/voc2012/upernet_train_pirat.sh [SECTION.key value ...]   NPROC=N processes (default: all GPUs, else 1 CPU)
exec sh "$(dirname "$0")/../../util/launch.sh" tool_train/train.py config/voc2012/voc2012_upernet_convnext_t_pirat.yaml "$@"
