"""Directories that are either complete or absent: files are written into a temporary directory
beside the target and fsynced, a manifest (each file's size and sha256) is written last, then
one rename puts the directory in place. A reader verifies the manifest before trusting a byte.

rename(2) of a directory is atomic on POSIX file systems, so after a crash (kill -9, power loss
once the fsyncs returned) the target either holds every file the manifest lists or does not
exist; what a crash leaves is a temporary directory, which the next writer removes."""
import hashlib
import json
import os
import shutil
from pathlib import Path

MANIFEST = "manifest.json"
TMP_PREFIX = ".tmp-"


class DamagedError(ValueError):
    """A directory whose manifest is missing or does not match its files."""


def _digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_file(path, data):
    """Writes bytes `data` to a new file at `path` and fsyncs it. Every byte of a checkpoint goes
    through here (tests patch it to simulate a full disk)."""
    with open(path, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def fsync_dir(path):
    """Makes the entries of directory `path` (new files, renames) durable."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _files(directory):
    """Every regular file under `directory`, as paths relative to it, sorted."""
    root = Path(directory)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def clean(parent):
    """Removes what interrupted writers left in `parent` (temporary directories)."""
    for leftover in Path(parent).glob(f"{TMP_PREFIX}*"):
        shutil.rmtree(leftover, ignore_errors=True)


def stage(parent, name):
    """A fresh, empty temporary directory for `name` inside `parent` (created if needed); a
    leftover of the same name from an interrupted writer is removed first."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f"{TMP_PREFIX}{name}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    return tmp


def commit(tmp, target):
    """Writes the manifest of every file in `tmp`, fsyncs files and directories, and renames
    `tmp` to `target` (which must not exist). Files not written by write_file (e.g. another
    library's shards) are fsynced here."""
    tmp, target = Path(tmp), Path(target)
    records = {}
    for name in _files(tmp):
        path = tmp / name
        with open(path, "rb") as f:
            os.fsync(f.fileno())
        records[name] = {"size": path.stat().st_size, "sha256": _digest(path)}
    for sub in {(tmp / name).parent for name in records} - {tmp}:
        fsync_dir(sub)
    write_file(tmp / MANIFEST, json.dumps({"files": records}, indent=1).encode())
    fsync_dir(tmp)
    os.rename(tmp, target)
    fsync_dir(target.parent)


def remove(directory):
    """Deletes a committed directory without ever leaving a half-deleted one under its name:
    it is renamed to a temporary name first."""
    directory = Path(directory)
    doomed = directory.with_name(f"{TMP_PREFIX}old-{directory.name}")
    os.rename(directory, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def verify(directory):
    """Checks every file the manifest of `directory` lists (present, size, sha256); raises
    DamagedError naming the first bad file (its message reads after "got ...")."""
    directory = Path(directory)
    path = directory / MANIFEST
    try:
        records = json.loads(path.read_text())["files"]
    except FileNotFoundError:
        raise DamagedError(f"{directory} without {MANIFEST} (a partial or foreign "
                           f"directory)") from None
    except (ValueError, KeyError, TypeError):
        raise DamagedError(f"{path} unreadable (expected JSON with 'files')") from None
    for name, record in records.items():
        file = directory / name
        if not file.is_file():
            raise DamagedError(f"{file} missing (listed in {MANIFEST})")
        size = file.stat().st_size
        if size != record["size"]:
            raise DamagedError(f"{file} of {size} bytes where {MANIFEST} says {record['size']} "
                               f"(truncated or overwritten)")
        digest = _digest(file)
        if digest != record["sha256"]:
            raise DamagedError(f"{file} with sha256 {digest[:16]}... where {MANIFEST} says "
                               f"{record['sha256'][:16]}... (corrupted)")
