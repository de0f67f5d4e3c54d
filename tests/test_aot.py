"""The ahead-of-time compile check (python -m gptcore.backends.triton.kernels.aot) passes: every Triton kernel
config compiles for sm_80 and sm_90 with no register spill and shared memory within limits, its
fp32 form both with TF32 tensor cores and in "ieee" fp32 (no tensor-core instruction).

Runs in a subprocess: compiling needs compiled (not interpreter) @triton.jit functions, and
other test files run the kernels under TRITON_INTERPRET=1 in this process."""
import importlib.util
import os
import subprocess
import sys

import pytest


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_every_kernel_compiles_for_sm80_and_sm90_without_spills():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-m", "gptcore.backends.triton.kernels.aot"], capture_output=True,
                         text=True, env=env, timeout=900)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    assert " 0 unhealthy" in run.stdout, run.stdout[-6000:]
    assert "attention_fwd" in run.stdout and "attention_bwd_dq" in run.stdout, run.stdout
    # fp32 is compiled both ways torch's precision setting can ask for: TF32 and ieee
    assert "moe_down_mid+fp32 " in run.stdout and "moe_down_mid+fp32-ieee" in run.stdout
