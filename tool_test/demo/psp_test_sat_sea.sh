#!/bin/sh
# SEA under its centre-crop protocol (config/demo/demo_pspnet18_sat_sea.yaml) on the model
# tool_train/demo/psp_train_sat.sh wrote; make demo runs it after psp_test_sat.sh.
# sh tool_test/demo/psp_test_sat_sea.sh [SECTION.key value ...]    NPROC=N processes (default: all GPUs, else 1 CPU)
exec sh "$(dirname "$0")/../../util/launch.sh" tool_test/test.py config/demo/demo_pspnet18_sat_sea.yaml "$@"
