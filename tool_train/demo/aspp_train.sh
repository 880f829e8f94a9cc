#!/bin/sh
# Clean training of DeepLabv3-ResNet18 on the generated demo dataset (created on first use).
# sh tool_train/demo/aspp_train.sh [SECTION.key value ...]    NPROC=N for N processes
exec sh "$(dirname "$0")/../../util/launch.sh" tool_train/train.py config/demo/demo_aspp18.yaml "$@"
