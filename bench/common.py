"""Helpers for the bench sections: timing, percentiles, tables, peak memory, child processes."""

from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from meshpos.core.errors import MeshposError

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = Path(__file__).resolve().parent / "out"
_T0 = time.perf_counter()


class BenchError(MeshposError):
    """A bench step could not run or produced a result that cannot be trusted."""


def log(message: str) -> None:
    """A progress line on stderr, stamped with seconds since the bench started."""
    print(f"[{time.perf_counter() - _T0:7.1f}s] {message}", file=sys.stderr, flush=True)


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100) with linear interpolation between closest ranks (numpy's
    default), so p99 of 2,000 samples sits between the 20th and 21st largest."""
    if not values:
        raise BenchError("percentile of no samples")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    lo, hi = math.floor(rank), math.ceil(rank)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


def peak_rss_mb() -> float:
    """This process's peak resident set size, in MiB.

    Linux's VmHWM, not getrusage's ru_maxrss: a child started by subprocess (vfork + exec) inherits
    its parent's ru_maxrss, so a lean child of a fat bench would report the bench's peak."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_average() -> float | None:
    """The 1-minute load average: other work on this machine skews every figure."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def storage_of(path: Path) -> dict[str, str | None]:
    """The filesystem and disk that hold `path` (from /proc/mounts and /sys/block): fsync-bound
    figures mean little without them."""
    out: dict[str, str | None] = {"mount": None, "filesystem": None, "device": None, "disk": None}
    try:
        target = path.resolve()
        best = ""
        with open("/proc/mounts") as fh:
            for line in fh:
                device, mount, fstype, *_ = line.split()
                if target.is_relative_to(mount) and len(mount) >= len(best):
                    best = mount
                    out.update(mount=mount, filesystem=fstype, device=device)
        name = Path(out["device"] or "").name.rstrip("0123456789")
        for base in (Path("/sys/block", name), Path("/sys/block", name.removesuffix("p"))):
            if not base.exists():
                continue
            model = base / "device" / "model"
            driver = (base / "device" / "driver").resolve().name
            what = model.read_text().strip() if model.exists() else f"{driver} device"
            rotational = (base / "queue" / "rotational").read_text().strip() == "1"
            gib = int((base / "size").read_text()) * 512 / 2**30
            out["disk"] = (
                f"{what}, {gib:,.0f} GiB, reported {'rotating' if rotational else 'solid-state'}"
            )
            break
    except OSError:
        pass
    return out


class Stopwatch:
    """Accumulates wall time, and this process's CPU time, over several `with sw:` blocks.

    CPU time is what the work costs when other processes compete for the cores; wall time is
    what a user waits."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.cpu = 0.0
        self._start = self._cpu_start = 0.0

    def __enter__(self) -> Stopwatch:
        self._start = time.perf_counter()
        self._cpu_start = time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds += time.perf_counter() - self._start
        self.cpu += time.process_time() - self._cpu_start


@contextmanager
def timed(label: str) -> Iterator[Stopwatch]:
    """Time a phase and log its duration when it ends."""
    sw = Stopwatch()
    with sw:
        yield sw
    log(f"{label}: {sw.seconds:.1f} s")


def rate(count: float, seconds: float) -> float | None:
    return count / seconds if seconds > 0 else None


def fmt(value: Any, spec: str = ",.0f") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, int | float):
        return format(value, spec)
    return str(value)


def table(
    title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]], notes: Sequence[str] = ()
) -> str:
    """A plain-text table: first column left-aligned, the others right-aligned."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        parts = [
            row[i].ljust(widths[i]) if i == 0 else row[i].rjust(widths[i])
            for i in range(len(headers))
        ]
        return "  ".join(parts).rstrip()

    rule = "-" * len(line(cells[0]))
    out = [f"== {title}", line(cells[0]), rule, *(line(r) for r in cells[1:])]
    out += [f"  {n}" for n in notes]
    return "\n".join(out)


def run_child(module: str, args: Sequence[str], timeout: float = 3600) -> dict[str, Any]:
    """Run `python -m module args...` in a fresh interpreter (so its peak RSS is its own) and
    return the JSON object it prints as its last line of stdout. Its stderr passes through."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=timeout,
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise BenchError(
            f"child `{module} {' '.join(args)}` failed with exit code {proc.returncode}"
        )
    result = json.loads(lines[-1])
    if not isinstance(result, dict):
        raise BenchError(f"child `{module}` printed {lines[-1][:80]!r}, not a JSON object")
    return result


# Debian's Chromium, headless, as the browser tests, the web bench and the screenshots launch it:
# nothing may reach the network from this machine, so every background service is switched off.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def chromium(width: int = 1280, height: int = 860) -> Iterator[Any]:
    """A Playwright browser context of Debian's Chromium with a throwaway profile: how the browser
    tests, the screenshots and the web bench start it (Playwright is imported here, when used)."""
    import shutil
    import tempfile

    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="meshpos-chromium-")
    try:
        with sync_playwright() as p:
            context = p.chromium.launch_persistent_context(
                profile,
                executable_path=str(CHROMIUM),
                headless=True,
                args=CHROMIUM_ARGS,
                viewport={"width": width, "height": height},
            )
            try:
                yield context
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def screenshot_dir(default: Path) -> Path:
    """Where browser tests put screenshots: $MESHPOS_SCREENSHOTS (docs/screenshots to refresh the
    docs), else `default`."""
    shots = Path(os.environ.get("MESHPOS_SCREENSHOTS") or default)
    shots.mkdir(parents=True, exist_ok=True)
    return shots
