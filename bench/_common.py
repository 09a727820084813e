"""What every benchmark prints with its figures: the machine, the thread count, and where the data is."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def find_shared() -> Path:
    """../shared beside the project (FACEREC_SHARED overrides); benchmarks need it."""
    from facerec.testing import find_shared as locate

    path = locate(PROJECT_ROOT)
    if path is None:
        sys.exit("bench: no ../shared/faces beside the project (or at FACEREC_SHARED); see ../shared/README.md")
    return path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def set_threads(threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    return {"threads": torch.get_num_threads(), "cpu": cpu_model(), "cores": os.cpu_count(), "torch": torch.__version__}


def print_table(title: str, rows: list[tuple[str, str]], machine: dict) -> None:
    print(f"{title}  ({machine['cpu']}, {machine['threads']} torch threads, {machine['cores']} cores)")
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")


def print_json(name: str, figures: dict, machine: dict) -> None:
    print(json.dumps({"bench": name, **figures, "machine": machine}))
