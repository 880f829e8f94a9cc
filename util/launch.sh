#!/bin/sh
# The one launcher behind every tool_*/<dataset>/*.sh: torchrun with NPROC processes.
#   sh util/launch.sh SCRIPT CONFIG [SECTION.key value ...]
# NPROC: number of processes (default: the visible GPUs, else 1 CPU process). One process runs the script
# directly: the same code (util/distributed.py sees a world of 1 either way), and a bad input ends with its
# one-line message and exit code 2 instead of torchrun's ChildFailedError traceback.
# PYTHON: the interpreter (default: .venv/bin/python when it exists, else python3).
set -eu
cd "$(dirname "$0")/.."
script=$1
config=$2
shift 2
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
if [ -z "${NPROC:-}" ]; then
    NPROC=$("$PYTHON" -c "import torch; print(max(torch.cuda.device_count(), 1))")
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ "$NPROC" = 1 ]; then
    exec "$PYTHON" "$script" --config "$config" "$@"
fi
exec "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node="$NPROC" "$script" --config "$config" "$@"
