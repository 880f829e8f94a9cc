#!/bin/sh
# Clean and robust evaluation (the ATTACK section of config/voc2012/voc2012_pspnet50_sat.yaml) of the model
# tool_train/voc2012/psp_train_sat.sh wrote (its run folder's model/last.pth; TEST.model_path to choose another).
# sh tool_test/voc2012/psp_test_sat.sh [SECTION.key value ...]    NPROC=N processes (default: all GPUs, else 1 CPU)
exec sh "$(dirname "$0")/../../util/launch.sh" tool_test/test.py config/voc2012/voc2012_pspnet50_sat.yaml "$@"
