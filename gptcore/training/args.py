"""Argument types for gptcore's commands: argparse calls them on the text given, and a value
out of range ends the command before any work with argparse's one-line error (exit 2):
`gptcore train: error: argument --steps: expected an integer >= 1, got '-5'`."""
import argparse
import math
import os
import re
import tempfile
from pathlib import Path


def _number(kind, text):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def int_at_least(low):
    """An integer >= low."""
    def parse(text):
        value = _number(int, text)
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}")
        return value
    parse.__name__ = f"integer >= {low}"
    return parse


def float_above(low, inclusive=False):
    """A finite number > low (>= low with inclusive)."""
    def parse(text):
        value = _number(float, text)
        if value < low or (value == low and not inclusive):
            raise argparse.ArgumentTypeError(
                f"expected a number {'>=' if inclusive else '>'} {low:g}, got {text!r}")
        return value
    parse.__name__ = f"number {'>=' if inclusive else '>'} {low:g}"
    return parse


def probability(text):
    """A number in (0, 1]."""
    value = _number(float, text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}")
    return value


POSITIVE_INT = int_at_least(1)
NONNEGATIVE_INT = int_at_least(0)
POSITIVE_FLOAT = float_above(0)
NONNEGATIVE_FLOAT = float_above(0, inclusive=True)


def writable_directory(path, argument):
    """Creates directory `path` if needed and proves it writable with a probe file; ValueError
    naming `argument` otherwise (a file in the way, no permission, a read-only file system)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ValueError(f"{argument}: expected a writable directory, got {str(path)!r} "
                         f"({err.strerror or err})") from None


def option_error(err, **options):
    """The message of a library's ValueError with its leading argument name replaced by the
    command-line option it came from: option_error(err, top_k="--top-k")."""
    text = str(err)
    match = re.match(r"([\w/]+): ", text)
    if match and match[1] in options:
        return options[match[1]] + text[match.end(1):]
    return text
