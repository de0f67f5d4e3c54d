"""Ahead-of-time compile check of every Triton kernel for sm_80 and sm_90, no GPU needed:
`python -m gptcore.kernels.aot`. Each kernel module lists its GPU configs in `aot_specs()`;
each is compiled with triton.compile(ASTSource(...), target=GPUTarget("cuda", arch, 32)) and
its cubin read with the wheel's cuobjdump. Exits non-zero on a register spill or on shared
memory above the architecture's per-block limit.
"""
import argparse
import importlib
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

# Compiling needs real @triton.jit functions, not the interpreter's: decided at import time.
os.environ.pop("TRITON_INTERPRET", None)

MODULES = ("gptcore.kernels.attention", "gptcore.kernels.moe")
ARCHS = (80, 90)
SMEM_LIMIT = {80: 163 * 1024, 90: 227 * 1024}    # max dynamic shared memory per block
MMA = {80: "mma.sync", 90: "wgmma"}


def specs():
    """(module name, index, spec) of every kernel config of the kernel modules present."""
    found = []
    for name in MODULES:
        if importlib.util.find_spec(name) is None:
            continue
        module = importlib.import_module(name)
        if hasattr(module, "aot_specs"):
            found += [(name, i, s) for i, s in enumerate(module.aot_specs())]
    return found


def _cuobjdump():
    import triton
    return Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"


def compile_one(module_name, index, arch):
    """Compiles spec `index` of `module_name` for sm_`arch`; returns its resource report."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    spec = importlib.import_module(module_name).aot_specs()[index]
    src = ASTSource(spec["fn"], **specialize(spec))
    kernel = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                            options={"num_warps": spec["num_warps"],
                                     "num_stages": spec["num_stages"]})
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp) / "kernel.cubin"
        cubin.write_bytes(kernel.asm["cubin"])
        usage = subprocess.run([str(_cuobjdump()), "--dump-resource-usage", str(cubin)],
                               capture_output=True, text=True, check=True).stdout
    fields = {k: int(v) for k, v in re.findall(r"\b(REG|STACK|LOCAL|SHARED):(\d+)", usage)}
    return {"name": spec["name"], "arch": arch, "regs": fields.get("REG", -1),
            "spill": fields.get("STACK", 0) + fields.get("LOCAL", 0),
            "shared": kernel.metadata.shared + fields.get("SHARED", 0),
            "mma": MMA[arch] in kernel.asm["ptx"]}


def specialize(spec):
    """signature, constexprs and attrs as a launch would specialise them: torch's pointers are
    16-byte aligned; the spec's optional "hints" name int arguments that are multiples of 16
    (hint 16) or equal to 1 (hint 1, compiled as a constant, as triton's JIT does), and its
    optional "attrs" are passed on as they are."""
    signature, constexprs = dict(spec["signature"]), dict(spec["constexprs"])
    hints = {name: 16 for name, kind in signature.items() if kind.startswith("*")}
    hints.update(spec.get("hints", {}))
    names = spec["fn"].arg_names
    for name, hint in hints.items():
        if hint == 1:
            signature[name], constexprs[name] = "constexpr", 1
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n, h in hints.items() if h == 16}
    attrs.update(spec.get("attrs", {}))
    return {"signature": signature, "constexprs": constexprs, "attrs": attrs}


def problems(report):
    """Why one compiled kernel is unhealthy (empty if it is fine)."""
    found = []
    if report["spill"] > 0:
        found.append(f"spills {report['spill']} bytes")
    if report["shared"] > SMEM_LIMIT[report["arch"]]:
        found.append(f"shared {report['shared']} B > {SMEM_LIMIT[report['arch']]} B")
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="parallel compiles (default: all cores)")
    parser.add_argument("--filter", default="", help="only kernels whose name contains this")
    args = parser.parse_args(argv)
    todo = [(m, i, arch) for m, i, s in specs() if args.filter in s["name"] for arch in ARCHS]
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        reports = list(pool.map(compile_one, *zip(*todo))) if todo else []
    print(f"{'kernel':<44} {'sm':>3} {'regs':>5} {'spill':>6} {'shared KB':>10} {'mma':>9}  status")
    bad = 0
    for r in reports:
        issues = problems(r)
        bad += bool(issues)
        mma = MMA[r["arch"]] if r["mma"] else "none"
        print(f"{r['name']:<44} {r['arch']:>3} {r['regs']:>5} {r['spill']:>6} "
              f"{r['shared'] / 1024:>10.1f} {mma:>9}  {'; '.join(issues) or 'ok'}")
    print(f"{len(reports)} compiles, {bad} unhealthy")
    return 1 if bad or not reports else 0


if __name__ == "__main__":
    sys.exit(main())
