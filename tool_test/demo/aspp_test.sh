#!/bin/sh
# Evaluate the DeepLabv3-ResNet18 that tool_train/demo/aspp_train.sh wrote.
# sh tool_test/demo/aspp_test.sh [SECTION.key value ...]      NPROC=N for N processes
exec sh "$(dirname "$0")/../../util/launch.sh" tool_test/test.py config/demo/demo_aspp18.yaml "$@"
