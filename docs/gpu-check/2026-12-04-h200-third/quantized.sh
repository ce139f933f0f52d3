#!/usr/bin/env bash
# Ad hoc (2026-12-04, the third lease): LoRA on a quantized base on `wgpu` (cubecl holds Burn's
# quantized tensors), next to the f32 base on the same backend, at Qwen2.5-1.5B's shape; the
# tiny BAPO run with a q4 base on cpu, wgpu and (q4 refused there) cuda; then full fine-tuning's
# GPU memory with PyTorch's expandable segments on both sides (is bapo's extra 5 GB the caching
# allocator's?). Each step is limited, the whole run to BUDGET seconds, in order of need.
set -u -o pipefail
KIT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WORK="$(mktemp -d /tmp/bapo-q.XXXXXX)"; LOGS="$WORK/logs"; mkdir -p "$LOGS" "$OUT"
BUDGET=${BUDGET:-470}
trap 'tar -czf "$OUT/logs.tar.gz" -C "$WORK" logs 2>/dev/null' EXIT
gzip -dc "$KIT/bapo.gz" > "$WORK/bapo" && chmod +x "$WORK/bapo"
BAPO="$WORK/bapo"
TORCH_LIB="$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
for w in "$KIT"/wheels/*.whl; do python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" "$w" >/dev/null 2>&1; done
export PYTHONPATH="$WORK/site" BAPO_BENCH_DEVICE=cuda
if ! ldconfig -p 2>/dev/null | grep -q 'libvulkan.so.1' || ! ldconfig -p 2>/dev/null | grep -q 'libGLdispatch.so.0'; then
  for f in "$KIT"/debs/*.deb; do dpkg -x "$f" "$WORK/vk"; done
  export LD_LIBRARY_PATH="$WORK/vk/usr/lib/x86_64-linux-gnu:$LD_LIBRARY_PATH"
fi
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json; [ -f "$icd" ] && export VK_DRIVER_FILES="$icd"
egl=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json; [ -f "$egl" ] && export __EGL_VENDOR_LIBRARY_FILENAMES="$egl"
# cubecl's least autotuning: the earlier leases' wgpu steps spent their budget compiling and tuning.
export CUBECL_AUTOTUNE_LEVEL=minimal
: > "$OUT/steps.tsv"; : > "$OUT/results.jsonl"
step() { local name="$1" limit="$2"; shift 2; local left=$((BUDGET - SECONDS))
  if [ "$left" -lt 15 ]; then printf '%s\tskipped\t0\n' "$name" >> "$OUT/steps.tsv"; return 1; fi
  [ "$limit" -gt "$left" ] && limit="$left"
  echo "[+${SECONDS}s] $name (limit ${limit}s)"; local t=$SECONDS
  timeout --kill-after=5 "$limit" "$@" > "$LOGS/$name.out" 2> "$LOGS/$name.err"; local rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t))" >> "$OUT/steps.tsv"
  [ $rc -ne 0 ] && { echo "  $name failed ($rc):"; tail -n 6 "$LOGS/$name.err" | sed 's/^/    /'; }
  return $rc; }
bench() { local name="$1"; nvidia-smi -i 0 --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > "$WORK/$name.s" 2>/dev/null & local p=$!
  step "$@"; local rc=$?; kill $p 2>/dev/null; wait $p 2>/dev/null
  [ $rc -eq 0 ] && tail -n 1 "$LOGS/$name.out" | python3 "$KIT/kit.py" labelled "$name" "$WORK/$name.s" >> "$OUT/results.jsonl"
  return $rc; }

# 1. The tiny BAPO run with a q4 base: cpu against wgpu (4 steps, CI's cross-backend run).
Q4=(--set lora.enabled=true --set 'lora.base_quantization="q4"')
for b in cpu wgpu; do
  step "tiny-q4-$b" 120 "$BAPO" train --config configs/tiny.toml "${Q4[@]}" --set "training.backend=\"$b\"" \
    --set training.max_steps=4 --set eval.at_start=false --set "output.dir=\"$WORK/tiny-$b\"" \
    --set "anchors.cache_dir=\"$WORK/tiny-anchors\"" --quiet
done
step agreement 30 python3 "$KIT/kit.py" agreement "$OUT/agreement.json" "$WORK" cpu wgpu
# LoRA's A factors are drawn by each backend's own generator, so only the first step (B = 0: the
# policy is the base) must agree; the later steps are shown, not judged.
step first-step 30 python3 -c '
import json, sys
rows = {b: [json.loads(l) for l in open(f"{sys.argv[1]}/tiny-{b}/metrics.jsonl") if "\"loss\"" in l] for b in ("cpu", "wgpu")}
keys = sorted(k for k in rows["cpu"][0] if k.startswith(("loss", "logps/")))
out = {k: [rows["cpu"][0][k], rows["wgpu"][0][k]] for k in keys}
out["largest_difference"] = max(abs(a - b) for a, b in out.values())
out["losses"] = {b: [r["loss"] for r in rows[b]] for b in rows}
json.dump(out, open(sys.argv[2], "w"), indent=1); print(json.dumps(out))' "$WORK" "$OUT/first-step.json"
step refusal-cuda-q4 30 "$BAPO" train --config configs/tiny.toml "${Q4[@]}" --set 'training.backend="cuda"' \
  --set "output.dir=\"$WORK/tiny-cuda\"" --quiet

# 2. Qwen2.5-1.5B's shape, random weights: a LoRA step (rank 8, q/k/v/o; f32 compute, checkpointed,
# LM head in chunks) on wgpu with the base in q4, then in f32; 3 timed steps each.
MODEL="$WORK/big"
step big-init 120 "$BAPO" model init --like "$KIT/qwen2.5-1.5b-shape" --out "$MODEL" --seed 0
LORA=("$BAPO" bench --phase train --steps 3 --config configs/bench.toml --set "model.path=\"$MODEL\""
  --set lora.enabled=true --set training.gradient_checkpointing=true --set training.lm_head_chunk_tokens=256)
bench big-lora-q4-wgpu 150 "${LORA[@]}" --set 'training.backend="wgpu"' --set 'lora.base_quantization="q4"'
bench big-lora-f32-wgpu 120 "${LORA[@]}" --set 'training.backend="wgpu"'
bench big-lora-f32-cuda 60 "${LORA[@]}" --set 'training.backend="cuda"'

# 3. Full fine-tuning at that shape, TRL's default on both sides, PyTorch's expandable segments.
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
bench big-full-bf16-cuda-expandable 70 "$BAPO" bench --phase train --steps 5 --config configs/bench.toml \
  --set "model.path=\"$MODEL\"" --set 'training.backend="cuda"' --set 'training.precision="bf16"' \
  --set training.gradient_checkpointing=true --set training.lm_head_chunk_tokens=256
BAPO_BENCH_DTYPE=bfloat16 BAPO_BENCH_CHECKPOINTING=1 bench big-full-torch-default-expandable 80 \
  python3 xtask/bench_reference.py train "$MODEL" data/personalised/preferences.jsonl detailed 5 4 256 64
echo "done in ${SECONDS}s"; cat "$OUT/steps.tsv"
