#!/bin/sh
# The one launcher behind every tool_*/<dataset>/*.sh: torchrun with NPROC processes.
#   sh util/launch.sh SCRIPT CONFIG [SECTION.key value ...]
# NPROC: processes per machine (default: the visible GPUs, else 1 CPU process). One process on one machine runs
# the script directly: the same code (util/distributed.py sees a world of 1 either way), and a bad input ends with
# its one-line message and exit code 2 instead of torchrun's ChildFailedError traceback.
# NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT: one run over several machines. Start the same command on every
# machine with NNODES (machines), its own NODE_RANK (0 .. NNODES-1), and MASTER_ADDR/MASTER_PORT of machine 0
# (default port 29500); torchrun's static rendezvous then numbers the processes node by node. Without NNODES
# (or with NNODES=1 and no MASTER_ADDR) the run stays on this machine (torchrun --standalone).
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
NNODES=${NNODES:-1}
if [ "$NNODES" = 1 ] && [ -z "${MASTER_ADDR:-}" ]; then
    if [ "$NPROC" = 1 ]; then
        exec "$PYTHON" "$script" --config "$config" "$@"
    fi
    set -- --standalone --nproc_per_node="$NPROC" "$script" --config "$config" "$@"
else
    if [ -z "${NODE_RANK:-}" ] || [ -z "${MASTER_ADDR:-}" ]; then
        echo "error: a run over NNODES=$NNODES machines needs NODE_RANK (this machine, 0 .. $((NNODES - 1))) and" \
            "MASTER_ADDR (machine 0's address)" >&2
        exit 2
    fi
    set -- --nnodes="$NNODES" --node_rank="$NODE_RANK" --nproc_per_node="$NPROC" --master_addr="$MASTER_ADDR" \
        --master_port="${MASTER_PORT:-29500}" "$script" --config "$config" "$@"
fi
# torchrun reports any failing worker as exit code 1, so the workers leave their own exit code (util/errors.py:
# 2 bad input, 3 non-finite loss, 4 write failed, 75 stopped on request) in LAUNCH_EXIT_FILE and this launcher
# exits with it. SIGTERM and SIGUSR1 go to the workers, which checkpoint and stop (torchrun would die on SIGUSR1).
LAUNCH_EXIT_FILE=$(mktemp)
export LAUNCH_EXIT_FILE
trap 'rm -f "$LAUNCH_EXIT_FILE"' EXIT
"$PYTHON" -m torch.distributed.run "$@" &
child=$!
trap 'pkill -TERM -P "$child"' TERM
trap 'pkill -USR1 -P "$child"' USR1
while :; do
    rc=0
    wait "$child" || rc=$?
    kill -0 "$child" 2>/dev/null || break  # wait returned for a trapped signal: torchrun is still running
done
if [ "$rc" != 0 ] && [ -s "$LAUNCH_EXIT_FILE" ]; then
    rc=$(cat "$LAUNCH_EXIT_FILE")
fi
exit "$rc"
