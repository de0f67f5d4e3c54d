"""Run a command and keep what it printed as a results file, so a README figure that comes from
a training run or a demo (not from a bench/bench_*.py table) traces to a committed file too.

    python bench/record.py train-names -- gptcore train --preset names --time-budget 120 --cpu-time
    python bench/record.py embed -- gptcore embed-demo --cpu-time

writes bench/results/<kind>-<UTC stamp>.json with the command, its exit status and wall time,
the environment (commit, versions, CPU, load average; bench/harness.py), everything it
printed to stdout, and its last stdout line parsed as JSON when it is one (gptcore's commands
end with a JSON summary). stdout and stderr still reach the terminal as the command runs.
bench/readme_tables.py turns these files into README's blocks.
"""
import argparse
import json
import subprocess
import sys
import time

from harness import RESULTS, environment, results_path


def last_json(stdout):
    """The last non-empty stdout line as a JSON object, or None if it is not one."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    if not lines:
        return None
    try:
        value = json.loads(lines[-1])
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def record(kind, command, directory=RESULTS):
    """Runs `command` (a list), echoing its output, and writes its results file; returns
    (exit status, path)."""
    env = environment()             # before the run: the load average is the other jobs'
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, bufsize=1)
    captured = []
    for line in proc.stdout:
        sys.stdout.write(line)
        captured.append(line)
    status = proc.wait()
    stdout = "".join(captured)
    path = results_path(kind, directory)
    path.write_text(json.dumps({
        "kind": kind, "command": command, "returncode": status,
        "wall_s": round(time.perf_counter() - start, 1), "environment": env,
        "stdout": stdout, "result": last_json(stdout)}, indent=1) + "\n")
    return status, path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", help="the results file's name before its time stamp, "
                                     "e.g. train-names")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("command: expected a command after --, got nothing")
    status, path = record(args.kind, command)
    print(f"results written to {path}" + (f" (the command exited {status})" if status else ""),
          file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
