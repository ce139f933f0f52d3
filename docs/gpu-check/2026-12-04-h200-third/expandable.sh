#!/usr/bin/env bash
# Ad hoc (2026-12-04, the third lease, second call): TRL's default full fine-tuning step at
# Qwen2.5-1.5B's shape with PyTorch's expandable segments, the peer of quantized.sh's bapo row.
set -u -o pipefail
KIT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WORK="$(mktemp -d /tmp/bapo-e.XXXXXX)"; mkdir -p "$WORK/logs" "$OUT"
trap 'tar -czf "$OUT/logs.tar.gz" -C "$WORK" logs 2>/dev/null' EXIT
gzip -dc "$KIT/bapo.gz" > "$WORK/bapo" && chmod +x "$WORK/bapo"
TORCH_LIB="$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
for w in "$KIT"/wheels/*.whl; do python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" "$w" >/dev/null 2>&1; done
export PYTHONPATH="$WORK/site" BAPO_BENCH_DEVICE=cuda PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
MODEL="$WORK/big"
echo "[+${SECONDS}s] init"; timeout 130 "$WORK/bapo" model init --like "$KIT/qwen2.5-1.5b-shape" --out "$MODEL" --seed 0 > "$WORK/logs/init.out" 2>&1 || { echo init failed; exit 1; }
name=big-full-torch-default-expandable
nvidia-smi -i 0 --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > "$WORK/$name.s" 2>/dev/null & p=$!
echo "[+${SECONDS}s] $name"
BAPO_BENCH_DTYPE=bfloat16 BAPO_BENCH_CHECKPOINTING=1 timeout 110 python3 xtask/bench_reference.py train "$MODEL" \
  data/personalised/preferences.jsonl detailed 5 4 256 64 > "$WORK/logs/$name.out" 2> "$WORK/logs/$name.err"; rc=$?
kill $p; wait $p 2>/dev/null
[ $rc -eq 0 ] && tail -n 1 "$WORK/logs/$name.out" | python3 "$KIT/kit.py" labelled "$name" "$WORK/$name.s" > "$OUT/results.jsonl"
echo "rc=$rc done in ${SECONDS}s"; cat "$OUT/results.jsonl" 2>/dev/null
