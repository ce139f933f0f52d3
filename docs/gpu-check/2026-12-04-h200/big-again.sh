#!/usr/bin/env bash
# Ad hoc (2026-12-04): the four 1.5B-shape rows of run.sh once more, for a second sample.
set -u -o pipefail
KIT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WORK="$(mktemp -d /tmp/bapo-big.XXXXXX)"; mkdir -p "$WORK/logs" "$OUT"
gzip -dc "$KIT/bapo.gz" > "$WORK/bapo" && chmod +x "$WORK/bapo"
TORCH_LIB="$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
for w in "$KIT"/wheels/*.whl; do python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" "$w" >/dev/null 2>&1; done
export PYTHONPATH="$WORK/site" BAPO_BENCH_DEVICE=cuda
MODEL="$WORK/big"
"$WORK/bapo" model init --like "$KIT/qwen2.5-1.5b-shape" --out "$MODEL" --seed 0 > "$WORK/logs/init.out" 2>&1 || { echo init failed; exit 1; }
bench() { local name="$1"; shift
  nvidia-smi -i 0 --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > "$WORK/$name.s" 2>/dev/null & local p=$!
  echo "[$SECONDS s] $name"; timeout 150 "$@" > "$WORK/logs/$name.out" 2> "$WORK/logs/$name.err"; local rc=$?
  kill $p; wait $p 2>/dev/null
  [ $rc -eq 0 ] && tail -n 1 "$WORK/logs/$name.out" | python3 "$KIT/kit.py" labelled "$name" "$WORK/$name.s" >> "$OUT/results.jsonl" || echo "$name failed $rc"; }
OURS=("$WORK/bapo" bench --phase train --steps 10 --config configs/bench.toml --set "model.path=\"$MODEL\"" --set 'training.backend="cuda"' --set 'training.precision="bf16"' --set training.gradient_checkpointing=true --set training.lm_head_chunk_tokens=256)
peer() { BAPO_BENCH_DTYPE=bfloat16 BAPO_BENCH_CHECKPOINTING=1 bench "$1" python3 xtask/bench_reference.py "$2" "$MODEL" data/personalised/preferences.jsonl detailed 10 4 256 64; }
bench big-train-bf16-cuda "${OURS[@]}"
peer big-train-torch-default train
bench big-train-lora-bf16-cuda "${OURS[@]}" --set lora.enabled=true --set 'lora.base_dtype="bf16"'
peer big-train-lora-torch-default train-lora
tar -czf "$OUT/logs.tar.gz" -C "$WORK" logs; echo "done in $SECONDS s"
