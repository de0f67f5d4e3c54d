"""The benchmarks' peers and bookkeeping: the plain-PyTorch MXFP4 peer computes what gptcore
does, and a results file carries the environment taken when its run started."""
import json
import sys
from pathlib import Path

import torch

import gptcore

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import bench_mxfp4  # noqa: E402
import harness  # noqa: E402


def test_plain_pytorch_mxfp4_peer_equals_gptcore():
    torch.manual_seed(0)
    w4 = gptcore.mxfp4_quantize(torch.randn(3, 5, 64) * 4)
    want = gptcore.mxfp4_dequantize(w4, torch.float32)
    assert torch.equal(bench_mxfp4.torch_dequantize(w4.blocks, w4.scales), want)


def test_results_keep_the_environment_of_the_run_start(tmp_path):
    roofs = harness.Roofs(gemm_gflops=1.0, bf16_gemm_gflops=1.0, copy_gbs=1.0, read_gbs=2.0)
    start = dict(harness.environment(), load_avg=123.0)
    path = tmp_path / "r.json"
    harness.report([harness.Row("x", "case", 1.0)], roofs, path, start)
    data = json.loads(path.read_text())
    assert data["environment"]["load_avg"] == 123.0
    assert data["roofs"]["read_gbs"] == 2.0


def test_every_bench_script_imports():
    """A moved or renamed API breaks a benchmark only at run time: import each script here."""
    import importlib.util
    for path in sorted((Path(__file__).resolve().parent.parent / "bench").glob("*.py")):
        spec = importlib.util.spec_from_file_location(f"bench_import_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if path.stem.startswith("bench_"):      # what `gptcore bench` calls in each of them
            assert callable(getattr(module, "run", None)), f"{path.name} has no run(quick)"
