"""Reads a bapo run's TensorBoard event files with TensorBoard's own reader and compares every
scalar with the run's JSON logs: `train/<key>` with metrics.jsonl, `eval/<key>` with eval.jsonl
(the tags TRL's TensorBoard logging uses). Values are stored as f32, so they must agree to f32
precision. Usage: check_tensorboard.py RUN_DIR
"""

import json
import math
import sys
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def json_rows(path):
    rows = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        step = row.pop("step")
        rows[step] = {k: v for k, v in row.items() if isinstance(v, (int, float))}
    return rows


def main(run):
    accumulator = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    accumulator.Reload()
    tags = accumulator.Tags()["scalars"]
    expected = {"train": json_rows(run / "metrics.jsonl"), "eval": json_rows(run / "eval.jsonl")}
    compared = 0
    for prefix, rows in expected.items():
        for step, row in rows.items():
            for key, value in row.items():
                if not math.isfinite(value):
                    continue
                tag = f"{prefix}/{key}"
                if tag not in tags:
                    sys.exit(f"{run}: tag {tag} is not in the event files (tags: {sorted(tags)})")
                events = [e for e in accumulator.Scalars(tag) if e.step == step]
                if len(events) != 1:
                    sys.exit(f"{run}: {tag} has {len(events)} events at step {step}, expected 1")
                got = events[0].value
                if not math.isclose(got, value, rel_tol=1e-6, abs_tol=1e-30):
                    sys.exit(f"{run}: {tag} at step {step} is {got}, the JSON log says {value}")
                compared += 1
    extra = [t for t in tags if t.split("/", 1)[0] not in expected]
    if extra:
        sys.exit(f"{run}: unexpected tags {extra}")
    if compared == 0:
        sys.exit(f"{run}: nothing to compare")
    print(f"tensorboard: {compared} scalars of {run} read back by TensorBoard, equal to the JSON logs")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
