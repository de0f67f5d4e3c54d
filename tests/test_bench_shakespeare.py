"""bench/shakespeare_vs_nanogpt.py: nanoGPT's data files as its prepare.py writes them (its
printed counts), and both commands carry the README recipe's flags."""
import importlib.util
import pickle
import sys
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _script():
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("shakespeare_vs_nanogpt",
                                                      BENCH / "shakespeare_vs_nanogpt.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module


def test_nanogpt_data_matches_its_prepare_script(tmp_path):
    script = _script()
    script.prepare_nanogpt_data(tmp_path)
    out = tmp_path / "data" / "shakespeare_char"
    # data/shakespeare_char/prepare.py's comments: train 1,003,854 tokens, val 111,540, vocab 65
    assert len(np.fromfile(out / "train.bin", dtype=np.uint16)) == 1_003_854
    assert len(np.fromfile(out / "val.bin", dtype=np.uint16)) == 111_540
    meta = pickle.loads((out / "meta.pkl").read_bytes())
    assert meta["vocab_size"] == 65 and meta["itos"][0] == "\n" and meta["stoi"]["z"] == 64


def test_commands_carry_the_recipe():
    script = _script()
    nano = script.nanogpt_command("/n", 2, 2000, False, "/o")
    for flag in ("--device=cpu", "--compile=False", "--eval_iters=20", "--block_size=64",
                 "--batch_size=12", "--n_layer=4", "--n_head=4", "--n_embd=128",
                 "--max_iters=2000", "--lr_decay_iters=2000", "--dropout=0.0"):
        assert flag in nano
    ours = script.gptcore_command(2, 2000, True, "bf16", "/o")
    assert ours[:2] == ["env", "OMP_NUM_THREADS=2"] and "--steps" not in ours
    assert ours[-1] == "--compile" and ours[ours.index("--dtype") + 1] == "bf16"


def test_nanogpt_curve_times_each_evaluation_by_its_iterations():
    """nanoGPT prints 'step N: ...' before the 'iter N: ... time' line of the iteration that
    evaluated; the curve's seconds sum the iteration times up to and including that one."""
    log = ("step 0: train loss 4.2, val loss 4.19\niter 0: loss 4.2, time 500.00ms, mfu -100%\n"
           "iter 1: loss 4.0, time 30.00ms, mfu 0.04%\niter 2: loss 3.9, time 20.00ms, mfu 0%\n"
           "step 3: train loss 1.9, val loss 1.87\niter 3: loss 1.8, time 250.00ms, mfu 0%\n")
    curve = _script().nanogpt_curve(log)
    assert curve == [(0, 0.5, 4.19), (3, 0.8, 1.87)]
    assert _script().reached(curve) == (3, 0.8, 1.87)
    assert _script().reached(curve[:1]) is None
