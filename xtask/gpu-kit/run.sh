#!/usr/bin/env bash
# The GPU check kit's run (issue #12; `cargo xtask gpu-kit` builds the kit around this file).
#
# Run from the repository root, with the kit in .gpu-kit/ and results going to $OUT:
#   bash .gpu-kit/run.sh                      # on the GPU machine: backends cuda and wgpu
#   bash .gpu-kit/run.sh --backends "tch-cpu wgpu-cpu" --bench-backends tch-cpu \
#     --torch-device cpu --python P           # the same steps on a machine without a GPU
# It writes to $OUT: device.json (the machine), agreement.json (the tiny BAPO run's losses on
# cpu and each backend), results.jsonl (one line per benchmark: bapo bench and the PyTorch/TRL
# peer), summary.md (the tables), steps.tsv (each step's exit status and seconds) and
# logs.tar.gz (each step's stdout and stderr): few files, as the GPU machine returns at most 8.
# Every step has a time limit and a failed step does not stop the others; the exit status is 0
# only when every step passed.
set -u -o pipefail

KIT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BACKENDS="cuda wgpu"   # the tiny run's, next to cpu
BENCH_BACKENDS=""      # the benchmarks' (default: BACKENDS; `none`: no benchmarks)
TORCH_DEVICE="cuda"
PYTHON="python3"
BUDGET=450            # seconds for the whole run (under 8 minutes); steps left when it is spent are skipped
STEPS=10              # timed steps (train) and batches (generate) of each benchmark
PEERS=yes             # the PyTorch/TRL side of the benchmarks (no: ours only)
BIG_SHAPE=""          # the shape of the steps at size (default: the kit's Qwen2.5-1.5B shape)
while [ $# -gt 0 ]; do
  case "$1" in
    --backends) BACKENDS="$2"; shift 2 ;;
    --bench-backends) BENCH_BACKENDS="$2"; shift 2 ;;
    --torch-device) TORCH_DEVICE="$2"; shift 2 ;;
    --python) PYTHON="$2"; shift 2 ;;
    --budget) BUDGET="$2"; shift 2 ;;
    --steps) STEPS="$2"; shift 2 ;;
    --peers) PEERS="$2"; shift 2 ;;
    --big-shape) BIG_SHAPE="$2"; shift 2 ;;
    *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
: "${OUT:?set OUT to the folder for the results}"
BENCH_BACKENDS="${BENCH_BACKENDS:-$BACKENDS}"
BIG_SHAPE="${BIG_SHAPE:-$KIT/qwen2.5-1.5b-shape}"
mkdir -p "$OUT"
WORK="$(mktemp -d /tmp/bapo-gpu-kit.XXXXXX)"
LOGS="$WORK/logs"
mkdir -p "$LOGS"
BAPO="$WORK/bapo"
gzip -dc "$KIT/bapo.gz" > "$BAPO" && chmod +x "$BAPO" || { echo "run.sh: cannot unpack $KIT/bapo.gz" >&2; exit 1; }
FAILED=0
STATUS="$OUT/steps.tsv"
: > "$STATUS"
# The logs come back even when an outer time limit stops the run.
trap 'tar -czf "$OUT/logs.tar.gz" -C "$WORK" logs 2>/dev/null; rm -rf "$WORK"' EXIT

log() { echo "[$(date +%H:%M:%S) +${SECONDS}s] $*"; }

# step NAME LIMIT COMMAND…: runs COMMAND within LIMIT seconds and the budget left, its stdout
# in $LOGS/NAME.out and stderr in $LOGS/NAME.err; records the result in steps.tsv.
step() {
  local name="$1" limit="$2"; shift 2
  local left=$((BUDGET - SECONDS))
  if [ "$left" -lt 10 ]; then
    log "skip $name: the budget of ${BUDGET}s is spent"
    printf '%s\tskipped\t0\n' "$name" >> "$STATUS"; FAILED=1; return 1
  fi
  [ "$limit" -gt "$left" ] && limit="$left"
  log "$name (limit ${limit}s)"
  local started=$SECONDS rc
  timeout --kill-after=5 "$limit" "$@" > "$LOGS/$name.out" 2> "$LOGS/$name.err"
  rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - started))" >> "$STATUS"
  if [ "$rc" -ne 0 ]; then
    FAILED=1
    log "  $name failed (exit $rc); the end of its stderr:"
    tail -n 15 "$LOGS/$name.err" | sed 's/^/    /'
  fi
  return "$rc"
}

# bench NAME LIMIT COMMAND…: a step whose last line of stdout is a JSON result, kept in
# results.jsonl with its NAME and, on a GPU, the most GPU memory in use while it ran
# (nvidia-smi sampled every 100 ms: the same measure for both sides).
bench() {
  local name="$1" samples="$WORK/$1.gpu-samples" sampler="" rc
  if [ "$TORCH_DEVICE" = cuda ] && command -v nvidia-smi > /dev/null; then
    nvidia-smi -i 0 --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 \
      > "$samples" 2> /dev/null &
    sampler=$!
  fi
  step "$@"
  rc=$?
  if [ -n "$sampler" ]; then kill "$sampler" 2> /dev/null; wait "$sampler" 2> /dev/null; fi
  if [ "$rc" -eq 0 ]; then
    tail -n 1 "$LOGS/$name.out" | "$PYTHON" "$KIT/kit.py" labelled "$name" "$samples" \
      >> "$OUT/results.jsonl" || { rc=$?; FAILED=1; log "  $name: its result could not be read"; }
  fi
  return "$rc"
}

# --- Set-up: libtorch from the machine's torch, the carried Python wheels and Vulkan loader.
TORCH_LIB="$("$PYTHON" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')" || {
  echo "run.sh: $PYTHON cannot import torch" >&2; exit 1; }
export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# One wheel at a time, so that one this Python cannot take (multiprocess is built per Python
# version) does not keep the others out.
for wheel in "$KIT"/wheels/*.whl; do
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$WORK/site" "$wheel" >> "$LOGS/wheels.log" 2>&1 \
    || log "$(basename "$wheel") did not install here (logs: wheels.log)"
done
export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
case " $BACKENDS $BENCH_BACKENDS " in
  *" wgpu "*)
    # Vulkan: where the machine lacks the loader or the GL dispatch library that NVIDIA's
    # Vulkan driver loads, Debian's (the .debs) are unpacked into $WORK, never over the
    # machine's own files, and put first on the library path. Then NVIDIA's driver manifests,
    # where they live outside the usual folders.
    if ! ldconfig -p 2>/dev/null | grep -q 'libvulkan.so.1' \
      || ! ldconfig -p 2>/dev/null | grep -q 'libGLdispatch.so.0'; then
      for f in "$KIT"/debs/*.deb; do dpkg -x "$f" "$WORK/vk"; done
      export LD_LIBRARY_PATH="$WORK/vk/usr/lib/x86_64-linux-gnu:$LD_LIBRARY_PATH"
      log "the Vulkan loader and GL dispatch come from the kit ($WORK/vk)"
    fi
    icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
    [ -f "$icd" ] && [ -z "${VK_DRIVER_FILES:-}" ] && export VK_DRIVER_FILES="$icd"
    egl=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
    [ -f "$egl" ] && [ -z "${__EGL_VENDOR_LIBRARY_FILENAMES:-}" ] && export __EGL_VENDOR_LIBRARY_FILENAMES="$egl"
    ;;
esac
export BAPO_BENCH_DEVICE="$TORCH_DEVICE"

# --- (d) The machine.
step device 60 "$PYTHON" "$KIT/kit.py" device "$BAPO" "$OUT/device.json"

# --- The user's path when no GPU is visible (hidden here by CUDA_VISIBLE_DEVICES and an
# empty list of Vulkan drivers): a clear refusal, not a crash.
step refusal-cuda 60 "$PYTHON" "$KIT/kit.py" expect-refusal "$BAPO" cuda \
  "backend \`cuda\` needs CUDA device 0, and libtorch sees 0"
step refusal-wgpu 60 "$PYTHON" "$KIT/kit.py" expect-refusal "$BAPO" wgpu \
  "backend \`wgpu\` needs discrete GPU 0, and wgpu found none"

# --- (a) The tiny BAPO run on cpu and on each backend: every step's loss, and the final
# evaluation; the run of CI's `cargo xtask backends` (4 steps), so the numbers compare.
for backend in cpu $BACKENDS; do
  step "tiny-$backend" 180 "$BAPO" train --config configs/tiny.toml \
    --set "training.backend=\"$backend\"" --set training.max_steps=4 --set eval.at_start=false \
    --set "output.dir=\"$WORK/tiny-$backend\"" \
    --set "anchors.cache_dir=\"$WORK/tiny-anchors\"" --quiet
done
step agreement 60 "$PYTHON" "$KIT/kit.py" agreement "$OUT/agreement.json" "$WORK" cpu $BACKENDS

# --- (b, c) SmolLM2-135M's shape with random weights: DPO steps and generation, bapo on each
# backend next to PyTorch/TRL on the same device (f32, and bf16 for reference).
MODEL="$WORK/smollm2-135m-random"
# ours PHASE BACKEND: `bapo bench` on configs/bench.toml with the random model, as the array
# OURS (an array, so that no path is split on spaces).
ours() {
  OURS=("$BAPO" bench --phase "$1" --steps "$STEPS" --config configs/bench.toml
    --set "model.path=\"$MODEL\"" --set "training.backend=\"$2\"")
}
peer() { # peer NAME LIMIT DTYPE PHASE BATCH [CHECKPOINTING]: the PyTorch/TRL side of the same work
  [ "$PEERS" = yes ] || return 0
  local name="$1" limit="$2" dtype="$3" phase="$4" batch="$5" checkpointing="${6:-0}"
  BAPO_BENCH_DTYPE="$dtype" BAPO_BENCH_CHECKPOINTING="$checkpointing" \
    bench "$name" "$limit" "$PYTHON" xtask/bench_reference.py "$phase" \
    "$MODEL" data/personalised/preferences.jsonl detailed "$STEPS" "$batch" 256 64
}
# TRL's default (DPOConfig: bf16 autocast, gradient checkpointing), as bapo's settings.
TRL_DEFAULT=(--set 'training.precision="bf16"' --set training.gradient_checkpointing=true)
: > "$OUT/results.jsonl"
if [ "$BENCH_BACKENDS" != none ]; then
  step model-init 120 "$BAPO" model init --like "$KIT/smollm2-shape" --out "$MODEL" --seed 0
  first="${BENCH_BACKENDS%% *}"
  ours train "$first"; bench "train-$first" 150 "${OURS[@]}"
  peer train-torch-float32 150 float32 train 4
  ours train "$first"; bench "train-bf16-$first" 150 "${OURS[@]}" "${TRL_DEFAULT[@]}"
  peer train-torch-default 150 bfloat16 train 4 1
  ours generate "$first"; bench "generate-$first" 150 "${OURS[@]}"
  peer generate-torch-float32 120 float32 generate 8
  # At size: Qwen2.5-1.5B's shape, full fine-tuning and LoRA, TRL's default on both sides
  # (ours also with the LM head in chunks, and LoRA's base held in bf16).
  SMALL="$MODEL"
  MODEL="$WORK/big-random"
  if step big-model-init 150 "$BAPO" model init --like "$BIG_SHAPE" --out "$MODEL" --seed 0; then
    chunks=(--set training.lm_head_chunk_tokens=256)
    ours train "$first"; bench "big-train-bf16-$first" 150 "${OURS[@]}" "${TRL_DEFAULT[@]}" "${chunks[@]}"
    peer big-train-torch-default 150 bfloat16 train 4 1
    ours train "$first"; bench "big-train-lora-bf16-$first" 150 "${OURS[@]}" "${TRL_DEFAULT[@]}" \
      "${chunks[@]}" --set lora.enabled=true --set 'lora.base_dtype="bf16"'
    peer big-train-lora-torch-default 150 bfloat16 train-lora 4 1
    rm -rf "$MODEL"
  fi
  MODEL="$SMALL"
  for backend in $BENCH_BACKENDS; do
    [ "$backend" = "$first" ] && continue
    ours train "$backend"; bench "train-$backend" 180 "${OURS[@]}"
    ours generate "$backend"; bench "generate-$backend" 150 "${OURS[@]}"
  done
  peer train-torch-bfloat16 120 bfloat16 train 4
  peer generate-torch-bfloat16 120 bfloat16 generate 8
  # LoRA (rank 8 on q/k/v/o, as configs/bench.toml's peer in TRL + PEFT), last: the least needed.
  ours train "$first"; bench "train-lora-$first" 120 "${OURS[@]}" --set lora.enabled=true
  peer train-lora-torch-float32 120 float32 train-lora 4
fi

step summary 30 "$PYTHON" "$KIT/kit.py" summary "$OUT"
cat "$OUT/summary.md" 2>/dev/null
log "done in ${SECONDS}s; steps (name, exit status, seconds):"
cat "$STATUS"
exit "$FAILED"
