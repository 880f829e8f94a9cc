#!/bin/sh
# SEA's evaluation (protocol center, SEA beside our attacks) of the model tool_train/demo/psp_train_pirat.sh wrote:
# config/demo/demo_pspnet18_pirat.yaml
# sh tool_test/demo/psp_test_pirat.sh [SECTION.key value ...]   NPROC=N processes (default: all GPUs, else 1 CPU)
exec sh "$(dirname "$0")/../../util/launch.sh" tool_test/test.py config/demo/demo_pspnet18_pirat.yaml "$@"
