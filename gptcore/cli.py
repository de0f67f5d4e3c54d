"""The `gptcore` command line (also `python -m gptcore`): info, bench, train, sample."""
import argparse
import importlib.util
import json
import platform
import sys
from pathlib import Path

import torch

import gptcore


def cpu_flags():
    """The SIMD features this CPU reports (Linux /proc/cpuinfo), of those our kernels care about."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines()
                  if line.startswith("flags")), [])
    return [f for f in ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl",
                        "avx512_vnni", "avx512_bf16", "amx_tile") if f in flags]


def _versions():
    triton = importlib.util.find_spec("triton")
    triton_version = "not installed"
    if triton is not None:
        import triton as triton_module
        triton_version = triton_module.__version__
    return {"gptcore": gptcore.__version__, "torch": torch.__version__, "triton": triton_version,
            "python": platform.python_version()}


def info(args):
    backends = gptcore.available_backends()
    build = {}
    if backends["cpp"]:
        from gptcore import _C
        build = dict(_C.build_info())
    report = {"versions": _versions(), "backends": backends, "build": build,
              "cpu": {"machine": platform.machine(), "features": cpu_flags(),
                      "threads": torch.get_num_threads()},
              "cuda": torch.cuda.is_available()}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"gptcore {report['versions']['gptcore']}  (torch {torch.__version__}, "
          f"triton {report['versions']['triton']}, python {platform.python_version()})")
    print("backends: " + ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in backends.items()))
    if build:
        paths = build.pop("paths", {})
        print("build:    " + ", ".join(f"{k}={v}" for k, v in build.items()))
        for op, path in paths.items():
            print(f"  {op + ':':<19} {path}")
    else:
        print("build:    the C++ extension is not built (pip install --no-build-isolation -e .)")
    print(f"cpu:      {platform.machine()}, {torch.get_num_threads()} threads, features: "
          f"{' '.join(report['cpu']['features']) or 'unknown'}")
    print(f"cuda:     {'available' if report['cuda'] else 'no device'}")
    return 0


QUICK_BUDGET_S = 2.0   # per function and row in `bench --quick` (bench/harness.py BUDGET_S)


def _bench_dir():
    """bench/ next to the package (source checkout or editable install), else ./bench."""
    for candidate in (Path(gptcore.__file__).resolve().parent.parent / "bench", Path.cwd() / "bench"):
        if (candidate / "harness.py").exists():
            return candidate
    return None


def bench(args):
    from tqdm import tqdm
    directory = _bench_dir()
    if directory is None:
        print("gptcore bench: no bench/ directory found; run it from a gptcore source checkout.",
              file=sys.stderr)
        return 2
    sys.path.insert(0, str(directory))
    import harness
    if args.quick:
        harness.BUDGET_S = QUICK_BUDGET_S
    files = sorted(directory.glob("bench_*.py"))
    if args.only:
        files = [f for f in files if f.stem.removeprefix("bench_") in args.only]
    if not files:
        print(f"gptcore bench: nothing matches --only {args.only}", file=sys.stderr)
        return 2
    print("measuring this machine's roofs ...", file=sys.stderr)
    env = harness.environment()            # at the start: the load average is the other jobs'
    roofs = harness.measure_roofs()
    rows = []
    for path in tqdm(files, desc="benchmarks", unit="file", file=sys.stderr):
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module      # by name, as spawned workers (bench_parallel) import it
        spec.loader.exec_module(module)
        rows += module.run(quick=args.quick)
    json_path = args.json
    if json_path is None and not args.quick and not args.no_save:
        json_path = harness.results_path("-".join(f.stem.removeprefix("bench_") for f in files))
    harness.report(rows, roofs, json_path, env)
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="gptcore", description="gptcore: fused attention and MoE kernels for PyTorch.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("info", help="backends, build flags, CPU features, versions")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=info)
    p = sub.add_parser("bench", help="run the benchmarks in bench/ and print one table",
                       description="Times gptcore against its peers (torch SDPA, Hugging Face "
                       "MoE blocks, plain PyTorch) in one run; ratio > 1 means gptcore is faster.")
    p.add_argument("--quick", action="store_true",
                   help="small cases only, each function timed for at most about "
                        f"{QUICK_BUDGET_S:.0f} s a row (about two minutes in all)")
    p.add_argument("--only", nargs="+", metavar="OP",
                   help="only these bench files, e.g. --only attention moe")
    p.add_argument("--json", metavar="FILE",
                   help="write the results (with commit, versions, CPU, roofs) to FILE; a full "
                        "run writes bench/results/<files>-<UTC time>.json by default, e.g. "
                        "attention-moe-20261201-081201.json")
    p.add_argument("--no-save", action="store_true", help="do not write a results file")
    p.set_defaults(func=bench)
    from gptcore.training import cli as cli_model
    cli_model.add_commands(sub)
    from gptcore.multimodal import cli as cli_multimodal
    cli_multimodal.add_command(sub)
    from gptcore.diffusion import cli as cli_diffusion
    cli_diffusion.add_command(sub)
    from gptcore.embed import cli as cli_embed
    cli_embed.add_command(sub)
    from gptcore.export import cli as cli_export
    cli_export.add_command(sub)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError) as err:       # bad input found deep inside: one line
        print(f"gptcore {args.command}: {err}", file=sys.stderr)
        return 2
    except OSError as err:                       # disk full, permissions: one line
        print(f"gptcore {args.command}: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"gptcore {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
