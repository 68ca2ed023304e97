"""Atomic outputs: a directory or file appears complete or not at all, and nothing else is ever lost.

Rules (issue 17):
  * an output never is, nor contains, the working directory, an input of the run, or another output of
    the same run (`check_output(..., inputs=..., others=...)`, `check_outputs`);
  * `~` is expanded, an empty path is refused, a name too long for its temporary siblings is refused
    before any work;
  * temporary files and folders are created exclusively (O_EXCL: never through an existing name or
    symlink) in the destination folder, removed on any exit (SIGTERM too, after
    `install_sigterm_handler()`), and published by one rename;
  * without `overwrite` an existing output is never replaced, even if it appears while the command runs;
    with it, a folder is replaced only if everything in it is something the command writes again;
  * outputs written together (`atomic_files`) appear together or not at all;
  * a full disk is reported as such (`DiskFullError`), naming where, whatever library raised it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import DiskFullError, InputError, WorkKeptError

LOW_SPACE = 1 << 20  # free bytes under which a failed write is taken for a full disk
TEMP_ROOM = 40  # bytes a name needs for temporary and side-file suffixes (".NAME.ckpt.rank0-of-8.tmp-XXXXXXXX")

PathLike = str | os.PathLike


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish(tmp: Path, mode: int) -> None:
    """Give a temporary (owner-only) file or folder the permissions a plain create would have."""
    tmp.chmod(mode & ~_umask())


def output_path(path: PathLike) -> Path:
    """`path` with `~` expanded; InputError for an empty path."""
    text = os.fspath(path)
    if not str(text).strip():
        raise InputError("the output path is empty; pass a file or folder name, e.g. --out result")
    return Path(os.path.expanduser(text))


def _real(path: PathLike) -> Path:
    """Absolute path with symlinks resolved (as far as it exists)."""
    return Path(os.path.expanduser(os.fspath(path))).resolve()


def _within(inner: Path, outer: Path) -> bool:
    """True when `inner` is `outer` or lies under it (both resolved)."""
    return inner == outer or outer in inner.parents


def _check_name(path: Path, probe: Path) -> None:
    try:
        limit = os.pathconf(probe, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    size = len(os.fsencode(path.name))
    if size + TEMP_ROOM > limit:
        raise InputError(f"output name {path.name[:40]}... is {size} bytes; names here may have at most "
                         f"{limit - TEMP_ROOM} (room is kept for temporary files); choose a shorter --out")


def _check_parent(path: Path) -> Path:
    """The first existing ancestor of `path`'s folder; InputError if it is not a writable folder."""
    parent = path.parent
    probe = parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK):
        raise InputError(f"cannot write to {parent}; choose an output path in a writable directory")
    return probe


def input_overlap(path: PathLike, inputs: Iterable[PathLike], exists: bool = True) -> tuple[str, PathLike] | None:
    """("contains", input) when `path` is or contains an input, ("inside", input) when it lies in one (only
    checked for an existing `path`: a new file beside a model is fine); None when it touches none."""
    real = _real(path)
    for item in inputs:
        if item is None or not str(item).strip():
            continue
        if _within(_real(item), real):
            return "contains", item
        if exists and _within(real, _real(item)):
            return "inside", item
    return None


def check_output(path: PathLike, overwrite: bool = False, *, inputs: Iterable[PathLike] = (),
                 others: Iterable[PathLike] = (), kind: str | None = None,
                 writes: Iterable[str] | None = None) -> Path:
    """Validate an output path before any work; returns it with `~` expanded.

    Refuses: an empty path; a path that is or contains the working directory; one that is or contains
    an input (`inputs`: files and folders the command reads, a manifest's audio files included), or exists
    inside one; one that is, contains or lies in another output of the same run (`others`); an existing
    path without `overwrite`; a folder where a file goes (`kind="file"`) or the reverse (`kind="dir"`); with
    `writes` (every name the command may write into the folder), an existing folder holding anything else;
    an unwritable parent or one under a regular file; a name too long for the temporary siblings.
    """
    path = output_path(path)
    real = _real(path)
    if _within(Path.cwd().resolve(), real):
        raise InputError(f"--out {path} is or contains the working directory; name a new file or folder instead")
    exists = path.exists() or path.is_symlink()
    overlap = input_overlap(path, inputs, exists)
    if overlap is not None:
        how, item = overlap
        raise InputError(f"--out {path} is or contains the input {item}; write the result somewhere else"
                         if how == "contains" else
                         f"--out {path} is part of the input {item}; write the result somewhere else")
    for other in others:
        other_real = _real(other)
        if _within(other_real, real) or _within(real, other_real):
            raise InputError(f"{path} collides with {other}, another output of this run; choose another --out")
    folder = path.is_dir() and not path.is_symlink()
    if exists and kind == "file" and folder:
        raise InputError(f"{path} is a folder; --overwrite replaces only the file this command writes")
    if exists and kind == "dir" and not folder:
        raise InputError(f"{path} is not a folder; --overwrite replaces only a folder this command wrote")
    if exists and not overwrite:
        raise InputError(f"{path} already exists; choose another output path or pass --overwrite")
    if folder and writes is not None:
        _refuse_foreign(path, set(writes))
    _check_name(path, _check_parent(path))
    return path


def check_outputs(*paths: PathLike) -> list[Path]:
    """Refuse two outputs of one run that are the same path or nest (e.g. `--out s.png` beside its heat map)."""
    real = [_real(p) for p in paths]
    for i, a in enumerate(real):
        for j in range(i):
            if _within(a, real[j]) or _within(real[j], a):
                raise InputError(f"output {paths[i]} collides with {paths[j]}, another output of this run; "
                                 "choose another --out")
    return [output_path(p) for p in paths]


def exclusive_temp(folder: PathLike, name: str, suffix: str = "", directory: bool = False) -> Path:
    """A new, empty temporary file (or folder) `.NAME.tmp-XXXXXXXX` in `folder`, created with O_EXCL.

    It never reuses an existing name, so a planted symlink is never followed.
    """
    folder = Path(folder)
    if directory:
        return Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", suffix=suffix, dir=folder))
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.tmp-", suffix=suffix, dir=folder)
    os.close(fd)
    return Path(tmp)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _refuse_foreign(old: Path, mine: set[str]) -> None:
    """InputError naming the entries of the existing folder `old` that are not among the names `mine`."""
    foreign = sorted(p.name for p in old.iterdir() if p.name not in mine)
    if foreign:
        raise InputError(f"{old} holds {', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''}, which "
                         "this command does not write; --overwrite will not delete them: move them or choose "
                         "another --out")


def publish_file(tmp: Path, path: Path, overwrite: bool) -> None:
    """Move the finished file `tmp` to `path` in one step; without `overwrite` never replace anything."""
    if overwrite:
        if path.is_dir() and not path.is_symlink():
            raise InputError(f"{path} is a folder; --overwrite replaces only the file this command writes")
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # fails with EEXIST if anything (a file, a link) appeared meanwhile
    except FileExistsError:
        raise InputError(f"{path} appeared while this command ran; choose another output path or pass "
                         "--overwrite") from None
    except OSError as err:  # no hard links on this file system: check, then rename
        if err.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        if path.exists() or path.is_symlink():
            raise InputError(f"{path} appeared while this command ran; choose another output path or pass "
                             "--overwrite") from None
        os.rename(tmp, path)
        return
    tmp.unlink()


def publish_dir(tmp: Path, path: Path, overwrite: bool) -> None:
    """Move the finished folder `tmp` to `path` by rename.

    Without `overwrite` an existing non-empty `path` is never touched (rename(2) refuses to replace a
    non-empty folder). With it, an existing folder is first checked to hold only names the new output
    writes too, moved aside, replaced, and then deleted.
    """
    if not (path.exists() or path.is_symlink()):
        try:
            os.rename(tmp, path)
            return
        except OSError as err:
            if err.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                raise
    if not overwrite:
        raise InputError(f"{path} appeared while this command ran; choose another output path or pass "
                         "--overwrite")
    if not path.is_dir() or path.is_symlink():
        raise InputError(f"{path} is not a folder; --overwrite replaces only a folder this command wrote")
    _refuse_foreign(path, {p.name for p in tmp.iterdir()})
    aside = exclusive_temp(path.parent, path.name, ".old", directory=True)
    os.rename(path, aside)  # replaces the empty `aside` folder
    try:
        os.rename(tmp, path)
    except BaseException:
        os.rename(aside, path)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def free_bytes(path: PathLike) -> int:
    """Free bytes on the file system holding `path` (its first existing ancestor); a huge number if unknown."""
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free
    except OSError:
        return 1 << 62


def is_disk_full(err: BaseException, where: PathLike) -> bool:
    """True when `err` is (or, from a library that hides errno, such as torch.save or libsndfile, looks
    like) a write that failed for lack of space on the disk holding `where`."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(err, (OSError, RuntimeError)) and free_bytes(where) < LOW_SPACE


def disk_full_error(err: BaseException, where: PathLike, advice: str) -> DiskFullError:
    """The one-line DiskFullError for `err`, raised while writing `where`; `advice` says what to do."""
    first = next((line for line in str(err).splitlines() if line.strip()), type(err).__name__)
    return DiskFullError(f"the disk is full: writing {where} failed ({first[:120]}); {advice}")


@contextlib.contextmanager
def disk_full_reported(where: PathLike, advice: str = "nothing was written: free space there or choose another "
                                                          "--out") -> Iterator[None]:
    """Re-raise a write failure inside the block as `DiskFullError` when the disk holding `where` is full."""
    try:
        yield
    except DiskFullError:
        raise
    except (OSError, RuntimeError) as err:
        if is_disk_full(err, where):
            raise disk_full_error(err, where, advice) from err
        raise


class Disposable:
    """Whether a failed run may remove its work folder, asked in the `except` block that handles the failure:
    truthy (remove it) unless the failure is a full disk or a `WorkKeptError`, whose checkpoints or
    finished result stay for --resume (resume never loses work)."""

    def __init__(self, work: PathLike) -> None:
        self.work = Path(work)

    def __bool__(self) -> bool:
        failure = sys.exc_info()[1]
        return failure is None or not (isinstance(failure, (DiskFullError, WorkKeptError))
                                       or is_disk_full(failure, self.work))


@contextlib.contextmanager
def atomic_dir(path: PathLike, overwrite: bool = False, *, inputs: Iterable[PathLike] = (),
               others: Iterable[PathLike] = ()) -> Iterator[Path]:
    """Yield a temporary directory beside `path`; it becomes `path` only if the block succeeds."""
    path = check_output(path, overwrite, inputs=inputs, others=others, kind="dir")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = exclusive_temp(path.parent, path.name, directory=True)
    try:
        with disk_full_reported(path):
            yield tmp
        _publish(tmp, 0o777)
        publish_dir(tmp, path, overwrite)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(path: PathLike, overwrite: bool = False, *, inputs: Iterable[PathLike] = (),
                others: Iterable[PathLike] = ()) -> Iterator[Path]:
    """Yield a temporary file path beside `path`; it replaces `path` only if the block succeeds."""
    with atomic_files([path], overwrite, inputs=inputs, others=others) as (tmp,):
        yield tmp


@contextlib.contextmanager
def atomic_files(paths: Iterable[PathLike], overwrite: bool = False, *, inputs: Iterable[PathLike] = (),
                 others: Iterable[PathLike] = ()) -> Iterator[list[Path]]:
    """Yield one temporary file per path; they replace `paths` together if the block succeeds, or none does
    (a score file and its heat map: a failure publishing the second puts the first back as it was)."""
    paths = [check_output(p, overwrite, inputs=inputs, others=others, kind="file") for p in paths]
    check_outputs(*paths)
    temps: list[Path] = []
    try:
        for path in paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            temps.append(exclusive_temp(path.parent, path.name, path.suffix))
        with disk_full_reported(paths[0]):
            yield temps
        for tmp in temps:
            _publish(tmp, 0o666)
        publish_files(list(zip(temps, paths)), overwrite)
    finally:
        for tmp in temps:
            tmp.unlink(missing_ok=True)


def publish_files(pairs: list[tuple[Path, Path]], overwrite: bool) -> None:
    """Publish every (temporary file, destination) pair, or none: all destinations are checked first, replaced
    ones are moved aside, and a failure restores every destination already touched."""
    for _, path in pairs:
        if path.is_dir() and not path.is_symlink():
            raise InputError(f"{path} is a folder; --overwrite replaces only the file this command writes")
        if not overwrite and (path.exists() or path.is_symlink()):
            raise InputError(f"{path} appeared while this command ran; choose another output path or pass "
                             "--overwrite")
    done: list[tuple[Path, Path | None]] = []  # (published destination, its old version moved aside)
    try:
        for tmp, path in pairs:
            aside = None
            if overwrite and (path.exists() or path.is_symlink()):
                aside = exclusive_temp(path.parent, path.name, ".old")
                os.replace(path, aside)
            try:
                publish_file(tmp, path, overwrite=False)
            except BaseException:
                if aside is not None:
                    os.replace(aside, path)
                raise
            done.append((path, aside))
    except BaseException:
        for path, aside in reversed(done):  # every destination as it was before
            if aside is not None:
                os.replace(aside, path)
            else:
                path.unlink(missing_ok=True)
        raise
    for _, aside in done:
        if aside is not None:
            aside.unlink(missing_ok=True)


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def install_sigterm_handler() -> None:
    """Turn SIGTERM into `SystemExit(143)` so `finally` blocks run and temporary outputs are removed.

    Call once at program start (the CLI's `main()`); a no-op outside the main thread.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
