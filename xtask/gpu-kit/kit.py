"""The GPU check kit's helpers (run.sh calls them; standard library only, plus torch for
`device`).

  kit.py device BAPO OUT.json               the machine: GPU, driver, torch, packages, bapo
  kit.py expect-refusal BAPO BACKEND TEXT   `bapo train` on BACKEND with no GPU visible must
                                            exit 1 with a message containing TEXT, no panic
  kit.py agreement OUT.json WORK B0 B1 …    every step's loss of WORK/tiny-B against B0's,
                                            and the final evaluation's metrics (relative)
  kit.py labelled NAME SAMPLES < JSON       the benchmark result JSON with its NAME and, when
                                            SAMPLES (nvidia-smi's memory.used, MiB, one a
                                            line) has any, their largest as peak_gpu_mib
  kit.py summary OUT                        OUT/summary.md from results.jsonl, agreement.json,
                                            device.json
"""

import json
import math
import os
import platform
import subprocess
import sys

TOLERANCE = 1e-4


def run(command, **kwargs):
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, **kwargs)
        return done.stdout.strip() if done.returncode == 0 else f"(exit {done.returncode}) {done.stderr.strip()[-500:]}"
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"({error})"


def device(bapo, out):
    info = {
        "host": platform.node(),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "bapo": run([bapo, "--version"]),
        "nvidia_smi": run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm", "--format=csv,noheader"]
        ),
        "vulkan_driver_files": os.environ.get("VK_DRIVER_FILES", ""),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_cuda"] = torch.version.cuda
        info["cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            info["torch_device"] = torch.cuda.get_device_name()
    except Exception as error:  # noqa: BLE001 - the report says what failed
        info["torch"] = f"({error})"
    packages = ["transformers", "trl", "datasets", "accelerate", "tokenizers", "pyarrow", "numpy"]
    versions = {}
    for name in packages:
        try:
            from importlib.metadata import version

            versions[name] = version(name)
        except Exception:  # noqa: BLE001
            versions[name] = None
    info["packages"] = versions
    with open(out, "w") as f:
        json.dump(info, f, indent=2)
    print(json.dumps(info, indent=2))


def expect_refusal(bapo, backend, text):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", VK_DRIVER_FILES="/nonexistent/icd.json",
               __EGL_VENDOR_LIBRARY_FILENAMES="/nonexistent/egl.json")
    done = subprocess.run(
        [bapo, "train", "--config", "configs/tiny.toml", "--set", f'training.backend="{backend}"',
         "--set", f'output.dir="/tmp/bapo-kit-refusal-{backend}"', "--quiet"],
        capture_output=True, text=True, env=env, timeout=60,
    )
    print(done.stderr)
    if done.returncode != 1 or text not in done.stderr or "panicked" in done.stderr:
        sys.exit(f"expected exit 1 with `{text}`, got exit {done.returncode}")


def losses(path):
    with open(path) as f:
        return [json.loads(line).get("loss") for line in f if line.strip()]


def last_evaluation(path):
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    # Numbers, and nulls (a non-finite value written as JSON null), which then fail the check.
    return {k: v for k, v in rows[-1].items() if k != "step" and (v is None or isinstance(v, (int, float)))}


def agreement(out, work, backends):
    # A backend whose run failed is reported missing (and fails the check); the rest compare.
    missing = [b for b in backends if not os.path.exists(os.path.join(work, f"tiny-{b}", "eval.jsonl"))]
    backends = [b for b in backends if b not in missing]
    if not backends:
        sys.exit("no tiny run finished")
    base, others = backends[0], backends[1:]
    curves = {b: losses(os.path.join(work, f"tiny-{b}", "metrics.jsonl")) for b in backends}
    evaluations = {b: last_evaluation(os.path.join(work, f"tiny-{b}", "eval.jsonl")) for b in backends}
    result = {"reference": base, "tolerance": TOLERANCE, "steps": len(curves[base]), "losses": curves,
              "missing": missing}
    ok = not missing
    def finite(x):
        return isinstance(x, (int, float)) and math.isfinite(x)

    for b in others:
        if len(curves[b]) != len(curves[base]):
            ok = False
        # A missing or non-finite value is an infinite difference, never a pass.
        loss_difference = max(
            (abs(x - y) if finite(x) and finite(y) else math.inf for x, y in zip(curves[b], curves[base])),
            default=math.inf,
        )
        eval_difference, worst = 0.0, ""
        for name, reference in evaluations[base].items():
            value = evaluations[b].get(name)
            if finite(value) and finite(reference):
                difference = abs(value - reference) / max(abs(reference), 1.0)
            else:
                difference = math.inf
            if difference > eval_difference:
                eval_difference, worst = difference, f"{name}: {value} vs {reference}"
        result[b] = {
            "largest_loss_difference": loss_difference,
            "largest_relative_eval_difference": eval_difference,
            "worst_eval_metric": worst,
            "eval_metrics": len(evaluations[base]),
        }
        ok = ok and loss_difference <= TOLERANCE and eval_difference <= TOLERANCE
    result["agree"] = ok
    with open(out, "w") as f:
        json.dump(result, f, indent=2)
    print("step " + " ".join(f"{b:>12}" for b in backends))
    for i in range(len(curves[base])):
        print(f"{i + 1:>4} " + " ".join(f"{curves[b][i]:>12.7f}" if i < len(curves[b]) and finite(curves[b][i])
                                        else f"{str(curves[b][i] if i < len(curves[b]) else ''):>12}" for b in backends))
    for b in others:
        print(f"{b}: largest loss difference from {base} {result[b]['largest_loss_difference']:.2e}, "
              f"final evaluation {result[b]['largest_relative_eval_difference']:.2e} relative")
    if not ok:
        sys.exit(f"the backends disagree beyond {TOLERANCE}")


def labelled(name, samples):
    result = json.loads(sys.stdin.read().strip().splitlines()[-1])
    result["label"] = name
    try:
        with open(samples) as f:
            used = [float(line) for line in f if line.strip().replace(".", "", 1).isdigit()]
        if used:
            result["peak_gpu_mib"] = max(used)
            result["gpu_samples"] = len(used)
    except OSError:
        pass
    print(json.dumps(result))


def peer_of(row):
    """The PyTorch/TRL row a bapo row is compared with: TRL's default (bf16 autocast +
    checkpointing) for bapo's bf16 rows, f32 for the rest. Labels are `<work>-<backend>` for
    bapo and `<work>-torch-<float32|default>` for the peer (run.sh)."""
    label, backend = row.get("label", ""), row.get("backend", "")
    if "-torch-" in label or not label.endswith("-" + backend):
        return None
    work = label[: -len(backend) - 1]
    if "-bf16" in work:
        return work.replace("-bf16", "") + "-torch-default"
    return work + "-torch-float32"


def summary(out):
    def load(name):
        try:
            with open(os.path.join(out, name)) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    lines = ["# GPU check kit: results", ""]
    info = load("device.json") or {}
    lines += [f"- GPU: {info.get('nvidia_smi', '?')}", f"- torch {info.get('torch', '?')} (CUDA {info.get('torch_cuda', '?')}); "
              f"packages {info.get('packages', {})}", f"- {info.get('bapo', '?')}", ""]
    agreed = load("agreement.json")
    if agreed:
        lines += [f"## Tiny BAPO run, {agreed['steps']} steps: difference from `{agreed['reference']}`", "",
                  "| backend | largest loss difference | final evaluation, largest relative difference |", "|---|---:|---:|"]
        for b, v in agreed.items():
            if isinstance(v, dict) and "largest_loss_difference" in v:
                lines.append(f"| {b} | {v['largest_loss_difference']:.2e} | {v['largest_relative_eval_difference']:.2e} |")
        lines += ["", f"Agree within {agreed['tolerance']}: {agreed['agree']}", ""]
    rows = []
    try:
        with open(os.path.join(out, "results.jsonl")) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError):
        pass
    lines += ["## Benchmarks: SmolLM2-135M's shape, and Qwen2.5-1.5B's (`big-`), random weights", "",
              "`-bf16` rows: bapo with `training.precision = \"bf16\"` and gradient checkpointing (at size also the "
              "LM head in chunks of 256, and LoRA's base in bf16); `-torch-default`: TRL's default (bf16 autocast + "
              "gradient checkpointing). Peak GPU memory: the most `nvidia-smi` saw in use while the process ran.", "",
              "| row | side | tokens/s (median step) | timed | seconds | peak RSS (MiB) | peak GPU memory (MiB) |",
              "|---|---|---:|---:|---:|---:|---:|"]
    nan = float("nan")
    for r in rows:
        lines.append(f"| {r.get('label', r.get('phase'))} | {r.get('backend')} | {r.get('tokens_per_second', nan):.1f} | "
                     f"{r.get('timed_steps')} | {r.get('seconds', nan):.2f} | {r.get('peak_rss_mib') or nan:.0f} | "
                     f"{r.get('peak_gpu_mib') or nan:.0f} |")
    lines.append("")
    by_label = {r.get("label"): r for r in rows}
    for r in rows:
        peer = by_label.get(peer_of(r))
        if peer and peer.get("tokens_per_second"):
            memory = ""
            if r.get("peak_gpu_mib") and peer.get("peak_gpu_mib"):
                memory = f", peak GPU memory {r['peak_gpu_mib'] / peer['peak_gpu_mib']:.2f}"
            lines.append(f"- {r['label']} / {peer['label']}: tokens/s {r['tokens_per_second'] / peer['tokens_per_second']:.2f}"
                         f"{memory}")
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def main():
    command, args = sys.argv[1], sys.argv[2:]
    if command == "device":
        device(*args)
    elif command == "expect-refusal":
        expect_refusal(*args)
    elif command == "agreement":
        agreement(args[0], args[1], args[2:])
    elif command == "labelled":
        labelled(*args)
    elif command == "summary":
        summary(*args)
    else:
        sys.exit(f"kit.py: unknown command {command}\n{__doc__}")


if __name__ == "__main__":
    main()
