"""bench/harness.py's roofs: the read roof streams more bytes than the last-level cache holds,
and read-only rows (decode) are measured against it, the others against the copy roof."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import harness  # noqa: E402


def _cache(tmp_path, levels):
    for i, (level, size) in enumerate(levels):
        index = tmp_path / f"index{i}"
        index.mkdir()
        (index / "level").write_text(f"{level}\n")
        (index / "size").write_text(f"{size}\n")
    return tmp_path


def test_llc_is_the_highest_level(tmp_path):
    cache = _cache(tmp_path, [(1, "48K"), (1, "64K"), (2, "2048K"), (3, "491520K")])
    assert harness.llc_bytes(cache) == 491520 * 2**10
    assert harness.llc_bytes(tmp_path / "absent") is None


def test_stream_is_twice_the_llc_with_a_floor():
    assert harness.stream_bytes(480 * 2**20) == 960 * 2**20
    assert harness.stream_bytes(8 * 2**20) == 256 * 2**20
    assert harness.stream_bytes(0) == 256 * 2**20


def test_read_rows_use_the_read_roof_and_others_the_copy_roof():
    roofs = harness.Roofs(gemm_gflops=100, bf16_gemm_gflops=200, copy_gbs=10, read_gbs=20)
    read = harness.Row("x", "decode", ours_s=1.0, bytes=10e9, stream="read")
    copy = harness.Row("x", "copy", ours_s=1.0, bytes=10e9)
    assert harness.achieved(read, roofs) == ("10.0 GB/s", pytest.approx(50.0))
    assert harness.achieved(copy, roofs) == ("10.0 GB/s", pytest.approx(100.0))


def test_measured_roofs_are_positive_and_read_the_whole_buffer(monkeypatch):
    """With a small buffer (the default would be twice this machine's LLC): the read roof
    counts every byte of the buffer and the copy roof half of it (copied into the other half)."""
    sums = []
    real_sum = harness.torch.Tensor.sum
    monkeypatch.setattr(harness.torch.Tensor, "sum",
                        lambda t, *a, **k: sums.append(t.numel()) or real_sum(t, *a, **k))
    roofs = harness.measure_roofs(size=64, buffer_bytes=8 * 2**20)
    assert set(sums) == {2 * 2**20}                  # 8 MiB of fp32, summed whole each time
    assert roofs.read_gbs > 0 and roofs.copy_gbs > 0 and roofs.gemm_gflops > 0
