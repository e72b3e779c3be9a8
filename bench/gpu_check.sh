#!/usr/bin/env bash
# What jackpot does on a GPU, in a few minutes: a short lottery, RigL, pruning at init, SparseLinear
# training, export (CLI, and measured on the device), a 2-process DDP run, the masked-step overhead
# and the sparse benchmarks (shortened), and the host-sync checks; one table at the end.
#
#   bench/gpu_check.sh          # CUDA when torch sees it, else the CPU-possible parts, tiny (~3 min)
#   bench/gpu_check.sh --cpu    # force the CPU mode
#
# Every run writes to a temporary store; nothing under ./runs is touched. Any crash: the step is
# FAIL, its log's tail goes to stderr and the script exits 1. PYTHON overrides the interpreter
# (default .venv/bin/python, else python3). KEEP=1 keeps the temporary folder.
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-}
if [ -z "$PY" ]; then
    if [ -x .venv/bin/python ]; then PY=$ROOT/.venv/bin/python; else PY=python3; fi
fi
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

MODE=auto
[ "${1:-}" = "--cpu" ] && MODE=cpu
if [ "$MODE" = auto ] && "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    DEV=cuda
else
    DEV=cpu
fi
GPUS=$("$PY" -c 'import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)' 2>/dev/null || echo 0)
if [ "$DEV" = cuda ]; then
    DUR=2ep; TINY=""; WIDTH=""; STEP_LIMIT=300
    # NCCL refuses two ranks on one GPU: with one GPU the DDP run is the gloo one on the CPU
    if [ "$GPUS" -ge 2 ]; then DDPDEV=cuda; else DDPDEV=cpu; fi
else
    DUR=1ep; TINY="--tiny"; WIDTH="--width 512"; STEP_LIMIT=240; DDPDEV=cpu
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/jackpot-gpu-check.XXXXXX")
STORE=$WORK/store
mkdir -p "$WORK/logs"
ROWS=()
FAILED=()
JACKPOT=("$PY" -m jackpot.cli)
COMMON=(--threads 1 --store "$STORE")

step() {  # step NAME DEVICE COMMAND...: run with a time limit, log, one table row
    local name=$1 dev=$2 status
    shift 2
    local log=$WORK/logs/$name.log t0=$EPOCHREALTIME
    if timeout "$STEP_LIMIT" "$@" >"$log" 2>&1; then status=ok; else status="FAIL (exit $?)"; FAILED+=("$name"); fi
    local secs
    secs=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
    ROWS+=("$(printf '%-18s %-6s %8s  %s' "$name" "$dev" "$secs" "$status")")
    echo "gpu_check: $name on $dev: $status (${secs}s)" >&2
}

skip() {  # skip NAME DEVICE WHY
    ROWS+=("$(printf '%-18s %-6s %8s  %s' "$1" "$2" "-" "skip: $3")")
}

echo "gpu_check: mode $DEV ($GPUS GPU(s) visible), store $STORE" >&2
step lottery "$DEV" "${JACKPOT[@]}" lottery --dataset mnist1d --model mnist1d-mlp --fraction 0.5 --levels 1 \
    --duration "$DUR" --device "$DEV" "${COMMON[@]}"
step rigl "$DEV" "${JACKPOT[@]}" sparse --dataset mnist1d --model mnist1d-mlp --method rigl --density 0.1 \
    --delta-t 25 --duration "$DUR" --device "$DEV" "${COMMON[@]}"
for prec in bf16 fp16; do  # autocast (and fp16's grad scaler) with RigL reading gradients
    step "rigl-$prec" "$DEV" "${JACKPOT[@]}" sparse --dataset mnist1d --model mnist1d-mlp --method rigl --density 0.1 \
        --delta-t 25 --duration "$DUR" --precision "$prec" --device "$DEV" "${COMMON[@]}"
done
# the deterministic default: the same run twice in two stores ends in the same bits
for s in a b; do
    step "determinism-$s" "$DEV" "${JACKPOT[@]}" sparse --dataset mnist1d --model mnist1d-mlp --method rigl \
        --density 0.1 --delta-t 25 --duration "$DUR" --device "$DEV" --threads 1 --store "$STORE/det-$s" --quiet
done
step determinism "$DEV" "$PY" -c "import glob, sys, torch
a, b = (torch.load(glob.glob('$STORE/det-' + s + '/sparse-*/train/final.pt')[0], weights_only=True) for s in 'ab')
bad = [k for k in a if not torch.equal(a[k], b[k])]
print('bit-identical' if not bad else 'differ: ' + ', '.join(bad)); sys.exit(1 if bad else 0)"
step pai-synflow "$DEV" "${JACKPOT[@]}" pai --dataset mnist1d --model mnist1d-mlp --score synflow --rounds 10 \
    --density 0.05 --duration "$DUR" --device "$DEV" "${COMMON[@]}"
step sparse-linear "$DEV" "$PY" bench/gpu_check.py sparse-linear "$DEV" $TINY
RUN=$(ls -d "$STORE"/lottery-* 2>/dev/null | head -n 1)
if [ -n "$RUN" ]; then
    step export-cli "$DEV" "${JACKPOT[@]}" export "$(basename "$RUN")" -o "$WORK/model.pt" --device "$DEV" "${COMMON[@]}"
else
    ROWS+=("$(printf '%-18s %-6s %8s  %s' export-cli cpu - "FAIL (no lottery run to export)")"); FAILED+=(export-cli)
fi
step export-device "$DEV" "$PY" bench/gpu_check.py export "$DEV" $TINY
step bench-cli cpu "${JACKPOT[@]}" bench --model lenet-300-100 --density 0.02 --rounds 2 --threads 1
step ddp-2proc "$DDPDEV" "$PY" -m torch.distributed.run --standalone --nproc_per_node=2 -m jackpot.cli sparse \
    --dataset mnist1d --model mnist1d-mlp --method rigl --density 0.1 --delta-t 25 --duration 1ep \
    --device "$DDPDEV" --threads 1 --store "$STORE/ddp"
if [ "$DEV" = cuda ]; then
    step host-syncs cuda "$PY" bench/gpu_check.py syncs cuda
else
    skip host-syncs cpu "needs torch.cuda.set_sync_debug_mode (CPU counts: tests/test_devices.py)"
fi
step masked-overhead "$DEV" bash -c "cd bench && '$PY' masking_overhead.py --quick --device $DEV"
step sparse-speed "$DEV" bash -c "cd bench && '$PY' sparse_speed.py --quick --device $DEV $WIDTH"

echo
printf '%-18s %-6s %8s  %s\n' name device seconds result
printf '%s\n' "${ROWS[@]}"
echo "torch $("$PY" -c 'import torch; print(torch.__version__)'), $("$PY" -c 'import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA")'); logs: $WORK/logs (kept on failure or with KEEP=1)"
if [ ${#FAILED[@]} -gt 0 ]; then
    for name in "${FAILED[@]}"; do
        echo "===== $name: last lines of $WORK/logs/$name.log =====" >&2
        tail -n 30 "$WORK/logs/$name.log" >&2 2>/dev/null
    done
    echo "gpu_check: FAILED: ${FAILED[*]}" >&2
    exit 1
fi
[ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"
echo "gpu_check: all ok"
