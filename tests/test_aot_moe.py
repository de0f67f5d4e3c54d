"""Ahead-of-time compile check of every MoE kernel config (gptcore.kernels.moe.aot_specs) for
sm_80 and sm_90 with no GPU: it compiles, spills no register, and fits in shared memory."""
import os
import re
import subprocess

import pytest

triton = pytest.importorskip("triton", reason="the compile check needs triton installed")
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from gptcore.kernels import moe  # noqa: E402

CUOBJDUMP = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin",
                         "cuobjdump")
# Shared memory a block may opt into: 163 KB on A100 (sm_80), 227 KB on H100 (sm_90)
SHARED_LIMIT = {80: 163 * 1024, 90: 227 * 1024}
SPECS = moe.aot_specs()


def test_specs_cover_every_config():
    names = [s["name"] for s in SPECS]
    assert len(names) == len(set(names))
    for (bucket, H, I, E) in moe.CONFIGS:
        tag = bucket if H is None else f"{bucket}_H{H}_I{I}_E{E}"
        assert f"moe_gate_up_{tag}" in names and f"moe_down_{tag}" in names
        assert f"moe_gate_up_{tag}_mxfp4" in names
    for bucket in moe.BACKWARD_CONFIGS:
        assert f"moe_dgate_up_{bucket}_silu" in names


@pytest.mark.skipif(not os.path.exists(CUOBJDUMP), reason="triton wheel ships no cuobjdump here")
@pytest.mark.parametrize("arch", (80, 90))
@pytest.mark.parametrize("spec", SPECS, ids=[s["name"] for s in SPECS])
def test_compiles_without_spills(spec, arch, tmp_path):
    kernel = triton.compile(
        ASTSource(spec["fn"], spec["signature"], spec["constexprs"], spec["attrs"]),
        target=GPUTarget("cuda", arch, 32),
        options={"num_warps": spec["num_warps"], "num_stages": spec["num_stages"]})
    assert kernel.metadata.shared <= SHARED_LIMIT[arch], kernel.metadata.shared
    cubin = tmp_path / "kernel.cubin"
    cubin.write_bytes(kernel.asm["cubin"])
    usage = subprocess.run([CUOBJDUMP, "--dump-resource-usage", str(cubin)], check=True,
                           capture_output=True, text=True).stdout
    found = re.search(r"REG:(\d+) STACK:(\d+) SHARED:\d+ LOCAL:(\d+)", usage)
    assert found, usage
    regs, stack, local = map(int, found.groups())
    assert stack == 0 and local == 0, f"{spec['name']} sm_{arch}: spills ({usage.strip()})"
    assert regs <= 255
