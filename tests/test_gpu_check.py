"""bench/gpu_check.py, the parts that need no GPU: its command line, its time boxes, and the
results file it keeps on disk while stages pass, fail, hang or are skipped (fake stages)."""
import json
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import gpu_check  # noqa: E402


def test_arguments():
    args = gpu_check.parse_args(["--quick", "--only", "tests", "moe", "--out", "x.json"])
    assert args.quick and args.only == ["tests", "moe"] and args.out == "x.json"
    assert not gpu_check.parse_args([]).quick


@pytest.mark.parametrize("argv,message", [(["--only", "bogus"], "--only: expected one of"),
                                          (["--budget", "-5"], "--budget: expected a positive"),
                                          (["--fast"], "unrecognized arguments")])
def test_bad_arguments_exit_2_with_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        gpu_check.parse_args(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_the_boxes_fit_the_slots():
    """The full run fits 10 minutes and the quick one 3 (with room for the build check and
    process start-up), every stage runs in both but the TF32 pass and the Shakespeare run,
    which are full only."""
    full, quick = gpu_check.stages(False), gpu_check.stages(True)
    assert sum(s.box for s in full) <= 570 and sum(s.box for s in quick) <= 170
    assert [s.name for s in full] == ["environment", "smoke", "tests", "tests-tf32",
                                      "attention", "moe", "shakespeare"]
    assert [s.name for s in quick] == ["environment", "smoke", "tests", "attention", "moe"]
    assert "--quick" in quick[-1].argv and "--quick" not in full[-2].argv
    train = full[-1].argv
    assert train[train.index("--preset") + 1] == "shakespeare-char-gpu" and "cuda" in train
    tests = next(s for s in full if s.name == "tests")
    assert tests.env == {"GPTCORE_TEST_DEVICE": "cuda"}
    tf32 = next(s for s in full if s.name == "tests-tf32")
    assert tf32.env["GPTCORE_TEST_FP32_PRECISION"] == "high"


def _py(code):
    return [sys.executable, "-c", code]


WRITE_ROWS = ("import json, os; json.dump([{'case': 'a', 'ours_ms': 1.5}], "
              "open(os.environ['GPU_CHECK_ROWS'], 'w')); print('measured a')")


def test_results_are_written_after_every_stage(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "MIN_STAGE_S", 1)
    out = tmp_path / "results.json"
    # the second stage reads the results file as it stands while it runs
    sees_first = (f"import json; r = json.load(open({str(out)!r})); "
                  "assert [s['status'] for s in r['stages']] == ['ok'], r")
    stages = [
        gpu_check.Stage("measures", _py(WRITE_ROWS), 30),
        gpu_check.Stage("reads-file", _py(sees_first), 30),
        gpu_check.Stage("fails", _py("import sys; print('broken'); sys.exit(3)"), 30),
        # its box is longer than the budget: the budget's end cuts it, nothing is left after
        gpu_check.Stage("hangs", _py("import subprocess; subprocess.run(['sleep', '60'])"), 100),
        gpu_check.Stage("late", _py("pass"), 30),
    ]
    start = time.monotonic()
    record = gpu_check.run(stages, 6, out, {"kind": "gpu-check"})
    assert time.monotonic() - start < 20            # the hung stage and its child were killed
    on_disk = json.loads(out.read_text())
    assert on_disk == record and on_disk["kind"] == "gpu-check"
    status = {s["name"]: s["status"] for s in on_disk["stages"]}
    assert status == {"measures": "ok", "reads-file": "ok", "fails": "failed",
                      "hangs": "timeout", "late": "skipped"}, on_disk
    first = on_disk["stages"][0]
    assert first["rows"] == [{"case": "a", "ours_ms": 1.5}]
    assert "measured a" in first["output_tail"]
    failed = on_disk["stages"][2]
    assert failed["returncode"] == 3 and "broken" in failed["output_tail"]
    assert on_disk["passed"] is False


def test_all_ok_passes(tmp_path):
    record = gpu_check.run([gpu_check.Stage("measures", _py(WRITE_ROWS), 30)], 60,
                           tmp_path / "r.json", {})
    assert record["passed"] is True
