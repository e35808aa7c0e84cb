"""Atomic outputs: write under a temporary name in the target's folder, rename into place on success.

    with atomic_file("out/motion.npz") as tmp:      # tmp: out/.motion.npz.<random>.partial.npz
        np.savez(tmp, ...)                           # same suffix, so numpy/PIL/PyAV pick the format
    # -> out/motion.npz appears complete, or not at all

    with atomic_dir("out/demo", overwrite=True) as tmp:   # tmp: out/.demo.<random>.partial/
        ...write files into tmp...
    # -> out/demo replaced as a whole on success; on an exception (Ctrl-C included) tmp is removed

Files and folders get the usual permissions (0666 / 0777 less the umask), not the private mode
`tempfile` gives them. An OSError raised inside the block that names no file (disk full, file too
large) or names the temporary path gets the target path as its `filename`, so the error message
names what the user asked for.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

PARTIAL_MARK = ".partial"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def normal_file_mode(path: str | os.PathLike) -> None:
    """Give a file made by mkstemp (0600) the mode a plain `open()` would have given it."""
    os.chmod(path, 0o666 & ~_umask())


def normal_dir_mode(path: str | os.PathLike) -> None:
    """Give a folder made by mkdtemp (0700) the mode a plain `mkdir()` would have given it."""
    os.chmod(path, 0o777 & ~_umask())


def blame_target(exc: OSError, target: str | os.PathLike, temporary: str | os.PathLike | None = None) -> OSError:
    """`exc` pointing at what the user asked for: `target` (or the same place inside it).

    Returns `exc` itself when its filename could be set, else a plain OSError with the same errno
    (PyAV's errors have a read-only filename); raise that one `from exc`.
    """
    name = exc.filename
    if name is None:
        wanted = str(target)
    elif temporary is not None and str(name).startswith(str(temporary)):
        wanted = str(target) + str(name)[len(str(temporary)):]
    else:
        return exc
    try:
        exc.filename = wanted
        return exc
    except AttributeError:
        return OSError(exc.errno, exc.strerror or str(exc), wanted)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


@contextlib.contextmanager
def _removed_on_failure(temporary: Path, target: Path) -> Iterator[None]:
    """Remove `temporary` if the block fails; OS errors name `target` (what the user asked for)."""
    try:
        yield
    except OSError as exc:
        _remove(temporary)
        named = blame_target(exc, target, temporary)
        if named is not exc:
            raise named from exc
        raise
    except BaseException:
        _remove(temporary)
        raise


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to `path` (same suffix); rename it to `path` when the block succeeds."""
    target = Path(path)
    suffix = target.suffix if suffix is None else suffix
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f"{PARTIAL_MARK}{suffix}", dir=target.parent)
    os.close(fd)
    temporary = Path(name)
    with _removed_on_failure(temporary, target):
        yield temporary
        normal_file_mode(temporary)
        os.replace(temporary, target)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder next to `path`; it replaces `path` as a whole when the block succeeds.

    Without `overwrite`, an existing non-empty `path` is an error (FileExistsError) raised before
    anything is written; an existing empty folder is replaced.
    """
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(20, "Not a directory", str(target))
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise FileExistsError(17, "folder exists and is not empty", str(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=PARTIAL_MARK, dir=target.parent))
    with _removed_on_failure(temporary, target):
        normal_dir_mode(temporary)
        yield temporary
        replace_dir(temporary, target)


def replace_dir(source: Path, target: Path) -> None:
    """Move folder `source` to `target`, replacing an existing `target` (kept until the move worked)."""
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
        os.rmdir(old)
        os.replace(target, old)
    try:
        os.replace(source, target)
    except BaseException:
        if old is not None:
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
