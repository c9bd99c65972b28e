"""What every timing script shares: the machine it ran on, as data and as a header line, and its JSON output."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import torch

ASSETS = Path(os.environ.get("SHARED_ASSETS", Path(__file__).resolve().parents[2] / "shared" / "assets"))


def benchmark_parser(description: str | None, planetoid: bool = False) -> argparse.ArgumentParser:
    """The options every timing script has: ``--threads`` (and, for the Cora ones, ``--planetoid``)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    if planetoid:
        parser.add_argument("--planetoid", type=Path, default=ASSETS / "graphs" / "planetoid",
                            help="folder with the ind.cora.* files")
    return parser


def use_threads(threads: int) -> None:
    """Run torch on ``threads`` CPU threads (0 keeps torch's own choice)."""
    if threads:
        torch.set_num_threads(threads)


def machine() -> dict[str, Any]:
    """CPU model, core count, torch version and threads, GPU name: the header of every benchmark report."""
    lines = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "unknown")
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def machine_line(facts: dict[str, Any]) -> str:
    """``machine: CPU, N cores, torch V with T thread(s), GPU: ...``, the first line of a printed report."""
    return (f"machine: {facts['cpu']}, {facts['cores']} cores, torch {facts['torch']} with "
            f"{facts['torch_threads']} thread(s), GPU: {facts['gpu'] or 'none'}")


def write_json(path: Path, report: dict[str, Any]) -> None:
    """Write a report's numbers to ``path`` (``--out``), creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))


def publish(report: dict[str, Any], table: str, out: Path | None) -> dict[str, Any]:
    """Print ``table`` (the report as markdown) and, given ``--out``, write the report's numbers there; returns ``report``."""
    print(table)
    if out:
        write_json(out, report)
    return report
