"""Every command-line input checked before any work: a table of bad inputs, each ending with
exit 2 and one line naming the option (argparse's `gptcore CMD: error: argument OPT: ...` for
what a type or choice catches, `gptcore CMD: OPT: expected ..., got ...` for the rest), and no
traceback."""
import contextlib
import io
import shutil

import pytest
import torch

from gptcore import cli
from gptcore.training import checkpoint


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Paths the table refers to by name: two trained runs (AR, diffusion), broken copies of
    the AR run, and text files."""
    threads = torch.get_num_threads()
    root = tmp_path_factory.mktemp("inputs")
    for preset, name in (("microgpt", "ar"), ("names-diffusion", "diffusion")):
        with contextlib.redirect_stdout(io.StringIO()):
            assert cli.main(["train", "--preset", preset, "--steps", "2", "--quiet",
                             "--out", str(root / name)]) == 0
    torch.set_num_threads(threads)
    newest = checkpoint.resolve(root / "ar")
    shutil.copytree(root / "ar", root / "damaged")
    damaged = root / "damaged" / "checkpoints" / newest.name / "model.safetensors"
    damaged.write_bytes(damaged.read_bytes()[:-7])
    (root / "partial" / "checkpoints" / ".tmp-step-00000005").mkdir(parents=True)
    checkpoint.save(root / "linear", torch.nn.Linear(2, 2), state={"step": 1})
    (root / "empty-dir").mkdir()
    (root / "empty.txt").write_text("\n  \n\n")
    (root / "latin1.txt").write_bytes(b"anna\nzo\xe9\n")
    (root / "a-file").write_text("x")
    (root / "lines.txt").write_text("anna\nbob\n")
    return root


# (argv with {placeholders} for files, the option, the expected text); argparse's errors
ARGPARSE = [
    ("train --preset names --steps -5", "--steps", "expected an integer >= 1, got '-5'"),
    ("train --preset names --steps 0", "--steps", "expected an integer >= 1, got '0'"),
    ("train --preset names --steps ten", "--steps", "expected an integer, got 'ten'"),
    ("train --preset names --time-budget 0", "--time-budget", "expected a number > 0"),
    ("train --preset names --time-budget nan", "--time-budget", "expected a finite number"),
    ("train --preset names --seed -1", "--seed", "expected an integer >= 0"),
    ("train --preset names --threads 0", "--threads", "expected an integer >= 1"),
    ("train --preset names --vocab-size 100", "--vocab-size", "expected an integer >= 257"),
    ("train --preset names --checkpoint-every 0", "--checkpoint-every", "integer >= 1"),
    ("train --preset names --checkpoint-minutes -1", "--checkpoint-minutes", "number > 0"),
    ("train --preset names --keep 0", "--keep", "expected an integer >= 1"),
    ("train --preset names --tokenizer words", "--tokenizer", "invalid choice: 'words'"),
    ("sample --ckpt {ar} -n 0", "-n", "expected an integer >= 1, got '0'"),
    ("sample --ckpt {ar} --temperature -1", "--temperature", "expected a number >= 0"),
    ("sample --ckpt {ar} --top-k 0", "--top-k", "expected an integer >= 1"),
    ("sample --ckpt {ar} --top-p 0", "--top-p", "expected a number in (0, 1]"),
    ("sample --ckpt {ar} --top-p 1.5", "--top-p", "expected a number in (0, 1]"),
    ("sample --ckpt {ar} --seed -3", "--seed", "expected an integer >= 0"),
    ("sample --ckpt {diffusion} --steps 0", "--steps", "expected an integer >= 1"),
    ("sample --ckpt {diffusion} --block-length -2", "--block-length", "integer >= 1"),
    ("compare --ar {ar} --diffusion {diffusion} -n 0", "-n", "expected an integer >= 1"),
    ("compare --ar {ar} --diffusion {diffusion} --temperature -0.5", "--temperature",
     "expected a number >= 0"),
    ("embed-demo --batch-size 1", "--batch-size", "expected an integer >= 2"),
    ("embed-demo --lr 0", "--lr", "expected a number > 0"),
    ("embed-demo --d-embed 8", "--d-embed", "expected an integer >= 16"),
    ("multimodal-demo --time-budget -4", "--time-budget", "expected a number > 0"),
    ("multimodal-embed-demo --n-train 3", "--n-train", "expected an integer >= 48"),
    ("multimodal-embed-demo --per-pair 0", "--per-pair", "expected an integer >= 1"),
    ("multimodal-demo --threads -1", "--threads", "expected an integer >= 0"),
]

# the checks argparse cannot make: gptcore's own one line
OURS = [
    ("train --preset gpt-5", "--preset", "got 'gpt-5'"),
    ("train --preset names --data {root}/missing.txt", "--data", "which does not exist"),
    ("train --preset names --data {root}/empty-dir", "--data", "which is a directory"),
    ("train --preset names --data {root}/empty.txt", "--data", "at least one non-empty line"),
    ("train --preset names --data {root}/latin1.txt", "--data",
     "expected UTF-8 text, got byte 0xe9 at offset 7"),
    ("train --preset names --out {root}/a-file/run", "--out", "expected a writable directory"),
    ("train --preset microgpt --out {damaged}", "--out",
     "model.safetensors of"),
    ("train --preset names --steps 1 --out {ar}", "--out", "expected a run directory with "
     "this run's config."),
    ("train --preset microgpt --steps 1 --seed 1 --out {ar}", "--out",
     "seed=1, got config.extra.seed=0"),
    ("train --preset names --data {root}/lines.txt --steps 1 --out {ar}", "--out",
     "expected a run directory with this run's"),
    ("sample --ckpt {root}/nothing", "--ckpt", "which does not exist"),
    ("sample --ckpt {root}/a-file", "--ckpt", "which is not a directory"),
    ("sample --ckpt {root}/empty-dir", "--ckpt", "written by gptcore train"),
    ("sample --ckpt {partial}", "--ckpt", "only an unfinished one"),
    ("sample --ckpt {damaged}", "--ckpt", "(truncated or overwritten)"),
    ("sample --ckpt {root}/linear", "--ckpt", "a checkpoint of a GPT, got one of 'Linear'"),
    ("sample --ckpt {ar} --prompt abcdefghijklmnopqrst", "--prompt",
     "expected at most 14 tokens"),
    ("sample --ckpt {ar} --prompt Ab", "--prompt", "got 'A'"),
    ("sample --ckpt {diffusion} --top-p 0.9", "--top-p", "for a diffusion checkpoint"),
    ("sample --ckpt {diffusion} --top-k 3", "--top-k", "for a diffusion checkpoint"),
    ("sample --ckpt {diffusion} --block-length 5", "--block-length", "expected"),
    ("compare --ar {root}/nothing --diffusion {diffusion}", "--ar", "which does not exist"),
    ("compare --ar {ar} --diffusion {partial}", "--diffusion", "only an unfinished one"),
    ("embed-demo --d-embed 24", "--d-embed", "expected a multiple of 16 (the prefixes are d/16 .. d), got 24"),
    ("embed-demo --batch-size 1000000", "--batch-size", "got 1000000"),
    ("multimodal-embed-demo --d-embed 40", "--d-embed", "expected a multiple of 32"),
    ("multimodal-embed-demo --queries 900", "--queries", "expected at most --n-eval / 2 = 200"),
    ("multimodal-demo --json {root}/no/such/dir/out.json", "--json",
     "expected a file in an existing directory"),
]


def _run(files, line, capsys):
    argv = line.format(root=files, ar=files / "ar", diffusion=files / "diffusion",
                       damaged=files / "damaged", partial=files / "partial").split()
    threads = torch.get_num_threads()
    try:
        code = cli.main(argv)
    except SystemExit as exit_:                # argparse's own errors
        code = exit_.code
    finally:
        torch.set_num_threads(threads)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.err.strip().splitlines()


@pytest.mark.parametrize("line, option, expected", ARGPARSE)
def test_argparse_rejects(files, capsys, line, option, expected):
    code, err = _run(files, line, capsys)
    command = line.split()[0]
    assert code == 2, err
    assert err[-1].startswith(f"gptcore {command}: error: argument {option}: "), err
    assert expected in err[-1], err


@pytest.mark.parametrize("line, option, expected", OURS)
def test_own_checks_reject(files, capsys, line, option, expected):
    code, err = _run(files, line, capsys)
    command = line.split()[0]
    assert code == 2, err
    assert len(err) == 1, err
    assert err[0].startswith(f"gptcore {command}: {option}: expected "), err
    assert expected in err[0], err
