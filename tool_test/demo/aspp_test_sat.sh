#!/bin/sh
# Clean and robust evaluation (the ATTACK section of config/demo/demo_aspp18_sat.yaml) of the model
# tool_train/demo/aspp_train_sat.sh wrote (its run folder's model/last.pth; TEST.model_path to choose another).
# sh tool_test/demo/aspp_test_sat.sh [SECTION.key value ...]    NPROC=N processes (default: all GPUs, else 1 CPU)
exec sh "$(dirname "$0")/../../util/launch.sh" tool_test/test.py config/demo/demo_aspp18_sat.yaml "$@"
