"""The corrupted-names retrieval task: a name and a copy of it with 1-2 random edits
(substitution, deletion, insertion, adjacent transposition) are a positive pair; retrieval finds
the original among all candidates from the corrupted copy. The hard variant adds, as
distractors, every name of a larger pool within a small edit distance of a target."""
import itertools
import random
import string
from dataclasses import dataclass

ALPHABET = string.ascii_lowercase
EDITS = ("substitute", "delete", "insert", "transpose")


def edit_distance(a, b):
    """Optimal-string-alignment distance: the fewest substitutions, deletions, insertions and
    adjacent transpositions turning a into b, no substring edited twice (the edits `corrupt`
    makes)."""
    prev2, prev = None, list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        row = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                row[j] = min(row[j], prev2[j - 2] + 1)
        prev2, prev = prev, row
    return prev[-1]


def apply_edit(name, kind, rng, alphabet=ALPHABET):
    """One edit of `kind` at a random place; the result always differs from `name`.
    Deletion and transposition need a name they can change (raises ValueError otherwise)."""
    n = len(name)
    if kind == "substitute":
        i = rng.randrange(n)
        return name[:i] + rng.choice([c for c in alphabet if c != name[i]]) + name[i + 1:]
    if kind == "insert":
        i = rng.randrange(n + 1)
        return name[:i] + rng.choice(alphabet) + name[i:]
    if kind == "delete":
        if n < 2:
            raise ValueError(f"name: deletion needs at least 2 characters, got {name!r}")
        i = rng.randrange(n)
        return name[:i] + name[i + 1:]
    if kind == "transpose":
        places = [i for i in range(n - 1) if name[i] != name[i + 1]]
        if not places:
            raise ValueError(f"name: transposition needs two different adjacent characters, "
                             f"got {name!r}")
        i = rng.choice(places)
        return name[:i] + name[i + 1] + name[i] + name[i + 2:]
    raise ValueError(f"kind: expected one of {EDITS}, got {kind!r}")


def _possible_edits(name):
    kinds = ["substitute", "insert"]
    if len(name) >= 2:
        kinds.append("delete")
    if any(x != y for x, y in zip(name, name[1:])):
        kinds.append("transpose")
    return kinds


def corrupt(name, rng, *, avoid=(), alphabet=ALPHABET, max_tries=100):
    """`name` after 1 or 2 random edits (each kind equally likely among those that apply), redrawn
    until its edit distance to `name` is 1 or 2 (a second edit can undo the first, or overlap it
    so that the restricted distance counts 3) and it is not in `avoid` (e.g. the other
    candidates, so that no query is ambiguous). rng: a random.Random."""
    if not name:
        raise ValueError("name: expected a non-empty string, got ''")
    for _ in range(max_tries):
        out = name
        for _ in range(rng.randint(1, 2)):
            out = apply_edit(out, rng.choice(_possible_edits(out)), rng, alphabet)
        if 1 <= edit_distance(name, out) <= 2 and out not in avoid:
            return out
    raise ValueError(f"name: no corruption of {name!r} outside `avoid` in {max_tries} tries")


def _deletions(word, k):
    """Every string obtained from word by deleting at most k characters (itself included)."""
    out = {word}
    for r in range(1, min(k, len(word)) + 1):
        for drop in itertools.combinations(range(len(word)), r):
            out.add("".join(c for i, c in enumerate(word) if i not in drop))
    return out


def neighbours(names, max_distance=2, pool=None):
    """{name: the set of other strings in `pool` (default: `names`) within edit distance
    max_distance of it}. Candidates come from a symmetric-deletion index of the pool (two
    strings within k edits share a string reachable by <= k deletions from each: an edit costs
    at most one deletion per side), then are checked exactly."""
    pool = sorted(set(names if pool is None else pool))
    index = {}
    for word in pool:
        for key in _deletions(word, max_distance):
            index.setdefault(key, []).append(word)
    found = {}
    for name in set(names):
        near = set()
        for key in _deletions(name, max_distance):
            near.update(index.get(key, ()))
        found[name] = {w for w in near if w != name and abs(len(w) - len(name)) <= max_distance
                       and edit_distance(name, w) <= max_distance}
    return found


def hard_negatives(names, pool, max_distance=2):
    """The strings of `pool` not in `names` within edit distance 1..max_distance of some name
    (sorted): distractors that differ from a real target by one or two edits."""
    targets = set(names)
    near = set().union(*neighbours(targets, max_distance, pool).values()) if targets else set()
    return sorted(near - targets)


@dataclass
class RetrievalTask:
    """queries[i] is a corruption of candidates[targets[i]]."""
    candidates: list
    queries: list
    targets: list


def make_task(names, seed, *, pool=None, max_distance=1):
    """One corrupted query per distinct name; the candidates are the distinct names, plus, when
    `pool` is given (the hard variant), every name of `pool` within max_distance edits of one of
    them. No query equals any candidate. Why 1 by default: names are short, and within 2 edits
    of the 2,991 held-out names lie 26,267 of the 29,910 names (the whole data set, not a hard
    set); within 1 edit lie 11,702."""
    originals = sorted(set(names))
    extra = hard_negatives(originals, pool, max_distance) if pool is not None else []
    candidates = originals + extra
    rng, taken = random.Random(seed), set(candidates)
    queries = [corrupt(n, rng, avoid=taken) for n in originals]
    return RetrievalTask(candidates, queries, list(range(len(originals))))
