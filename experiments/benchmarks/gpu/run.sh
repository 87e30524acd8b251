#!/usr/bin/env bash
# The device check: convnet on a machine with one GPU and a preinstalled CUDA jax, no internet.
#
#   bash experiments/benchmarks/gpu/run.sh OUT DATA_DIR [WHEELS_DIR]      # on the GPU machine, from the repo root
#   bash experiments/benchmarks/gpu/run.sh --dry-run OUT DATA_DIR         # on a CPU: every step, tiny sizes
#
# 1. installs the few missing pure-Python wheels (WHEELS_DIR: ml_collections, tensorboardX) and convnet with
#    --no-deps into their own folders: the machine's jax, jaxlib and CUDA plugin stay as they are (checked);
# 2. checks that JAX runs on the GPU with nothing asked;
# 3. runs the accelerator tests (tests/test_on_accelerator.py: placement, cuDNN path, precision, bf16,
#    seeds together, no preallocation);
# 4. times the seed network at batch 32 (float32 and TF32), at batch 1024 in bfloat16, 8 seeds together
#    and 8 learning rates together against one, a checkpoint save, and the PyTorch peer on the same GPU
#    (measure.py beside this file);
# 5. runs the default sweep (configs/sweep.py) end to end, under a time limit (it resumes if cut).
# A second, shorter call can run a subset: PARTS=a,b (measure.py's parts), SKIP_TESTS=1, SKIP_SWEEP=1.
# Everything lands in OUT (at most 8 files): log.txt, env.txt, tests.txt, figures.json, sweep_report.md,
# sweep_answer.json, sweep_results.csv. Within 8 minutes on an H100/H200 by construction: each step has
# its own time limit (STEP_SECONDS below), and the sweep is cut at its limit.
set -uo pipefail

DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; shift; fi
OUT=${1:?usage: run.sh [--dry-run] OUT DATA_DIR [WHEELS_DIR]}
DATA=${2:?usage: run.sh [--dry-run] OUT DATA_DIR [WHEELS_DIR]}
WHEELS=${3:-}
PY=${PYTHON:-python3}
REPO=$(cd "$(dirname "$0")/../../.." && pwd)
WORK=$(mktemp -d /tmp/convnet-gpu-check.XXXXXX)
mkdir -p "$OUT"
LOG="$OUT/log.txt"
: > "$LOG"
say() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$LOG"; }
if [ $DRY = 1 ]; then
  TESTS_S=300; MEASURE_S=600; SWEEP_S=300; PLATFORM=cpu; QUICK=--quick; SWEEP_CONFIG=configs/sweep.py
  SWEEP_ARGS=(--config.dataset.validation_size=60 "--config.sweep.axes.features=((4,4),)"
              "--config.sweep.axes.kernel_size=(3,)" "--config.sweep.axes.seeds=(0,1)" --config.num_epochs=1
              --config.inference.seconds=0.05)
else
  TESTS_S=${TESTS_S:-120}; MEASURE_S=${MEASURE_S:-170}; SWEEP_S=${SWEEP_S:-170}; PLATFORM=gpu,cpu; QUICK=
  SWEEP_CONFIG=configs/sweep.py
  SWEEP_ARGS=()
fi
cd "$REPO" || exit 1
say "device check in $REPO (dry run: $DRY), out $OUT, data $DATA, work $WORK"

# 1. Wheels and convnet, beside the machine's packages.
$PY -m pip list 2>/dev/null | grep -iE '^(jax|jaxlib|jax-cuda[0-9]+-(plugin|pjrt)|libtpu) ' > "$WORK/jax_before.txt"
SITE="$WORK/site"
if [ -n "$WHEELS" ] && ls "$WHEELS"/*.whl > /dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$WHEELS"/*.whl \
    || { say "FAILED: installing the wheels in $WHEELS"; exit 1; }
fi
if ! $PY -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir \
    --target "$SITE/convnet-install" . >> "$WORK/pip.txt" 2>&1; then
  if grep -q "invalid command 'bdist_wheel'" "$WORK/pip.txt"; then  # an old setuptools without the wheel package
    say "pip cannot build a wheel here (setuptools without bdist_wheel): convnet's source on PYTHONPATH instead"
    mkdir -p "$SITE/convnet-install" && cp -rL src/convnet "$SITE/convnet-install/"
  else
    cat "$WORK/pip.txt" >> "$LOG"; say "FAILED: pip install --no-deps convnet"; exit 1
  fi
fi
export PYTHONPATH="$SITE/convnet-install:$SITE${PYTHONPATH:+:$PYTHONPATH}"
$PY -m pip list 2>/dev/null | grep -iE '^(jax|jaxlib|jax-cuda[0-9]+-(plugin|pjrt)|libtpu) ' > "$WORK/jax_after.txt"
if ! cmp -s "$WORK/jax_before.txt" "$WORK/jax_after.txt"; then
  say "FAILED: installing convnet changed the jax build:"; diff "$WORK/jax_before.txt" "$WORK/jax_after.txt" | tee -a "$LOG"
  exit 1
fi
WHERE=$(cd "$WORK" && $PY -c "import convnet; print(convnet.__file__)")
say "convnet from $WHERE; jax build kept: $(tr '\n' ';' < "$WORK/jax_after.txt")"

# 2. The platform with nothing asked, and the machine.
{
  $PY -c "import jax; print('jax', jax.__version__, 'default backend', jax.default_backend(), jax.devices())"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv 2>/dev/null || true
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), $(nproc) cores"
  cd "$REPO" && git log -1 --format='commit %H %s' 2>/dev/null; git status --short 2>/dev/null | head -5
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt" >> "$LOG"
BACKEND=$($PY -c "import jax; print(jax.default_backend())" 2>/dev/null)
if [ $DRY = 0 ] && [ "$BACKEND" != "gpu" ]; then say "FAILED: JAX's default backend is '$BACKEND', not the GPU"; exit 1; fi

# 3. The accelerator tests.
TESTS_RC=0
if [ -z "${SKIP_TESTS:-}" ]; then
  say "accelerator tests (limit ${TESTS_S}s)"
  # -o addopts=: pyproject.toml's options start pytest-xdist's workers; the machine's pytest may not have it.
  CONVNET_TEST_PLATFORM=$PLATFORM timeout "$TESTS_S" $PY -m pytest -o addopts= -p no:cacheprovider -m accelerator -rs -s \
    --durations=0 tests/test_on_accelerator.py > "$OUT/tests.txt" 2>&1
  TESTS_RC=$?
  tail -3 "$OUT/tests.txt" | tee -a "$LOG"
fi

# 4. Timings.
say "timings (limit ${MEASURE_S}s)"
timeout "$MEASURE_S" $PY experiments/benchmarks/gpu/measure.py --data_dir="$DATA" --out="$OUT" --parts="${PARTS:-}" $QUICK \
  >> "$LOG" 2>&1
MEASURE_RC=$?
tail -12 "$LOG"

# 5. The default sweep, end to end.
SWEEP_RC=0
if [ -z "${SKIP_SWEEP:-}" ]; then
  say "sweep $SWEEP_CONFIG (limit ${SWEEP_S}s)"
  START=$(date +%s)
  timeout "$SWEEP_S" $PY -m convnet.main --config="$SWEEP_CONFIG" --workdir="$WORK/sweep" --config.dataset.dir="$DATA" \
    "${SWEEP_ARGS[@]}" --config.progress=False >> "$LOG" 2>&1
  SWEEP_RC=$?
  say "sweep: exit $SWEEP_RC after $(( $(date +%s) - START )) s; $(wc -l < "$WORK/sweep/results.jsonl" 2>/dev/null || echo 0) trials recorded"
  if [ $SWEEP_RC != 0 ] && [ -f "$WORK/sweep/results.jsonl" ]; then  # cut at its limit: the report of what is recorded
    timeout 60 $PY -m convnet.report --workdir="$WORK/sweep" >> "$LOG" 2>&1
  fi
  for f in report.md answer.json results.csv; do
    [ -f "$WORK/sweep/$f" ] && cp "$WORK/sweep/$f" "$OUT/sweep_$f"
  done
fi
say "done: tests exit $TESTS_RC, timings exit $MEASURE_RC, sweep exit $SWEEP_RC"
[ $TESTS_RC = 0 ] && [ $MEASURE_RC = 0 ] && [ $SWEEP_RC = 0 ]
