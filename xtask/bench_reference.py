"""The PyTorch side of `cargo xtask bench`: the same work as `bapo bench`, with PyPI's torch
2.9.0, transformers and TRL, on the same machine, printed as one JSON line.

- train: TRL's DPOTrainer (sigmoid loss, beta 0.1, full fine-tuning, AdamW, batch 4, max grad
  norm 1, reference log-probs precomputed before the timed steps), one untimed warm-up step;
- train-lora: the same with a PEFT LoRA adapter (rank 8, alpha 16, q/k/v/o projections);
- generate: `model.generate`, greedy, exactly `max_new_tokens` new tokens per prompt, batches of
  `batch` left-padded chat prompts, one untimed warm-up batch.

The device and precision come from the environment: `BAPO_BENCH_DEVICE` (`cpu`, the default,
or `cuda`) and `BAPO_BENCH_DTYPE` (`float32`, the default, or `bfloat16`: f32 weights under
bf16 autocast, TRL's `bf16=True`, for training; bf16 weights for generation). For training,
`BAPO_BENCH_CHECKPOINTING=1` turns on TRL's `gradient_checkpointing` (with bf16: TRL's
default), `BAPO_BENCH_BASE` holds the weights (`float32`, the default; `bfloat16`; `nf4`:
bitsandbytes' 4-bit NF4 with bf16 compute, the QLoRA recipe, LoRA only),
`BAPO_BENCH_WARMUP` sets the untimed steps (1), and `BAPO_BENCH_STEP_PEAK=1` makes
the peak RSS that of the timed steps alone (reset as they begin, as `bapo bench --step-peak`). On CUDA every
timed span ends with `torch.cuda.synchronize()`, so that it is the work's time, not its launch's.

Tokens are real (unpadded) tokens of the same examples, in the same order; tokens/s is the
mean tokens of a timed step (or batch) over the median time of one; memory is the process's
peak RSS.

usage: python bench_reference.py train|train-lora|generate MODEL_DIR DATA.jsonl USER STEPS BATCH MAX_LENGTH MAX_NEW_TOKENS
       python bench_reference.py from-gguf FILE.gguf OUT_DIR   (transformers' reading of a GGUF,
       saved as a checkpoint folder in f32; needs the `gguf` package)
"""

import json
import os
import resource
import statistics
import sys
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


DEVICE = os.environ.get("BAPO_BENCH_DEVICE", "cpu")
DTYPE = os.environ.get("BAPO_BENCH_DTYPE", "float32")
CHECKPOINTING = os.environ.get("BAPO_BENCH_CHECKPOINTING") == "1"
WARMUP = int(os.environ.get("BAPO_BENCH_WARMUP", "1"))
STEP_PEAK = os.environ.get("BAPO_BENCH_STEP_PEAK") == "1"
BASE = os.environ.get("BAPO_BENCH_BASE", "float32")
if DEVICE not in ("cpu", "cuda") or DTYPE not in ("float32", "bfloat16"):
    sys.exit(f"BAPO_BENCH_DEVICE={DEVICE!r} / BAPO_BENCH_DTYPE={DTYPE!r}: cpu|cuda, float32|bfloat16")
if BASE not in ("float32", "bfloat16", "nf4"):
    sys.exit(f"BAPO_BENCH_BASE={BASE!r}: float32|bfloat16|nf4")


def synchronize():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def peak_rss_mib():
    # VmHWM, as bapo reads it: unlike ru_maxrss, /proc/self/clear_refs resets it.
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def reset_peak_rss():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def rows_of(path, user):
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r for r in rows if r.get("user") == user]


def load_for_training(model_dir, lora):
    """The model with its weights held as `BAPO_BENCH_BASE` says."""
    if BASE != "float32" and not lora:
        sys.exit(f"BAPO_BENCH_BASE={BASE} is for train-lora (a frozen base)")
    if BASE == "nf4":
        # QLoRA as its paper and PEFT's docs set it: NF4 blocks with double quantisation, bf16
        # compute. TRL's DPOTrainer prepares a k-bit model for training itself (PEFT's
        # prepare_model_for_kbit_training, which holds the embedding, head and norms in f32).
        from transformers import BitsAndBytesConfig

        quantization = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        model = AutoModelForCausalLM.from_pretrained(
            model_dir, quantization_config=quantization, dtype=torch.bfloat16, device_map=DEVICE
        )
        # bitsandbytes 0.50.2, on a CPU with AVX512-BF16, repacks a 4-bit weight for inference
        # the first time its layer runs in eval mode without gradients (TRL's reference
        # log-probs do) and keeps it so; its training forward then adds the bias in place to a
        # tensor autograd tracks ("a view of a leaf Variable that requires grad is being used in
        # an in-place operation": Qwen2's q/k/v have biases). Keep the training layout.
        for module in model.modules():
            if hasattr(module, "support_avx512bf16_for_cpu"):
                module.support_avx512bf16_for_cpu = False
        return model
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, BASE))


def from_gguf(path, out):
    """transformers' own reading of a GGUF file (dequantised to f32), saved as a folder."""
    folder, name = os.path.split(os.path.abspath(path))
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # transformers marks a model read from a GGUF as "quantized with gguf" and will not save
    # it, though its weights are now plain f32 tensors: save it as the plain model it is.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def train(model_dir, rows, steps, batch, max_length, lora=False):
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    used = rows[: (steps + WARMUP) * batch]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = load_for_training(model_dir, lora)
    dataset = Dataset.from_list(
        [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in used]
    )

    times = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            synchronize()
            if STEP_PEAK and state.global_step == WARMUP:
                reset_peak_rss()
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            synchronize()
            times.append(time.perf_counter() - self.start)

    peft_config = None
    if lora:
        # The same adapter as bapo's default: rank 8, alpha 16, the attention projections.
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=8,
            lora_alpha=16,
            lora_dropout=0.0,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
            task_type="CAUSAL_LM",
        )
    config = DPOConfig(
        output_dir="/tmp/bapo-bench-trl",
        per_device_train_batch_size=batch,
        max_steps=steps + WARMUP,
        learning_rate=1e-6,
        beta=0.1,
        loss_type="sigmoid",
        max_length=max_length,
        max_grad_norm=1.0,
        precompute_ref_log_probs=True,
        use_cpu=DEVICE == "cpu",
        bf16=DTYPE == "bfloat16",
        gradient_checkpointing=CHECKPOINTING,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        dataloader_drop_last=True,
        seed=0,
    )
    trainer = DPOTrainer(
        model=model,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[Timer()],
        peft_config=peft_config,
    )
    # Real tokens of the examples, counted like bapo does: prompt + chosen and prompt + rejected.
    tokens_per_example = []
    for r in used:
        text = tokenizer.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True)
        prompt = tokenizer(text, add_special_tokens=False)["input_ids"]
        for key in ("chosen", "rejected"):
            text = r[key][0]["content"] + tokenizer.eos_token
            completion = tokenizer(text, add_special_tokens=False)["input_ids"]
            tokens_per_example.append(min(len(prompt) + len(completion), max_length))
    trainer.train()
    # The trainer's sampler shuffles, so a step's own tokens are not known here: every timed
    # step is given the mean (the timed steps hold all examples but the first step's batch).
    timed_tokens = sum(tokens_per_example[2 * batch * WARMUP :])
    steps_timed = len(times) - WARMUP
    return {
        "timed": [(seconds, timed_tokens / steps_timed) for seconds in times[WARMUP:]],
        # TRL's fastest CPU setting would drop padding; this TRL version forces it off
        # (`padding_free=True` warns and falls back), which the benchmark records.
        "padding_free_available": padding_free_available(),
    }


def padding_free_available():
    """Whether this TRL's DPOTrainer honours `padding_free=True` (1.16 warns and turns it off)."""
    import inspect

    from trl import DPOTrainer

    source = inspect.getsource(DPOTrainer.__init__)
    return "temporarily unavailable" not in source


def generate(model_dir, rows, steps, batch, max_new_tokens):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    dtype = torch.bfloat16 if DTYPE == "bfloat16" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(DEVICE)
    model.eval()
    timed = []
    for b in range(steps + 1):
        prompts = [
            tokenizer.apply_chat_template(
                rows[(b * batch + i) % len(rows)]["prompt"], tokenize=False, add_generation_prompt=True
            )
            for i in range(batch)
        ]
        inputs = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        inputs = inputs.to(DEVICE)
        synchronize()
        start = time.perf_counter()
        with torch.no_grad():
            out = model.generate(
                **inputs,
                do_sample=False,
                max_new_tokens=max_new_tokens,
                min_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
            )
        synchronize()
        elapsed = time.perf_counter() - start
        if b > 0:
            timed.append((elapsed, (out.shape[1] - inputs["input_ids"].shape[1]) * batch))
    return {"timed": timed}


def backend_name():
    if DEVICE == "cuda":
        return f"torch {torch.__version__} {torch.cuda.get_device_name()} {DTYPE}"
    return f"torch {torch.__version__} ({torch.get_num_threads()} threads) {DTYPE}"


def main():
    if sys.argv[1] == "from-gguf":
        from_gguf(*sys.argv[2:4])
        return
    phase, model_dir, data, user, steps, batch, max_length, max_new_tokens = sys.argv[1:9]
    steps, batch, max_length, max_new_tokens = map(int, (steps, batch, max_length, max_new_tokens))
    torch.manual_seed(0)
    rows = rows_of(data, user)
    if phase in ("train", "train-lora"):
        result = train(model_dir, rows, steps, batch, max_length, lora=phase == "train-lora")
        result["base"] = BASE
    else:
        result = generate(model_dir, rows, steps, batch, max_new_tokens)
    # Totals, and the mean tokens of a repetition over its median time (as bapo bench).
    timed = result.pop("timed")
    tokens = sum(t for _, t in timed)
    result.update(
        phase=phase,
        backend=backend_name(),

        timed_steps=len(timed),
        seconds=sum(s for s, _ in timed),
        tokens=round(tokens),
        tokens_per_second=tokens / len(timed) / max(statistics.median(s for s, _ in timed), 1e-9),
        peak_rss_mib=peak_rss_mib(),
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
