#!/bin/sh
# SEA's evaluation (protocol center, SEA at 4/255 and 8/255 with 300 steps per loss, our attacks, the worst case
# per eps) of the model tool_train/ade20k/upernet_train_rpat.sh wrote: config/ade20k/ade20k_upernet_convnext_t_rpat.yaml
# sh tool_test/ade20k/upernet_test_sea_rpat.sh [SECTION.key value ...]   TEST.model_path FILE evaluates SEA's published checkpoint instead
exec sh "$(dirname "$0")/../../util/launch.sh" tool_test/test.py config/ade20k/ade20k_upernet_convnext_t_rpat.yaml "$@"
