#!/bin/sh
# SEA's evaluation (protocol center, SEA at 4/255 beside our attacks) of the model
# tool_train/voc2012/psp_train_pirat.sh wrote: config/voc2012/voc2012_pspnet50_pirat.yaml
# sh tool_test/voc2012/psp_test_pirat.sh [SECTION.key value ...]   NPROC=N processes (default: all GPUs, else 1 CPU)
exec sh "$(dirname "$0")/../../util/launch.sh" tool_test/test.py config/voc2012/voc2012_pspnet50_pirat.yaml "$@"
