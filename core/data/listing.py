"""Listing image files with their sizes and modification times, fast at a million files.

Reopening stored results of a million-image set is mostly this: every file is listed and
stat'ed (a file rewritten in place changes only its own mtime). In a Python loop that costs
about 2.7 µs a file here, listing included (2.7 s on one process); so a large ImageFolder tree is
walked by a few worker processes, each listing and stat'ing its share of the class folders
(1.6 s for 1,000,000 files on 2 cores, against 2.2 s for a listing, then Arrow's stats).
Paths that are already known (a manifest) are stat'ed by Arrow in C++ on a few threads.
"""

from __future__ import annotations

import multiprocessing
import os
import stat
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np
import pyarrow.fs as pafs

__all__ = ["Folder", "file_stats", "walk_folders"]

#: Below this many files (estimated from the first class folder) one process walks them all:
#: starting workers costs more than it saves.
PARALLEL_FILES = 20_000
#: At most this many worker processes (a walk is bound by the file system beyond that).
MAX_PROCESSES = 8

#: One listed class folder: its image files as ``folder/...`` paths in ImageFolder's order,
#: and each file's [size, mtime in ns] ([-1, -1] where there is no regular file).
Folder = tuple[list[str], np.ndarray]


def walk_folders(
    root: str,
    folders: Sequence[str],
    extensions: tuple[str, ...],
    processes: int | None = None,
    parallel_from: int = PARALLEL_FILES,
) -> list[Folder]:
    """List and stat the image files under each of ``root``'s ``folders``, in their order.

    The files under a folder are those of ``sorted(os.walk(folder, followlinks=True))`` with
    sorted names, as torchvision's ``make_dataset`` lists them; a folder that cannot be listed
    has none. ``processes`` (default: one per usable core, at most :data:`MAX_PROCESSES`) share
    the folders of a tree of ``parallel_from`` files or more (estimated from the first folder).
    """
    if not folders:
        return []
    first = _walk(root, folders[0], extensions)
    rest = folders[1:]
    workers = processes if processes is not None else _default_processes()
    if workers < 2 or len(rest) < 2 or len(first[0]) * len(folders) < parallel_from:
        return [first, *(_walk(root, folder, extensions) for folder in rest)]
    try:
        return [first, *_walk_in_processes(root, rest, extensions, workers)]
    except (OSError, BrokenProcessPool):  # no processes here (a sandbox, a limit): walk on
        return [first, *(_walk(root, folder, extensions) for folder in rest)]


def file_stats(paths: Sequence[str], threads: int = 2) -> np.ndarray:
    """[size, mtime in ns] of each file (links followed); [-1, -1] where there is no regular
    file (missing, a broken link, a folder).

    Arrow's filesystem stats the files in C++ with the GIL released, on a few threads: faster
    than ``os.stat`` in a Python loop. Only a regular file has a size there, so
    ``FileInfo.type`` (an enum: reading it doubled the time) is not read.
    """
    out = np.full((len(paths), 2), -1, dtype=np.int64)
    if not paths:
        return out
    local = pafs.LocalFileSystem()
    step = -(-len(paths) // (threads * 4))

    def stat_part(start: int) -> None:
        infos = local.get_file_info(paths[start : start + step])
        sizes = [info.size for info in infos]
        files = [i for i, size in enumerate(sizes) if size is not None]
        part = out[start : start + len(infos)]
        part[files, 0] = [sizes[i] for i in files]
        part[files, 1] = [infos[i].mtime_ns for i in files]

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(stat_part, range(0, len(paths), step)))
    return out


def _default_processes() -> int:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return min(usable or 1, MAX_PROCESSES)


def _walk_in_processes(
    root: str, folders: Sequence[str], extensions: tuple[str, ...], workers: int
) -> list[Folder]:
    """:func:`_walk` of each folder, worker ``i`` taking every ``workers``-th one from ``i``
    (neighbouring folders are alike in size, so the shares are too)."""
    shares = [list(folders[i::workers]) for i in range(workers)]
    # fork on Linux: nothing to import again, and a worker touches only os and NumPy, so the
    # caller's threads (a Streamlit server's) hold nothing it needs; elsewhere the default
    context = multiprocessing.get_context("fork" if sys.platform == "linux" else None)
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        done = list(pool.map(_walk_share, [root] * workers, shares, [extensions] * workers))
    out: list[Folder] = [([], np.empty((0, 2), np.int64))] * len(folders)
    for i, share in enumerate(done):
        for k, (joined, stats) in enumerate(share):
            out[i + k * workers] = (joined.split("\0") if joined else [], stats)
    return out


def _walk_share(
    root: str, folders: list[str], extensions: tuple[str, ...]
) -> list[tuple[str, np.ndarray]]:
    """A worker's folders, each with its paths joined by NUL: one string pickles far faster
    than a list of them."""
    listed = (_walk(root, folder, extensions) for folder in folders)
    return [("\0".join(rels), stats) for rels, stats in listed]


def _walk(root: str, folder: str, extensions: tuple[str, ...]) -> Folder:
    """The image files under ``root/folder`` (see :func:`walk_folders`), with their stats."""
    listed: list[tuple[str, str, list[str], np.ndarray]] = []
    pending = [(os.path.join(root, folder), folder)]
    while pending:
        path, prefix = pending.pop()
        try:
            names, stats, folders = _list(path, extensions)
        except OSError:
            continue  # as os.walk: a folder that cannot be listed is left out
        pending.extend((os.path.join(path, name), f"{prefix}/{name}") for name in folders)
        listed.append((path, prefix, names, stats))
    listed.sort(key=lambda part: (part[0], part[1]))
    rels = [f"{prefix}/{name}" for _, prefix, names, _ in listed for name in names]
    parts = [part[3] for part in listed]
    return rels, np.concatenate(parts) if parts else np.empty((0, 2), dtype=np.int64)


def _list(path: str, extensions: tuple[str, ...]) -> tuple[list[str], np.ndarray, list[str]]:
    """One folder's image files, sorted by name, with their stats; and its sub-folders.

    As os.walk decides it, a link to a folder is one and an entry that cannot be stat'ed (a
    link loop) is not. The loop is written out: at a million files each call in it counts.
    """
    names: list[str] = []
    sizes: list[int] = []
    mtimes: list[int] = []
    folders: list[str] = []
    with os.scandir(path) as entries:
        for entry in entries:
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                folders.append(entry.name)
            elif entry.name.lower().endswith(extensions):
                names.append(entry.name)
                try:
                    info = entry.stat()
                except OSError:
                    info = None
                if info is not None and stat.S_ISREG(info.st_mode):
                    sizes.append(info.st_size)
                    mtimes.append(info.st_mtime_ns)
                else:  # missing, a broken link, a FIFO...
                    sizes.append(-1)
                    mtimes.append(-1)
    order = sorted(range(len(names)), key=names.__getitem__)
    stats = np.empty((len(names), 2), dtype=np.int64)
    stats[:, 0] = np.array(sizes, dtype=np.int64)[order]
    stats[:, 1] = np.array(mtimes, dtype=np.int64)[order]
    return [names[i] for i in order], stats, folders
