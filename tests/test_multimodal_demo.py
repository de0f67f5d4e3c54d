"""`gptcore multimodal-demo --json FILE`: the last line printed is written to FILE, with the
environment the run came from (the demo itself is too long for the default test run: its
figures are in bench/results/multimodal-*.json)."""
import argparse
import json

import torch

from gptcore.multimodal import cli, data, demo


def _canned_results():
    results = {kind: {"n": 2, "exact": 0.5, "examples": [["a red circle", "a red square"]]}
               | {name: 0.5 for name in data.ATTRIBUTES[kind]} for kind in data.MAKERS}
    results["video"]["order"] = 1.0
    results["video_frame_averaging"] = dict(results["video"], order=0.5)
    results["chance"] = {kind: demo.chance(kind) for kind in data.MAKERS}
    summary = {"steps": 3, "seconds": 1.0, "train_loss": 2.0, "backend": "cpp"}
    results["train"] = {"captioner": summary, "video_frame_averaging": summary}
    results["config"] = {"seed": 0}
    results["seconds"] = {"data": 0.1, "eval": 0.1, "total": 1.2, "cpu_total": 1.2}
    results["environment"] = demo.environment()
    return results


def test_demo_json_file_is_the_printed_last_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo, "run", lambda **kwargs: _canned_results())
    path = tmp_path / "mm.json"
    args = argparse.Namespace(threads=1, cpu_time=True, time_budget=1.0, seed=0, stages="all",
                              no_progress=True, json=str(path))
    threads = torch.get_num_threads()
    try:
        assert cli.demo_command(args) == 0
    finally:
        torch.set_num_threads(threads)
    printed = capsys.readouterr().out.strip().splitlines()
    written = json.loads(path.read_text())
    assert written == json.loads(printed[-1])
    assert written["video"]["order"] == 1.0 and written["chance"]["video"]["order"] == 0.5
    assert written["environment"]["torch"] == torch.__version__
    assert written["environment"]["cpu_count"] >= 1
    assert any(line.startswith("video ablation") for line in printed)
