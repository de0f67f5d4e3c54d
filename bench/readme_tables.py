"""README's measured figures, generated from committed results files in bench/results/.

    python bench/readme_tables.py            # point every block at the newest file of its kind
    python bench/readme_tables.py --check    # exit 1 if a block differs from its files or a
                                             # newer file of its kind exists

Each block in README.md is fenced by two markers that name its source files:

    <!-- results: attention-moe-mxfp4-20261201-081201.json -->
    ...generated text...
    <!-- end results -->

A file's kind is its name before the UTC stamp (bench/harness.py results_path). Files from
`gptcore bench` hold timed rows and become tables; files from bench/record.py hold what a
command printed and become the printed text (training runs: one table row per file).
tests/test_readme.py runs the check, so every figure in those blocks traces to a file.
"""
import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
README = ROOT / "README.md"
BLOCK = re.compile(r"<!-- results: (?P<files>[^>]*?) -->\n(?P<body>.*?)<!-- end results -->",
                   re.DOTALL)
STAMP = re.compile(r"-(\d{8}-\d{6})\.json$")
ROOF_NAMES = {"gemm_gflops": "fp32 GEMM", "bf16_gemm_gflops": "bf16 GEMM", "copy_gbs": "copy",
              "read_gbs": "read"}


def kind_of(name):
    """'train-names-20261201-090000.json' -> 'train-names'."""
    match = STAMP.search(name)
    if match is None:
        raise SystemExit(f"bench/results/{name}: expected <kind>-<YYYYmmdd-HHMMSS>.json")
    return name[:match.start()]


def newest(kind):
    """Name of the newest results file of `kind` (stamps sort as text), or None."""
    names = sorted((p.name for p in RESULTS.glob(f"{kind}-*.json") if kind_of(p.name) == kind),
                   key=lambda n: STAMP.search(n).group(1))
    return names[-1] if names else None


def _time(s):
    return "-" if s is None else (f"{s * 1e3:.2f} ms" if s >= 1e-3 else f"{s * 1e6:.0f} us")


def machine(env):
    """What a run ran on: CPU and its ISA flags, threads, library versions."""
    hf = f", transformers {env['transformers']}" if env.get("transformers") else ""
    return (f"{env['cpu']} ({', '.join(env['isa'])}), {env['threads']} threads, "
            f"torch {env['torch']}{hf}")


def run_of(name, data):
    """Which file, which commit, when, how loaded the machine was when it started."""
    env = data["environment"]
    load = f", load average {env['load_avg']:.1f}" if env.get("load_avg") is not None else ""
    return f"`bench/results/{name}`: commit `{(env['commit'] or '?')[:12]}`, {env['date']}{load}"


def provenance(name, data):
    return f"From {run_of(name, data)}; {machine(data['environment'])}."


def rows_tables(name, data):
    """A `gptcore bench` file: its roofs, then one table per op."""
    roofs = ", ".join(f"{ROOF_NAMES.get(k, k)} {v:.0f} {'GFLOP/s' if k.endswith('gflops') else 'GB/s'}"
                      for k, v in data["roofs"].items())
    lines = [provenance(name, data), f"Roofs measured at the start of the run: {roofs}.", ""]
    for op in dict.fromkeys(r["op"] for r in data["rows"]):
        lines += [f"**{op}**", "", "| case | gptcore | peer | ratio | achieved | % roof |",
                  "|---|---:|---|---:|---:|---:|"]
        for r in (r for r in data["rows"] if r["op"] == op):
            case = r["case"] + (f" ({r['note']})" if r["note"] else "")
            peer = f"{_time(r['peer_s'])} {r['peer']}" if r["peer_s"] is not None else "-"
            ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}x"
            pct = "-" if r["roof_pct"] is None else f"{r['roof_pct']:.0f}%"
            lines.append(f"| {case} | {_time(r['ours_s'])} | {peer} | {ratio} | "
                         f"{r['achieved']} | {pct} |")
        lines.append("")
    return lines


# The issues' targets, checked against the rows of a file of that kind: (case, peer or None
# when the case has one row, minimum ratio, minimum % of the roof or None).
TARGETS = {
    "attention-moe-mxfp4": ("issue 12", [
        ("B4 H8 S1024 D64 causal fp32", None, 1.3, None),
        ("B4 H8 S1024 D64 full fp32", None, 1.1, 85),
        ("B1 H16 S2048 D128 causal bf16", None, 1.5, None),
        ("B1 H8 S8192 D64 causal window 128", "compiled flex", 1.5, None),
        ("fp32 H1024 I2816 E8 k2 T=16", None, 1.5, None),
        ("bf16 H1024 I2816 E8 k2 T=16", None, 1.3, None),
        ("bf16 H1024 I2816 E8 k2 T=128", None, 1.3, None),
        ("bf16 H1024 I2816 E8 k2 T=512", None, 1.3, None),
        ("mxfp4 T=16 (vs fp32 peer)", None, 4.0, None)]),
    "models": ("issue 10", [
        *[(f"{m} decode 64 tok {dt}", None, 1.1 if m == "llama" else 1.5, None)
          for dt in ("float32", "bfloat16") for m in ("llama", "mixtral", "gpt_oss")],
        *[(f"{m} prefill 2x512 {dt}", None, 1.1 if dt == "float32" else 1.3, None)
          for dt in ("float32", "bfloat16") for m in ("llama", "mixtral", "gpt_oss")],
        ("nanoGPT fwd+bwd B4 T1024 fp32", None, 1.2, None)]),
    "quant": ("issue 29", [
        (f"llama {side} {fmt} (64 tok after 128)", None, ratio, 80)
        for side in ("gptcore", "gptcore.GPT")
        for fmt, ratio in (("bf16", 2.0), ("int8", 3.5), ("int4", 5.0), ("mxfp4", 5.0))]),
}


def bandwidth_roof(roofs):
    """(GB/s, name) that weight bytes a decode only reads are streamed at: the read roof, or
    the copy roof in files measured before there was one."""
    if roofs.get("read_gbs"):
        return roofs["read_gbs"], "read"
    return roofs["copy_gbs"], "copy"


def _ceiling(row, roofs):
    """peer time / (time with the switched parts free + their work at the roof), as text."""
    extra = row.get("extra", {})
    if "free_s" not in extra:
        return "-"
    if "switched_bytes" in extra:
        floor = extra["switched_bytes"] / (bandwidth_roof(roofs)[0] * 1e9)
    else:
        peak = roofs["bf16_gemm_gflops"] if row["dtype"] == "bf16" else roofs["gemm_gflops"]
        floor = extra["switched_flops"] / (peak * 1e9)
    return f"{row['peer_s'] / (extra['free_s'] + floor):.2f}x"


def targets(kind, data):
    """The targets of `kind` against this file's rows: which are met, by how much."""
    if kind not in TARGETS:
        return []
    issue, wanted = TARGETS[kind]
    free = any("free_s" in r.get("extra", {}) for r in data["rows"])
    lines = [f"Targets ({issue}), from the same run" + (
                 ". *Ceiling*: the most any drop-in could reach here, peer time / (the model's "
                 "time with attention and experts replaced by zeros, measured in the same run, "
                 "+ the FLOPs or weight bytes those parts must still process, at this run's "
                 f"GEMM or {bandwidth_roof(data['roofs'])[1]} roof):" if free else ":"), "",
             "| case | target | measured |" + (" ceiling |" if free else "") + " met |",
             "|---|---|---|" + ("---|" if free else "") + "---|"]
    for case, peer, ratio, roof in wanted:
        rows = [r for r in data["rows"] if r["case"] == case and (peer is None or r["peer"] == peer)]
        if len(rows) != 1:
            raise SystemExit(f"{kind}: expected one row {case!r} (peer {peer}), found {len(rows)}")
        r = rows[0]
        aim = f">= {ratio}x {r['peer']}" + (f", >= {roof}% roof" if roof else "")
        got = f"{r['ratio']:.2f}x" + (f", {r['roof_pct']:.0f}% roof" if roof else "")
        met = r["ratio"] >= ratio and (roof is None or r["roof_pct"] >= roof)
        cells = [case, aim, got]
        if free:
            cells.append(_ceiling(r, data["roofs"]))
        lines.append("| " + " | ".join(cells + ["yes" if met else "**no**"]) + " |")
    return lines + [""]


def printed(name, data):
    """A bench/record.py file: the command and what it printed, less the JSON summary line
    that ends it (the file keeps it)."""
    lines = data["stdout"].rstrip("\n").splitlines()
    if data.get("result") is not None:
        lines = lines[:-1]
    return [provenance(name, data) + f" Wall time {data['wall_s']:.0f} s.", "", "```",
            "$ " + " ".join(data["command"]), *lines, "```", ""]


def demo(name, data):
    """A recorded `make demo`: how long it took and the training run's JSON summary (its pip and
    build output are in the file, not in README)."""
    summaries = [line for line in data["stdout"].splitlines() if line.startswith('{"preset"')]
    return [provenance(name, data), "",
            f"`{' '.join(data['command'])}` exited 0 in {data['wall_s'] / 60:.1f} minutes. "
            "The training run's summary:", "", "```", *summaries, "```", ""]


def comparison(name, data):
    """A bench/shakespeare_vs_nanogpt.py file: each run's whole command and validation curve."""
    from shakespeare_vs_nanogpt import comparison_table
    for run in data["runs"]:
        if run["returncode"]:
            raise SystemExit(f"bench/results/{name}: {run['run']} failed (exit "
                             f"{run['returncode']}); a failed run is not a result")
    return [provenance(name, data) + f" {data['threads']} threads each; the runs' own files: "
            + ", ".join(f"`{run['file']}`" for run in data["runs"]) + ".", "",
            *comparison_table(data["runs"], data["target_val_loss"]), ""]


TRAIN_COLUMNS = [("steps", "steps", "{:,}"), ("seconds", "seconds", "{:.1f}"),
                 ("clock", "clock", "{}"), ("tokens_per_s", "tokens/s", "{:,.0f}"),
                 ("train_loss", "train loss", "{:.3f}"), ("val_loss", "val loss", "{:.3f}")]


def training_table(files):
    """`gptcore train` runs, one row each from its JSON summary, then where each came from."""
    lines = ["| command | " + " | ".join(h for _, h, _ in TRAIN_COLUMNS) + " |",
             "|---|" + "---:|" * len(TRAIN_COLUMNS)]
    for _, data in files:
        result = data["result"] or {}
        cells = ["-" if result.get(k) is None else f.format(result[k]) for k, _, f in TRAIN_COLUMNS]
        lines.append(f"| `{' '.join(data['command'])}` | " + " | ".join(cells) + " |")
    machines = sorted({machine(data["environment"]) for _, data in files})
    return lines + [""] + [f"- {run_of(name, data)}" for name, data in files] + \
        [f"- on {m}" for m in machines] + [""]


def render_block(names):
    """Markdown for one block from its files (all of one family: rows, training runs, printed)."""
    files = [(n, json.loads((RESULTS / n).read_text())) for n in names]
    for name, data in files:
        if data.get("returncode"):
            raise SystemExit(f"bench/results/{name}: the command failed "
                             f"(exit {data['returncode']}); a failed run is not a result")
    if all(kind_of(n).startswith("train-") for n in names):
        lines = training_table(files)
    elif [kind_of(n) for n in names] == ["demo"]:
        lines = demo(*files[0])
    elif all("runs" in data for _, data in files):
        lines = []
        for name, data in files:
            lines += comparison(name, data)
    else:
        lines = []
        for name, data in files:
            lines += rows_tables(name, data) + targets(kind_of(name), data) if "rows" in data \
                else printed(name, data)
    return "\n".join(lines).rstrip() + "\n"


def render(text, refresh):
    """README text with every block regenerated; with `refresh`, each block first switches
    to the newest file of each of its kinds. Returns (text, stale names)."""
    stale = []

    def block(match):
        names = match.group("files").split()
        latest = [newest(kind_of(n)) for n in names]
        stale.extend(n for n, new in zip(names, latest) if n != new)
        if refresh:
            names = latest
        for name in names:
            if name is None or not (RESULTS / name).exists():
                raise SystemExit(f"README names bench/results/{name}, which does not exist")
        return f"<!-- results: {' '.join(names)} -->\n{render_block(names)}<!-- end results -->"

    return BLOCK.sub(block, text), stale


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="only check README.md; exit 1 if a block is stale")
    args = parser.parse_args(argv)
    text = README.read_text()
    if not BLOCK.search(text):
        raise SystemExit("README.md has no '<!-- results: ... -->' block")
    if args.check:
        new, stale = render(text, refresh=False)
        problems = (["README.md differs from its results files"] if new != text else []) + \
                   [f"a newer results file of the kind of {n} exists" for n in stale]
        for problem in problems:
            print(f"{problem}: run python bench/readme_tables.py")
        return 1 if problems else 0
    new, _ = render(text, refresh=True)
    README.write_text(new)
    print("README.md blocks regenerated from bench/results/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
