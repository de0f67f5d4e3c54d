"""Ahead-of-time compile check of every MoE kernel config (gptcore.kernels.moe.aot_specs) for
sm_80 and sm_90 with no GPU: it compiles, spills no register, and fits in shared memory.

Every test file sets TRITON_INTERPRET=1 before triton is imported (triton decides interpreter or
compiler at import, once per process), so the compile runs in a child process without it."""
import json
import os
import subprocess
import sys

os.environ["TRITON_INTERPRET"] = "1"  # as the interpreter tests of this session need

import pytest  # noqa: E402

pytest.importorskip("triton", reason="the compile check needs triton installed")
from gptcore.kernels import moe  # noqa: E402

# Shared memory a block may opt into: 163 KB on A100 (sm_80), 227 KB on H100 (sm_90)
SHARED_LIMIT = {80: 163 * 1024, 90: 227 * 1024}
ARCHS = (80, 90)
SPECS = moe.aot_specs()

_CHILD = r"""
import json, os, re, subprocess, sys, tempfile
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from gptcore.kernels import moe
cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin",
                         "cuobjdump")
results = {}
for spec in moe.aot_specs():
    for arch in json.loads(sys.argv[1]):
        kernel = triton.compile(
            ASTSource(spec["fn"], spec["signature"], spec["constexprs"], spec["attrs"]),
            target=GPUTarget("cuda", arch, 32),
            options={"num_warps": spec["num_warps"], "num_stages": spec["num_stages"]})
        with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
            f.write(kernel.asm["cubin"])
            f.flush()
            usage = subprocess.run([cuobjdump, "--dump-resource-usage", f.name], check=True,
                                   capture_output=True, text=True).stdout
        found = re.search(r"REG:(\d+) STACK:(\d+) SHARED:\d+ LOCAL:(\d+)", usage)
        regs, stack, local = map(int, found.groups())
        results[f"{spec['name']}/{arch}"] = dict(regs=regs, stack=stack, local=local,
                                                 shared=kernel.metadata.shared)
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def usage():
    """Resource use of every spec on every arch, from one compiler child process."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(ARCHS)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_specs_cover_every_config():
    names = [s["name"] for s in SPECS]
    assert len(names) == len(set(names))
    for (bucket, H, I, E) in moe.CONFIGS:
        tag = bucket if H is None else f"{bucket}_H{H}_I{I}_E{E}"
        assert f"moe_gate_up_{tag}" in names and f"moe_down_{tag}" in names
        assert f"moe_gate_up_{tag}_mxfp4" in names
    for bucket in moe.BACKWARD_CONFIGS:
        assert f"moe_dgate_up_{bucket}_silu" in names


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name", [s["name"] for s in SPECS])
def test_compiles_without_spills(usage, name, arch):
    got = usage[f"{name}/{arch}"]
    assert got["stack"] == 0 and got["local"] == 0, f"{name} sm_{arch} spills: {got}"
    assert got["regs"] <= 255, got
    assert got["shared"] <= SHARED_LIMIT[arch], got
