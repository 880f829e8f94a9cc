#!/bin/sh
# Evaluate the PSPNet-ResNet18 that tool_train/demo/psp_train.sh wrote (exp/demo/demo_pspnet18/model/last.pth).
# sh tool_test/demo/psp_test.sh [SECTION.key value ...]       NPROC=N for N processes
exec sh "$(dirname "$0")/../../util/launch.sh" tool_test/test.py config/demo/demo_pspnet18.yaml "$@"
