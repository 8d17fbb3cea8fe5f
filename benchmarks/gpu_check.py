"""The GPU check in one command: the CUDA tests, the step-time and the training-step benchmarks on
CUDA, written to one JSON file with the card's name.

Made for a session that is lent a GPU for a few minutes: it runs each part with its own time
limit, keeps going when one part fails, and writes the JSON after every part, so a run cut short
still leaves what it measured.

    python benchmarks/gpu_check.py --out gpu_check.json               # everything, ~5 min on an H100
    python benchmarks/gpu_check.py --out gpu_check.json --parts tests

The JSON holds ``device`` (the card's name, driver and CUDA versions, torch's version) and, per
part, the command, its exit status, its wall seconds and its output (the benchmarks print their
tables; the tests print pytest's summary).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
PARTS = {
    "tests": [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", "tests"],
    "step_time": [sys.executable, str(ROOT / "benchmarks" / "step_time.py"), "--device", "cuda"],
    "step_time_additive": [sys.executable, str(ROOT / "benchmarks" / "step_time.py"), "--device", "cuda",
                           "--rule", "additive"],
    "train_step": [sys.executable, str(ROOT / "benchmarks" / "train_step.py"), "--device", "cuda"],
}


def device_record() -> dict:
    """What ran the check: the card, its driver and CUDA, torch, the host."""
    record = {"torch": torch.__version__, "cuda": torch.version.cuda, "host": platform.node(),
              "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        record["name"] = torch.cuda.get_device_name(0)
        record["capability"] = list(torch.cuda.get_device_capability(0))
        record["memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    try:
        record["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                          capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        record["driver"] = None
    return record


def write_atomically(path: Path, record: dict) -> None:
    """``record`` as JSON at ``path``, never half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as file:
        json.dump(record, file, indent=2)
    os.chmod(file.name, 0o644)
    os.replace(file.name, path)


def run_part(command: list[str], timeout: float) -> dict:
    """One part: its command, exit status (None when it ran out of time), wall seconds, output."""
    started = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        status, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as expired:
        status = None
        output = (expired.stdout or b"").decode(errors="replace") + (expired.stderr or b"").decode(errors="replace")
    return {"command": " ".join(command), "returncode": status, "wall_s": round(time.perf_counter() - started, 1),
            "output": output[-20000:]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"), help="the JSON to write")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, from {list(PARTS)}")
    parser.add_argument("--part-timeout", type=float, default=150.0, help="seconds each part may run (default 150)")
    args = parser.parse_args()
    parts = [part.strip() for part in args.parts.split(",") if part.strip()]
    unknown = [part for part in parts if part not in PARTS]
    if unknown or not parts:
        parser.error(f"--parts: unknown {unknown}, choose from {list(PARTS)}")
    if args.part_timeout <= 0:
        parser.error(f"--part-timeout must be > 0, got {args.part_timeout}")
    record = {"device": device_record(), "parts": {}}
    if not record["device"]["cuda_available"]:
        parser.exit(2, "error: no CUDA device is available (this check is for a GPU machine)\n")
    for part in parts:
        print(f"gpu_check: {part} ...", flush=True)
        record["parts"][part] = run_part(PARTS[part], args.part_timeout)
        write_atomically(args.out, record)
        print(f"gpu_check: {part}: exit {record['parts'][part]['returncode']}, "
              f"{record['parts'][part]['wall_s']} s", flush=True)
    print(f"gpu_check: wrote {args.out} ({record['device'].get('name')})")
    return 0 if all(p["returncode"] == 0 for p in record["parts"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
