"""Does a model that transformers reads from a GGUF file hold subnormal floats, and does
flushing them change PyTorch's CPU speed? A check of one suspect for the TRL row of
`cargo xtask bench --quantized-base` that did not finish (docs/performance.md).

It loads the file as the bench does (`gguf_file=`, f32), counts the parameters that are
subnormal (nonzero and below the smallest normal f32), then times a forward and backward of
2 × 256 random tokens (loss on the same tokens), in f32 and under bf16 autocast, each with
`torch.set_flush_denormal` off and on: one untimed warm-up, then the median of three.

usage: python xtask/subnormal_check.py FILE.gguf   (in the bench's venv, with gguf==0.17.1)
"""

import os
import statistics
import sys
import time

import torch
from transformers import AutoModelForCausalLM


def subnormal_counts(model):
    """(parameters, subnormal parameters, the tensors holding any)."""
    tiny = torch.finfo(torch.float32).tiny
    total, subnormal, tensors = 0, 0, []
    for name, p in model.named_parameters():
        w = p.detach()
        count = int(((w != 0) & (w.abs() < tiny)).sum())
        total += w.numel()
        subnormal += count
        if count:
            tensors.append((count, name))
    return total, subnormal, sorted(tensors, reverse=True)


def step_seconds(model, ids, autocast):
    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return time.perf_counter() - start


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    folder, name = os.path.split(os.path.abspath(sys.argv[1]))
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    total, subnormal, tensors = subnormal_counts(model)
    print(f"parameters {total}, subnormal {subnormal} ({subnormal / total:.2e}), "
          f"in {len(tensors)} tensors")
    for count, tensor in tensors[:5]:
        print(f"  {tensor}: {count}")
    torch.manual_seed(0)
    ids = torch.randint(100, 20000, (2, 256))
    for autocast in (False, True):
        for flush in (False, True):
            torch.set_flush_denormal(flush)
            step_seconds(model, ids, autocast)
            times = [step_seconds(model, ids, autocast) for _ in range(3)]
            print(f"bf16 autocast {autocast}, flush_denormal {flush}: median "
                  f"{statistics.median(times):.2f} s (of {', '.join(f'{t:.2f}' for t in times)})")
    torch.set_flush_denormal(False)


if __name__ == "__main__":
    main()
