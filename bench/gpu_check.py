"""`make gpu-check`: the first thing to run on a machine with a CUDA GPU. One prepared script that
fits a 10-minute slot on one H100/H200 (`--quick`, or `make gpu-check QUICK=1`: 3 minutes):

  environment   GPU, driver, torch / triton / gptcore versions
  smoke         the Triton backend loads and one attention and one MoE call match gptcore.ref
  tests         the Triton suites compiled and run on CUDA tensors (GPTCORE_TEST_DEVICE=cuda)
  tests-tf32    the fp32 suites again under torch.set_float32_matmul_precision("high") (full)
  attention     timed against torch SDPA (flash backend) and FlexAttention at README's shapes
  moe           timed against a torch per-expert GEMM loop (and vLLM's fused_moe if installed)
  shakespeare   `gptcore train --preset shakespeare-char-gpu` on the GPU, 500 steps (full
                only): its JSON summary (val loss, tokens/s) is the stage's last output line

Each stage runs in its own process with its own time box, inside the whole run's budget: a stage
that fails, hangs or crashes the GPU context costs only its own results. The results file,
bench/results/gpu-check[-quick]-<UTC stamp>.json, is rewritten after every stage, so whatever
finished is on disk even if the run is killed.

    python bench/gpu_check.py [--quick] [--out FILE] [--only STAGE ...]
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TESTS = ["tests/test_attention_triton.py", "tests/test_moe_triton.py"]
# Fewer seconds than the box: a stage is skipped when less than this is left for it.
MIN_STAGE_S = 10


@dataclass
class Stage:
    name: str
    argv: list           # the command, run from the repository root
    box: float           # seconds it may take at most
    env: dict = None     # extra environment


def _python(*args):
    return [sys.executable, *args]


def stages(quick):
    """The stages of a run, in order, with their time boxes (10-minute or 3-minute run)."""
    bench = str(HERE / "gpu_check_bench.py")
    size = ["--quick"] if quick else []
    # quick: the dense attention and expert cases only, stopping at the first failure
    test_args = ["-q", "-x", "-k", "test_attention or test_experts_top_k"] if quick else ["-q"]
    cuda = {"GPTCORE_TEST_DEVICE": "cuda"}
    suites = TESTS if quick else TESTS + ["tests/test_triton_configs.py"]
    found = [
        Stage("environment", _python(bench, "environment"), 20 if quick else 30),
        Stage("smoke", _python(bench, "smoke"), 40 if quick else 60),
        Stage("tests", _python("-m", "pytest", *suites, *test_args), 60 if quick else 210, cuda),
        Stage("tests-tf32", _python("-m", "pytest", *TESTS, "-q", "-k", "not float16"), 90,
              dict(cuda, GPTCORE_TEST_FP32_PRECISION="high")),
        Stage("attention", _python(bench, "attention", *size), 25 if quick else 70),
        Stage("moe", _python(bench, "moe", *size), 25 if quick else 60),
        Stage("shakespeare", _python("-m", "gptcore", "train", "--preset", "shakespeare-char-gpu",
                                     "--device", "cuda", "--steps", "500", "--eval-every", "250",
                                     "--quiet", "--out", str(Path(tempfile.gettempdir()) /
                                                            "gpu-check-shakespeare")), 50),
    ]
    return [s for s in found if not (quick and s.name in ("tests-tf32", "shakespeare"))]


def _tail(text, limit=4000):
    return text[-limit:]


def run_stage(stage, seconds):
    """Runs one stage in its own process group for at most `seconds`; returns its record.
    The stage writes its result rows (a JSON list) to the file named by GPU_CHECK_ROWS."""
    with tempfile.TemporaryDirectory() as tmp:
        rows_file = Path(tmp) / "rows.json"
        env = dict(os.environ, **(stage.env or {}), GPU_CHECK_ROWS=str(rows_file))
        start = time.monotonic()
        proc = subprocess.Popen(stage.argv, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            output, _ = proc.communicate(timeout=seconds)
            status = "ok" if proc.returncode == 0 else "failed"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)     # the stage and anything it started
            output, _ = proc.communicate()
            status = "timeout"
        rows = []
        if rows_file.exists():
            try:
                rows = json.loads(rows_file.read_text())
            except json.JSONDecodeError as e:
                output += f"\nGPU_CHECK_ROWS: unreadable rows file: {e}"
    return {"name": stage.name, "status": status, "returncode": proc.returncode,
            "seconds": round(time.monotonic() - start, 1), "limit_s": round(seconds, 1),
            "command": stage.argv, "rows": rows, "output_tail": _tail(output)}


def write_results(path, record):
    """Writes the results file whole (a temporary file renamed over it: never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(path)


def run(stage_list, budget_s, out, header):
    """Runs the stages in order within `budget_s` seconds in all, rewriting `out` after each;
    returns the final record. A stage gets its box or what is left of the budget, whichever is
    less, and is skipped when that is under MIN_STAGE_S."""
    deadline = time.monotonic() + budget_s
    record = dict(header, stages=[], passed=False)
    write_results(out, record)
    for stage in stage_list:
        seconds = min(stage.box, deadline - time.monotonic())
        if seconds < MIN_STAGE_S:
            record["stages"].append({"name": stage.name, "status": "skipped",
                                     "output_tail": f"{max(seconds, 0):.0f} s left of the "
                                                    f"budget", "rows": []})
        else:
            print(f"gpu-check: {stage.name} (at most {seconds:.0f} s)", flush=True)
            result = run_stage(stage, seconds)
            print(f"gpu-check: {stage.name}: {result['status']} in {result['seconds']} s",
                  flush=True)
            if result["status"] != "ok":
                print(result["output_tail"][-1500:], flush=True)
            record["stages"].append(result)
        record["passed"] = all(s["status"] == "ok" for s in record["stages"])
        write_results(out, record)
    return record


def _commit():
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="The GPU check: gptcore's Triton suites and "
                                     "timings on one CUDA GPU, into one results file.")
    parser.add_argument("--quick", action="store_true",
                        help="the 3-minute version (fewer tests and shapes)")
    parser.add_argument("--out", help="results file (default bench/results/gpu-check[-quick]-"
                                      "<UTC stamp>.json)")
    parser.add_argument("--only", nargs="+", metavar="STAGE",
                        help="run only these stages: " + ", ".join(s.name for s in stages(False)))
    parser.add_argument("--budget", type=float, help="seconds for the whole run (default 570, "
                                                     "quick 170)")
    args = parser.parse_args(argv)
    known = {s.name for s in stages(False)}
    for name in args.only or []:
        if name not in known:
            parser.error(f"--only: expected one of {', '.join(sorted(known))}, got {name!r}")
    if args.budget is not None and args.budget <= 0:
        parser.error(f"--budget: expected a positive number of seconds, got {args.budget}")
    return args


def main(argv=None):
    args = parse_args(argv)
    kind = "gpu-check-quick" if args.quick else "gpu-check"
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    out = args.out or HERE / "results" / f"{kind}-{stamp}.json"
    chosen = [s for s in stages(args.quick) if not args.only or s.name in args.only]
    budget = args.budget or (170 if args.quick else 570)
    header = {"kind": kind, "commit": _commit(), "budget_s": budget,
              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    record = run(chosen, budget, out, header)
    print(f"gpu-check: results written to {out}; "
          + ("every stage passed" if record["passed"] else "NOT every stage passed"))
    return 0 if record["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
