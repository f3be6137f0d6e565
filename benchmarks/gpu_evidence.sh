#!/usr/bin/env bash
# One-shot GPU evidence on one H100/H200, in at most 9 minutes (setup 45 s, stage limits 480 s, report 15 s):
#   setup        install wheels carried in .whl/ (diffusers and what it needs) into /tmp/site
#   env          nvidia-smi, torch / triton / CUDA versions, which attention backends run and why not
#   kernels_*    bf16, H 12, D 128, N 32,760 and 75,600, densities 5% to 100%: triton, triton-tma, flex, flex-flash and
#                auto against dense SDPA, SDPA forced to FlashAttention and to cuDNN (one stage per N)
#   transformer  Wan2.1-1.3B, random weights, 480p x 81 frames, 4 steps: dense vs radial, sparse_vdit
#                (its default patterns) and adaspa (searching at the first step, reusing after)
#   tests        the GPU-only tests (pytest -m gpu tests/kernels)
# Every stage has its own time limit; a failed or timed-out stage is recorded and the next one runs.
# Writes benchmarks/results/<yyyy-mm-dd>-<gpu>.json (everything merged) and .md (summary), copied to $OUT
# when that is set.
#
# usage: bash benchmarks/gpu_evidence.sh [--dry-run] [--out-dir DIR]
#   --dry-run   the same stages on the CPU at tiny sizes (seconds); results go to a temporary folder
#   --out-dir   where the two result files go (default: benchmarks/results, or a temporary folder with --dry-run)
# PYTHON picks the interpreter (default python3).
set -u

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1
PY="${PYTHON:-python3}"
MODE=gpu
OUT_DIR=""
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) MODE=dry-run ;;
        --out-dir) OUT_DIR="$2"; shift ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "gpu_evidence.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu_evidence.XXXXXX")"
if [ -z "$OUT_DIR" ]; then
    if [ "$MODE" = gpu ]; then OUT_DIR="$ROOT/benchmarks/results"; else OUT_DIR="$WORK/results"; fi
fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1

# seconds since START_NS (from `date +%s%N`), with milliseconds
seconds_since() {
    local ms=$((($(date +%s%N) - $1) / 1000000))
    printf '%d.%03d' $((ms / 1000)) $((ms % 1000))
}

# run_stage NAME LIMIT_SECONDS RESULT_FILE COMMAND...: output to the console and NAME.log, one line in stages.tsv
run_stage() {
    local name="$1" limit="$2" result="$3"
    shift 3
    echo "=== $name (limit ${limit}s) ==="
    local start
    start=$(date +%s%N)
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$WORK/$name.log"
    local rc=${PIPESTATUS[0]}
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$rc" "$(seconds_since "$start")" "$limit" "$result" >>"$WORK/stages.tsv"
    echo "=== $name: exit $rc ==="
}

# --- setup: carried wheels (the GPU machine has torch, triton and torchmetrics, not diffusers), then the repo
setup_status=skipped
setup_start=$(date +%s%N)
if [ "$MODE" = gpu ] && compgen -G ".whl/*.whl" >/dev/null; then
    if timeout 45 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl; then
        setup_status=ok
    else
        setup_status=failed
    fi
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
# The repository itself by path: `pip install -e .` would need the network for its build backend.
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
printf '{"status": "%s", "wheels": %s, "seconds": %s, "pythonpath": "%s"}\n' "$setup_status" \
    "$(compgen -G ".whl/*.whl" | wc -l)" "$(seconds_since "$setup_start")" "$PYTHONPATH" >"$WORK/setup.json"
echo "setup: $setup_status; work folder $WORK"
command -v nvidia-smi >/dev/null && nvidia-smi
"$PY" -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"

BENCH=("$PY" -m dit_sparse.cli.main bench)
if [ "$MODE" = gpu ]; then
    run_stage env 30 env.json "$PY" -m dit_sparse.bench.gpu_evidence env --device cuda --out "$WORK/env.json"
    for N in 32760 75600; do
        limit=$([ "$N" = 32760 ] && echo 100 || echo 110)
        run_stage "kernels_n$N" "$limit" "kernels_n$N.json" "${BENCH[@]}" attention --device cuda --dtype bf16 \
            --seq-lens "$N" --head-dims 128 --heads 12 --densities 0.05,0.1,0.2,0.3,0.5,0.75,1.0 \
            --backends triton,triton-tma,flex,flex-flash,auto --warmup 2 --repeats 5 --no-progress --out "$WORK/kernels_n$N.json"
    done
    run_stage transformer 170 transformer.json "${BENCH[@]}" transformer --device cuda --model wan2.1-1.3b \
        --resolution 480p --steps 4 --methods radial,sparse_vdit --point 'adaspa:search_steps=[0]' \
        --out "$WORK/transformer.json"
    run_stage tests 70 tests.xml "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/kernels -rs \
        --junitxml="$WORK/tests.xml"
else
    run_stage env 30 env.json "$PY" -m dit_sparse.bench.gpu_evidence env --device cpu --out "$WORK/env.json"
    # Triton in its interpreter (fp32: bf16 is wrong there), the CPU gather backend, and flex-flash's reason.
    run_stage kernels_n512 60 kernels_n512.json env TRITON_INTERPRET=1 "${BENCH[@]}" attention --device cpu \
        --dtype fp32 --seq-lens 512 --head-dims 64 --heads 2 --densities 0.25,1.0 \
        --backends triton,triton-tma,gather,flex-flash,auto --warmup 0 --repeats 2 --no-progress --out "$WORK/kernels_n512.json"
    run_stage transformer 60 transformer.json "${BENCH[@]}" transformer --device cpu --model wan2.1-1.3b \
        --resolution tiny --layers 1 --steps 1 --block-size 64 --methods radial,sparse_vdit \
        --point 'adaspa:search_steps=[0]' --out "$WORK/transformer.json"
    run_stage tests 60 tests.xml "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/kernels -rs \
        --junitxml="$WORK/tests.xml"
fi

echo "=== report ==="
timeout 15 "$PY" -m dit_sparse.bench.gpu_evidence report --work-dir "$WORK" --out-dir "$OUT_DIR" --mode "$MODE" \
    | tee "$WORK/report.log"
report_rc=${PIPESTATUS[0]}
if [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ]; then
    # the device tool returns what is under $OUT: the two result files and every stage's log
    grep '^wrote ' "$WORK/report.log" | cut -c7- | while read -r path; do cp "$path" "$OUT/"; done
    cat "$WORK"/*.log >"$OUT/gpu_evidence_logs.txt"
fi
exit "$report_rc"
