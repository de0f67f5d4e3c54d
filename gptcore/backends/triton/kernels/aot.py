"""Ahead-of-time compile check of every Triton kernel for sm_80 and sm_90, no GPU needed:
`python -m gptcore.backends.triton.kernels.aot`. Each kernel module lists its GPU configs in `aot_specs()`
(bf16); each is compiled with triton.compile(ASTSource(...), target=GPUTarget("cuda", arch,
32)) and its cubin read with the wheel's cuobjdump. Every other specialisation a launch can
produce with that config (fp16 and fp32 operands, softcap, varlen, sinks on or off) is
compiled too, one change at a time, and fp32 operands both ways PyTorch's precision setting
can ask for (precision.py): TF32 tensor cores and "ieee" fp32
FMA; a config's tile table lists the specialisations it is not proven for, and the autotune
pruner never picks it for those.
Exits non-zero on a register spill, on shared memory above the architecture's per-block
limit, on a kernel with a tl.dot that compiled to no tensor-core instruction, or on an "ieee"
one that did (its products would then be TF32). The "ieee" forms are the exact, slow path
(fp32 FMA, several times the tensor cores' time): their spills are printed, not failed, since
the tiles are sized for the tensor-core forms.
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

MODULES = ("gptcore.backends.triton.kernels.attention", "gptcore.backends.triton.kernels.moe")
ARCHS = (80, 90)
SMEM_LIMIT = {80: 163 * 1024, 90: 227 * 1024}    # max dynamic shared memory per block
# Tensor-core instructions: sm_90 runs wgmma for tiles of 64+ rows and mma.sync below that.
MMA = {80: ("mma.sync",), 90: ("wgmma", "mma.sync")}
# Kernels without a tl.dot (row reductions, routing, index building): no mma expected.
NO_DOT = ("attention_bwd_preprocess", "attention_combine", "moe_route", "moe_index")
# Specialisation -> what it is called in a tile table's "unproven" list
# (attention_common.py), where the autotune pruner reads it too.
FLAGS = {"HAS_SOFTCAP": "softcap", "IS_VARLEN": "varlen", "HAS_SINKS": "sinks"}
DTYPES = ("fp16", "fp32")
# Name suffix of the fp32 form compiled with DOT_PRECISION="ieee" (torch's "highest" precision).
IEEE_TAG = "+fp32-ieee"


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


def variants(spec):
    """The other specialisations of one spec, one change each: every boolean flag among FLAGS
    flipped, and each of DTYPES in place of bf16 operands; minus those its tile table says
    it is not proven for (the autotune pruner never picks it for them). A kernel with a tl.dot
    (a DOT_PRECISION constexpr) is compiled with fp32 operands in "ieee" precision as well."""
    unproven = spec.get("unproven", ())
    found = [("flag", f) for f, name in FLAGS.items()
             if f in spec["constexprs"] and name not in unproven]
    if any(kind == "*bf16" for kind in spec["signature"].values()):
        found += [("dtype", d) for d in DTYPES if d not in unproven]
    if "DOT_PRECISION" in spec["constexprs"] and "fp32" not in unproven:
        found.append(("precision", "ieee"))
    return found


def apply_variant(spec, variant):
    """A copy of spec specialised as `variant` (None: the spec itself)."""
    if variant is None:
        return spec
    kind, value = variant
    spec = dict(spec, signature=dict(spec["signature"]), constexprs=dict(spec["constexprs"]))
    if kind == "flag":
        spec["constexprs"][value] = not spec["constexprs"][value]
        spec["name"] += f"+{value.lower()}={spec['constexprs'][value]}"
    elif kind == "dtype":
        spec["signature"] = {n: f"*{value}" if t == "*bf16" else t
                             for n, t in spec["signature"].items()}
        spec["name"] += f"+{value}"
    else:
        spec["signature"] = {n: "*fp32" if t == "*bf16" else t
                             for n, t in spec["signature"].items()}
        spec["constexprs"]["DOT_PRECISION"] = value
        spec["name"] += IEEE_TAG
    return spec


def plan(name_filter=""):
    """(module, index, variant, arch) of every compile to run."""
    return [(module, index, variant, arch) for module, index, spec in specs()
            if name_filter in spec["name"] for variant in [None, *variants(spec)]
            for arch in ARCHS]


def _cuobjdump():
    import triton
    return Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"


def compile_one(module_name, index, variant, arch):
    """Compiles spec `index` of `module_name`, specialised as `variant`, for sm_`arch`;
    returns its resource report."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    spec = apply_variant(importlib.import_module(module_name).aot_specs()[index], variant)
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
            "mma": next((m for m in MMA[arch] if m in kernel.asm["ptx"]), None)}


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
    ieee = IEEE_TAG in report["name"]
    if report["spill"] > 0 and not ieee:
        found.append(f"spills {report['spill']} bytes")
    if report["shared"] > SMEM_LIMIT[report["arch"]]:
        found.append(f"shared {report['shared']} B > {SMEM_LIMIT[report['arch']]} B")
    if ieee:
        if report["mma"] is not None:
            found.append(f"ieee fp32 compiled to {report['mma']} (TF32)")
    elif report["mma"] is None and not report["name"].startswith(NO_DOT):
        found.append("no tensor-core instruction")
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="parallel compiles (default: all cores)")
    parser.add_argument("--filter", default="", help="only kernels whose name contains this")
    args = parser.parse_args(argv)
    todo = plan(args.filter)
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        reports = list(pool.map(compile_one, *zip(*todo))) if todo else []
    print(f"{'kernel':<60} {'sm':>3} {'regs':>5} {'spill':>6} {'shared KB':>10} {'mma':>9}  status")
    bad = 0
    for r in reports:
        issues = problems(r)
        bad += bool(issues)
        mma = r["mma"] or "none"
        print(f"{r['name']:<60} {r['arch']:>3} {r['regs']:>5} {r['spill']:>6} "
              f"{r['shared'] / 1024:>10.1f} {mma:>9}  {'; '.join(issues) or 'ok'}")
    print(f"{len(reports)} compiles, {bad} unhealthy")
    return 1 if bad or not reports else 0


if __name__ == "__main__":
    sys.exit(main())
