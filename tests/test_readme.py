"""README's performance tables are generated from the newest committed results file of
`gptcore bench` (bench/readme_tables.py): every figure there traces to a file."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_tables_match_the_newest_results_file():
    results = sorted((ROOT / "bench" / "results").glob("[0-9]*.json"))   # gptcore bench's files
    assert results, "no bench/results/*.json committed: run `gptcore bench`"
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "readme_tables.py"), "--check"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
