"""A camera-sized photo through ``scripts/photo_to_mesh.py``: time and peak memory against a 1024 px one, and Ctrl-C.

    python -m benchmarks.big_photo --out outputs/big_photo.json             # 64 MP JPEG vs ffhq_00009.png, 2 rounds
    python -m benchmarks.big_photo --megapixels 24 --rounds 3 --uv-size 512

The big photo is made from ``faces/ffhq_00009.png`` (1024 px): the face scaled to the frame's height and the
sides filled with its mirror image, saved as a 4:3 JPEG of ``--megapixels`` (64 MP: 9237 x 6928, a DSLR's frame).
Both photos run as users run them, the script in a child process (``OMP_NUM_THREADS`` = ``--threads``), in
alternating rounds so that load from other processes falls on both alike; each child's wall time, CPU time
(user + system) and peak resident memory come from ``/usr/bin/time -v``. The table gives the medians and the big photo's ratios to the 1024 px photo (the target: at most
2x). A last run of the big photo is interrupted (SIGINT, as Ctrl-C) a few seconds into its texture fusion:
how long it takes to exit, its exit code and whether anything was left in the output's folder.

Photos and weights come from ``../shared/assets`` (or ``$SHARED_ASSETS``, or ``--assets``).
"""
from __future__ import annotations

import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from benchmarks.machine import ASSETS, benchmark_parser, machine, machine_line, publish

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "scripts" / "photo_to_mesh.py"
SOURCE = "faces/ffhq_00009.png"
INTERRUPT_STAGE, INTERRUPT_AFTER = "fuse texture", 3.0


def make_big_photo(source: Path, path: Path, megapixels: float) -> tuple[int, int]:
    """Write a 4:3 JPEG of about ``megapixels`` at ``path``: ``source`` scaled to its height, mirrored at the sides."""
    height = int(round(math.sqrt(megapixels * 1e6 * 3 / 4)))
    width = int(round(height * 4 / 3))
    face = np.asarray(Image.open(source).convert("RGB").resize((height, height), Image.Resampling.BICUBIC))
    left, right = (width - height) // 2, width - height - (width - height) // 2
    frame = np.concatenate([face[:, :left][:, ::-1], face, face[:, face.shape[1] - right:][:, ::-1]], axis=1)
    Image.fromarray(frame).save(path, quality=92)
    return width, height


TIME = Path("/usr/bin/time")  # GNU time: -v reports a child's peak RSS, user and system time
TIME_FIELDS = {"User time (seconds)": "user_s", "System time (seconds)": "system_s",
               "Maximum resident set size (kbytes)": "peak_rss_kib"}


def terminal_ctrl_c() -> None:
    """In the child: Ctrl-C as in a terminal, also when this script runs as a background job (which a shell starts
    with SIGINT ignored, and a Python started so ignores it too)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_child(command: list[str], env: dict[str, str], interrupt: tuple[str, float] | None = None) -> dict[str, Any]:
    """Run ``command`` under ``/usr/bin/time -v``: its wall and CPU seconds, peak RSS (bytes) and exit code.

    (Python's own ``os.wait4`` would report the peak of this process too: a child made by ``vfork`` + ``exec`` keeps
    its parent's high-water mark in ``ru_maxrss``; ``time``, small itself, forks the command.) With
    ``interrupt = (text, seconds)`` the command runs alone (no ``time``) and SIGINT goes to its process group, as a
    terminal's Ctrl-C does, ``seconds`` after ``text`` first appears on its stderr: its wall time, exit code and
    ``interrupt_to_exit_s``, how long it then took to exit.
    """
    if not TIME.is_file():
        raise FileNotFoundError(f"{TIME} (GNU time) is needed to read a child's peak memory; install the 'time' package")
    started = time.perf_counter()
    timed = [] if interrupt is not None else [str(TIME), "-v"]
    child = subprocess.Popen([*timed, *command], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             start_new_session=True, preexec_fn=terminal_ctrl_c)
    seen, text, sent = threading.Event(), [""], [math.nan]

    def read_stderr() -> None:  # also keeps the pipe drained
        assert child.stderr is not None
        while chunk := child.stderr.read1(4096):  # type: ignore[attr-defined]
            text[0] += chunk.decode(errors="replace")
            if interrupt is not None and interrupt[0] in text[0]:
                seen.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    if interrupt is not None and seen.wait(3600):
        time.sleep(interrupt[1])
        sent[0] = time.perf_counter()
        os.killpg(child.pid, signal.SIGINT)
    child.wait()
    ended = time.perf_counter()
    reader.join(5)
    fields = {key: float(line.split(": ", 1)[1]) for line in text[0].splitlines()
              for label, key in TIME_FIELDS.items() if line.strip().startswith(label)}
    if not timed:
        return {"wall_s": ended - started, "returncode": child.returncode, "interrupt_to_exit_s": ended - sent[0],
                "stderr_tail": text[0][-600:]}
    returncode = next((int(line.split()[-1]) for line in text[0].splitlines() if "Command exited with non-zero status"
                       in line), child.returncode)
    return {"wall_s": ended - started, "cpu_s": fields["user_s"] + fields["system_s"],
            "peak_rss_bytes": int(fields["peak_rss_kib"] * 1024), "returncode": returncode,
            "stderr_tail": text[0][-600:]}


def photo_command(photo: Path, out: Path, assets: Path, uv_size: int, max_side: int | None) -> list[str]:
    extra = [] if max_side is None else ["--max-side", str(max_side)]
    return [sys.executable, str(SCRIPT), "--image", str(photo), "--out", str(out), "--assets", str(assets),
            "--uv-size", str(uv_size), *extra]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = benchmark_parser(__doc__.split("\n")[0])
    parser.add_argument("--assets", type=Path, default=ASSETS, help="folder laid out like shared/assets")
    parser.add_argument("--megapixels", type=float, default=64.0, help="size of the big photo")
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs of each photo")
    parser.add_argument("--uv-size", type=int, default=1024, help="texture side, as photo_to_mesh.py --uv-size")
    parser.add_argument("--max-side", type=int, default=None,
                        help="photo_to_mesh.py --max-side (default: its own, 2048); 0 keeps the photo's size")
    parser.add_argument("--out", type=Path, default=None, help="write the numbers as JSON here")
    args = parser.parse_args(argv)
    if not (args.assets / SOURCE).is_file():
        print(f"no {SOURCE} under {args.assets}: pass --assets (a folder laid out like shared/assets)")
        return {}
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads or os.cpu_count())}
    facts = {**machine(), "torch_threads": args.threads or os.cpu_count()}  # the children's
    runs: dict[str, list[dict[str, Any]]] = {"1024 px": [], "big": []}
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        big = work / "big.jpg"
        width, height = make_big_photo(args.assets / SOURCE, big, args.megapixels)
        photos = {"1024 px": args.assets / SOURCE, "big": big}
        run_child(photo_command(photos["1024 px"], work / "warm_up", args.assets, 256, args.max_side), env)  # untimed:
        # builds the C++ rasteriser if this machine has not yet (its compiler's time would count as the child's)
        for index in range(args.rounds):
            for name, photo in photos.items():
                runs[name].append(run_child(photo_command(photo, work / f"{name}_{index}", args.assets, args.uv_size,
                                                          args.max_side),
                                            env))
                if runs[name][-1]["returncode"] != 0:
                    raise RuntimeError(f"photo_to_mesh.py failed on {photo}: {runs[name][-1]['stderr_tail']}")
        interrupted = work / "interrupted"
        stop = run_child(photo_command(big, interrupted, args.assets, args.uv_size, args.max_side), env,
                         (INTERRUPT_STAGE, INTERRUPT_AFTER))
        stop["left_behind"] = sorted(p.name for p in work.iterdir() if p.name.startswith((".interrupted", "interrupted")))
        stop["said"] = next((line for line in stop["stderr_tail"].splitlines() if line.startswith("interrupted")), None)
    rows = {name: {key: statistics.median(run[key] for run in runs[name]) for key in ("wall_s", "cpu_s", "peak_rss_bytes")}
            for name in runs}
    report = {"machine": facts, "big_photo": [width, height], "uv_size": args.uv_size, "max_side": args.max_side,
              "rounds": runs, "median": rows,
              "ratio": {key: rows["big"][key] / rows["1024 px"][key] for key in rows["big"]}, "interrupt": stop}
    lines = [machine_line(facts), "",
             f"photo -> mesh, UV {args.uv_size}, --max-side {'default (2048)' if args.max_side is None else args.max_side}, medians of "
             f"{args.rounds} alternating rounds (one child process each)",
             "", "| photo | pixels | wall s | CPU s | peak RSS MiB |", "| --- | ---: | ---: | ---: | ---: |"]
    for name, pixels in (("1024 px", "1024 x 1024"), ("big", f"{width} x {height}")):
        row = rows[name]
        lines.append(f"| {name} | {pixels} | {row['wall_s']:.1f} | {row['cpu_s']:.1f} | "
                     f"{row['peak_rss_bytes'] / 2**20:.0f} |")
    ratio = report["ratio"]
    lines.append(f"| big / 1024 px | {width * height / 1024**2:.1f}x | {ratio['wall_s']:.2f}x | {ratio['cpu_s']:.2f}x | "
                 f"{ratio['peak_rss_bytes']:.2f}x |")
    lines += ["", f"Ctrl-C {INTERRUPT_AFTER:.0f} s into '{INTERRUPT_STAGE}' on the big photo: exited "
              f"{stop['interrupt_to_exit_s']:.2f} s later with code {stop['returncode']}, saying {stop['said']!r}; "
              f"left behind: {stop['left_behind'] or 'nothing'}"]
    return publish(report, "\n".join(lines), args.out)


if __name__ == "__main__":
    main()
