"""The benchmark harness every bench/bench_<op>.py uses.

A run first measures this machine's roofs (fp32 and bf16 GEMM GFLOP/s, memory read and copy
GB/s over buffers larger than the last-level cache), then times gptcore and a named peer on the same inputs (min of repeats after warm-up, their
runs alternating), and prints one table: ratio = peer time / gptcore time (> 1 means gptcore
is faster), achieved GFLOP/s or GB/s, and that figure as a % of the roof of the row's dtype.
Absolute times on shared machines are noise; the ratio measured in the same run is the signal.
"""
import json
import os
import platform
import re
import subprocess
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch

from gptcore.cli import cpu_flags

RESULTS = Path(__file__).resolve().parent / "results"
KIND = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")


@dataclass
class Roofs:
    gemm_gflops: float   # fp32 2048^3 matmul
    bf16_gemm_gflops: float  # bf16 2048^3 matmul (oneDNN; AVX512_BF16 where the CPU has it)
    copy_gbs: float      # bytes copied per second (tensor size / time) by a large tensor copy
    read_gbs: float      # bytes read per second by a sum over a buffer twice the LLC: the roof
                         # of read-only streams (decode reads weights and KV cache, writes little)


@dataclass
class Row:
    op: str
    case: str
    ours_s: float                 # gptcore seconds (min of repeats)
    peer_s: float | None = None   # peer seconds on the same inputs
    peer: str = ""                # which peer, e.g. "sdpa", "hf-eager"
    flops: float | None = None    # useful FLOPs per call: reported as GFLOP/s vs the GEMM roof
    bytes: float | None = None    # bytes that must move per call: GB/s vs the `stream` roof
    note: str = ""
    stream: str = "copy"          # "read" when the bytes are only read (decode), else "copy"
    dtype: str = "fp32"           # which GEMM roof the GFLOP/s are compared with
    extra: dict = field(default_factory=dict)

    @property
    def ratio(self):
        return None if self.peer_s is None else self.peer_s / self.ours_s


# Seconds of timed calls after which a function stops repeating (None: no limit). `gptcore bench
# --quick` sets it so that a slow peer (transformers' bf16 on a CPU without AVX512_BF16 takes
# seconds a call) bounds a row's time: every function still gets one timed call after warm-up.
BUDGET_S = None


def _over_budget(spent):
    return BUDGET_S is not None and spent >= BUDGET_S


def time_fn(fn, *, warmup=2, repeat=5, min_time=0.0):
    """Min seconds of `fn()` over `repeat` runs after `warmup` runs; keeps repeating until
    the runs add up to `min_time` seconds (for very short calls). Under BUDGET_S, stops
    after the first run that brings the total past it."""
    for _ in range(warmup):
        fn()
    best, total, n = float("inf"), 0.0, 0
    while (n < repeat or total < min_time) and not (n and _over_budget(total)):
        start = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - start
        best, total, n = min(best, elapsed), total + elapsed, n + 1
    return best


def time_interleaved(fns, repeat=5):
    """{name: min seconds} of each fn in `fns`, one run of each in turn `repeat` times, so that
    all see the same load from other jobs on a shared machine (their ratios are what count).
    Under BUDGET_S a function whose calls have used it up sits out the remaining rounds."""
    best = {name: float("inf") for name in fns}
    spent = dict.fromkeys(fns, 0.0)
    for name, fn in fns.items():
        fn()  # warm-up
    for _ in range(repeat):
        for name, fn in fns.items():
            if best[name] < float("inf") and _over_budget(spent[name]):
                continue
            elapsed = time_fn(fn, warmup=0, repeat=1)
            best[name], spent[name] = min(best[name], elapsed), spent[name] + elapsed
    return best


def llc_bytes(cache_dir="/sys/devices/system/cpu/cpu0/cache"):
    """Size of the last-level cache (the highest level sysfs lists for cpu0), or None."""
    levels = {}
    for index in Path(cache_dir).glob("index*"):
        try:
            level = int((index / "level").read_text())
            size = (index / "size").read_text().strip()
        except (OSError, ValueError):
            continue
        units = {"K": 2**10, "M": 2**20, "G": 2**30}
        scale = units.get(size[-1:], 1)
        levels[level] = int(size.rstrip("KMG")) * scale
    return levels[max(levels)] if levels else None


def stream_bytes(llc=None, floor=256 * 2**20):
    """Bytes a bandwidth roof streams: twice the last-level cache (this machine's L3 is 480 MiB),
    so at most half of them can be cached between repeats; at least `floor`."""
    llc = llc_bytes() if llc is None else llc
    return max(2 * (llc or 0), floor)


def measure_roofs(size=2048, buffer_bytes=None):
    """This machine's fp32 and bf16 GEMM, read and copy roofs, measured now (a few seconds).
    The read roof sums a buffer of `buffer_bytes` (default stream_bytes()); the copy roof
    copies its first half into the second, so both walk a working set twice the LLC."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    gemm = time_fn(lambda: a @ b, warmup=1, repeat=5)
    ah, bh = a.bfloat16(), b.bfloat16()
    gemm_bf16 = time_fn(lambda: ah @ bh, warmup=1, repeat=5)
    buffer = torch.randn((buffer_bytes or stream_bytes()) // 4)  # written: no zero-page reads
    read = time_fn(lambda: buffer.sum(), warmup=1, repeat=5)
    src, dst = buffer[:buffer.numel() // 2], buffer[buffer.numel() // 2:]
    copy = time_fn(lambda: dst.copy_(src), warmup=1, repeat=5)
    return Roofs(gemm_gflops=2 * size**3 / gemm / 1e9,
                 bf16_gemm_gflops=2 * size**3 / gemm_bf16 / 1e9,
                 copy_gbs=src.numel() * 4 / copy / 1e9, read_gbs=buffer.numel() * 4 / read / 1e9)


def _isa():
    """The ISA level gptcore's C++ kernels run at (csrc/common/cpu_features.h)."""
    try:
        from gptcore import _C
    except ImportError:
        return "no C++ extension"
    return _C.isa()


def _fmt_time(s):
    return "-" if s is None else (f"{s * 1e3:.2f} ms" if s >= 1e-3 else f"{s * 1e6:.0f} us")


def achieved(r, roofs):
    """(achieved rate as text, % of its roof or None) of one row."""
    if r.flops is not None:
        rate = r.flops / r.ours_s / 1e9
        peak = roofs.bf16_gemm_gflops if r.dtype == "bf16" else roofs.gemm_gflops
        return f"{rate:.1f} GFLOP/s", 100 * rate / peak
    if r.bytes is not None:
        rate = r.bytes / r.ours_s / 1e9
        return f"{rate:.1f} GB/s", 100 * rate / (roofs.read_gbs if r.stream == "read"
                                                 else roofs.copy_gbs)
    return "-", None


def _cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module):
    try:
        return __import__(module).__version__
    except ImportError:
        return None


def _commit():
    """HEAD of the checkout bench/ lives in, "+dirty" when it has uncommitted changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def environment():
    """What a result depends on: code, library versions, CPU, threads, gptcore's build."""
    try:
        from gptcore import _C
        build = {k: v for k, v in dict(_C.build_info()).items()}
    except ImportError:
        build = None
    return {"commit": _commit(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "torch": torch.__version__, "transformers": _version("transformers"),
            "triton": _version("triton"), "cpu": _cpu_model(), "isa": cpu_flags(),
            "threads": torch.get_num_threads(), "load_avg": round(os.getloadavg()[0], 2),
            "build": build}


def results_path(kind, directory=RESULTS):
    """bench/results/<kind>-<UTC stamp>.json: a file's kind says which README block it feeds
    (bench/readme_tables.py), its stamp orders runs of the same kind."""
    if not KIND.fullmatch(kind):
        raise ValueError(f"kind: expected lower-case words joined by '-', got {kind!r}")
    Path(directory).mkdir(parents=True, exist_ok=True)
    return Path(directory) / f"{kind}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}.json"


def table(rows, roofs):
    """The report as text: one line per row."""
    head = (f"{'op':<12} {'case':<40} {'gptcore':>10} {'peer':>10} {'peer name':<16} "
            f"{'ratio':>7} {'achieved':>14} {'% roof':>7}")
    lines = [f"roofs: fp32 GEMM {roofs.gemm_gflops:.0f} GFLOP/s, bf16 GEMM "
             f"{roofs.bf16_gemm_gflops:.0f} GFLOP/s, read {roofs.read_gbs:.1f} GB/s, copy "
             f"{roofs.copy_gbs:.1f} GB/s "
             f"({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
             f"torch {torch.__version__}, gptcore ISA {_isa()})", head, "-" * len(head)]
    for r in rows:
        rate, roof = achieved(r, roofs)
        ratio = "-" if r.ratio is None else f"{r.ratio:.2f}x"
        pct = "-" if roof is None else f"{roof:.0f}%"
        lines.append(f"{r.op:<12} {r.case:<40} {_fmt_time(r.ours_s):>10} {_fmt_time(r.peer_s):>10} "
                     f"{r.peer:<16} {ratio:>7} {rate:>14} {pct:>7}"
                     + (f"  {r.note}" if r.note else ""))
    return "\n".join(lines)


def report(rows, roofs, json_path=None, env=None):
    """Prints the table and, if asked, writes it with the run's environment as JSON (the
    files README's tables are generated from: bench/readme_tables.py). `env` is environment()
    taken when the run started, so its load average is the other jobs', not the run's own."""
    print(table(rows, roofs))
    if json_path:
        out = []
        for r in rows:
            rate, roof = achieved(r, roofs)
            out.append(dict(asdict(r), ratio=r.ratio, achieved=rate, roof_pct=roof))
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        with open(json_path, "w") as f:
            json.dump({"environment": env or environment(), "roofs": asdict(roofs),
                       "rows": out}, f, indent=1)
        print(f"results written to {json_path}")


def main(run, description):
    """Command line for one bench file: `python bench/bench_<op>.py [--quick] [--json F]`.
    `run(quick) -> list[Row]` does the timing."""
    import argparse
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="small cases only (a few seconds)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args()
    env = environment()
    roofs = measure_roofs()
    report(run(args.quick), roofs, args.json, env)
