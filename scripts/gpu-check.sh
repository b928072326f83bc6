#!/usr/bin/env bash
# Issue 22's GPU measurements in one run, at most 8 minutes on an H200 (each part starts no benchmark after
# its deadline and is killed 40 s later, so a slow part costs only itself), run from the repository root:
#
#   A. inference of the frozen CLIP and every rung at the paper shape (ViT-B/16, 416 px, bf16 autocast),
#      eager and fused paths, batch 1 and 32, and the CLIP and full model timed turn about -> gpu-a.json
#   B. training steps of every rung (stage 1, and stage 2 for the decoder), eager and fused, and the refer
#      loader on COCO-like JPEGs with 0, 4 and 8 workers                              -> gpu-b.json
#   C. the compiled path (torch.compile; CUDA graphs for inference) of the CLIP and the full model -> gpu-c.json
#   D. the compiled stage-1 training step of rung 2 (value+adapters+cfe)                        -> gpu-d.json
#   E. torch.profiler summary: batch 1 and 32 forwards, rung 2's training step      -> profile-gpu.json
#
# and merges A-D into benchmark-gpu.json. Files go to $OUT (the device tool's folder) or reports/benchmarks/gpu.
# Render here with:
#   python -m bench.benchmark_report reports/benchmarks/gpu/benchmark-gpu.json --name benchmark-gpu \
#       --profile reports/benchmarks/gpu/profile-gpu.json --command "scripts/gpu-check.sh"
# A machine without open_clip installs it from wheels carried in .whl/ (see docs/harness.md).
set -uo pipefail
PY=${PY:-python3}
DEST=${OUT:-reports/benchmarks/gpu}
DEVICE=${DEVICE:-cuda}    # a rehearsal on the CPU: DEVICE=cpu SHAPE=synth-refcoco scripts/gpu-check.sh
SHAPE=${SHAPE:-paper-b}
AUTOCAST=$([ "$DEVICE" = cuda ] && echo --bench-autocast)
TRACE_AUTOCAST=$([ "$DEVICE" = cuda ] && echo --autocast)
mkdir -p "$DEST"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! $PY -c "import open_clip" 2>/dev/null; then
    $PY -m pip install --quiet --no-deps --no-index .whl/*.whl || { echo "error: open_clip missing and no wheels in .whl/"; exit 2; }
fi
start=$(date +%s)
bench() {  # bench NAME DEADLINE_SECONDS PYTEST_ARGS...: no benchmark starts after the deadline (those done are
    local name=$1 deadline=$2  # saved), and the part is killed 40 s after it (a benchmark in flight is lost)
    shift 2
    echo "== part $name (no new benchmark after ${deadline}s), $(( $(date +%s) - start ))s in"
    timeout $(( deadline + 40 )) $PY -m pytest bench/benchmarks -q -p no:cacheprovider --bench-device "$DEVICE" \
        $AUTOCAST --shapes "$SHAPE" --bench-deadline "$deadline" --benchmark-json="$DEST/gpu-$name.json" "$@" \
        || echo "part $name ended with $?"
}
FULL="value+adapters+cfe+ske+decoder"
bench a 70 -k "test_inference or test_paths_turn_about" --bench-paths eager,fused
bench b 60 -k "test_train_step or test_loader" --bench-paths eager,fused
bench c 60 -k test_inference --bench-paths compiled --bench-variants "clip;$FULL"
bench d 30 -k test_train_step --bench-paths compiled --bench-variants "value+adapters+cfe"
echo "== part e (at most 50s), $(( $(date +%s) - start ))s in"
timeout 50 $PY -m bench.costs.trace --shape "$SHAPE" --device "$DEVICE" $TRACE_AUTOCAST --batches 1,32 --train-batch 32 \
    --out "$DEST/profile-gpu.json" || echo "part e ended with $?"
$PY - "$DEST" <<'EOF'
import json, sys
from pathlib import Path
dest = Path(sys.argv[1])
parts = [json.loads(p.read_text()) for p in sorted(dest.glob("gpu-[a-d].json")) if p.stat().st_size]
if parts:
    merged = dict(parts[0], benchmarks=[b for p in parts for b in p["benchmarks"]])
    (dest / "benchmark-gpu.json").write_text(json.dumps(merged))
    print(f"merged {len(parts)} parts, {len(merged['benchmarks'])} benchmarks into {dest / 'benchmark-gpu.json'}")
EOF
echo "== done in $(( $(date +%s) - start ))s"
