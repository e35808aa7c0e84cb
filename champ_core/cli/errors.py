"""The CLI's one error style: every expected failure ends in ONE line that names the input and what
to do, exit status 2, no traceback.

- Commands raise `CommandError("--out x.mp4: ...")` for their own checks.
- Library errors (the package's `ValueError` subclasses listed in `USER_ERRORS`, whose messages are
  written for users) and `OSError`s (permissions, read-only disk, a file where a folder should be,
  disk full, file too large, ...) reaching the dispatcher become such a line too: `describe_os_error`
  gives each kind its own advice and names the path, and the flag that gave it when one did.
- `check_*` helpers check paths before any expensive work; `atomic_file` / `atomic_dir` (from
  `champ_core.atomic`) write outputs under a temporary name and rename them into place.

Set CHAMP_TRACEBACK=1 to get the full traceback instead (for bug reports).
"""

from __future__ import annotations

import errno
import math
import os
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..atomic import atomic_dir, atomic_file  # noqa: F401  (re-exported for command modules)

EXIT_USER_ERROR = 2


class CommandError(Exception):
    """A user-facing error: printed as one line without a traceback, exit status 2."""


# (module relative to champ_core, class name): library errors whose message is written for users.
# A module not imported yet cannot have raised its error, so only loaded modules are looked at.
# New library error classes: add a line here (small edit) or raise CommandError in the command.
USER_ERRORS: tuple[tuple[str, str], ...] = (
    ("guidance", "GuidanceFolderError"),
    ("video", "VideoError"),
    ("body.model", "BodyModelError"),
    ("body.motion", "MotionError"),
    ("body.motions", "MotionSourceError"),
    ("body.keypoints", "KeypointError"),
    ("body.safe_pickle", "UnsafePickleError"),
    ("body.safe_pickle", "PickleFormatError"),
    ("body.smoothing", "SmoothingError"),
    ("body.alignment", "AlignmentError"),
    ("render.api", "RenderInputError"),
    ("render.backends", "RenderBackendError"),
    ("render.skeleton", "SkeletonInputError"),
    ("render.writer", "MotionFolderError"),
    ("models.errors", "CheckpointError"),
    ("models.errors", "ModelInputError"),
    ("pipeline.inputs", "InputError"),
    ("pipeline.loading", "WeightsError"),
    ("pipeline.scheduler", "SchedulerError"),
    ("pipeline.windows", "WindowError"),
    ("train.layout", "DatasetError"),
    ("train.config", "ConfigError"),
    ("train.prepare", "PrepareError"),
    ("train.synth", "SynthError"),
    ("train.state", "StateError"),
    ("train.datasets", "DataSkipLimitError"),
    ("train.trainer", "TrainingError"),
    ("evaluation.errors", "EvaluationError"),
    ("pose.errors", "PoseModelError"),
    ("pose.errors", "PoseDetectionError"),
)

_PACKAGE = __name__.rsplit(".", 2)[0]  # "champ_core" (or the path-derived name ComfyUI gives it)


def user_error_types() -> tuple[type, ...]:
    found = []
    for module_name, class_name in USER_ERRORS:
        module = sys.modules.get(f"{_PACKAGE}.{module_name}")
        cls = getattr(module, class_name, None) if module is not None else None
        if isinstance(cls, type) and issubclass(cls, BaseException):
            found.append(cls)
    return tuple(found)


def one_line(text: str) -> str:
    """Collapse a multi-line message into one line (parts joined with '; ')."""
    parts = [p.strip() for p in str(text).splitlines() if p.strip()]
    out = ""
    for part in parts:
        out += ("" if not out else (" " if out.endswith((":", ";", ",")) else "; ")) + part
    return out


# -- OS errors -------------------------------------------------------------------------------

def _exists_as_file(path: str) -> bool:
    return os.path.exists(path) and not os.path.isdir(path)


# a temporary name made by champ_core.atomic / VideoWriter / MotionFolderWriter: .NAME.<random>.partial[.ext]
_PARTIAL = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]{6,}\.partial(\.[^./]*)?$")


def final_path(name) -> str:
    """The path the user asked for, for a path inside temporary (.partial) files or folders."""
    parts = list(Path(os.fspath(name)).parts)
    for i, part in enumerate(parts):
        match = _PARTIAL.match(part)
        if match:
            parts[i] = match.group("name")
    return str(Path(*parts)) if parts else str(name)


def describe_os_error(exc: OSError, label: str | None = None) -> str:
    """One line for an OSError: which path, what went wrong, what to do. `label` names the flag."""
    path = final_path(exc.filename) if exc.filename else None
    shown = f"{label} {path}" if label and path else (label or (str(path) if path else "a file"))
    code = exc.errno
    if code in (errno.EACCES, errno.EPERM):
        return (f"{shown}: permission denied; make it readable/writable for your user (chmod/chown) "
                "or choose a path you can write to")
    if code == errno.EROFS:
        return f"{shown}: the file system is read-only; write the output to a folder on a writable disk"
    if code == errno.ENOTDIR:
        return (f"{shown}: a part of this path is a file, not a folder; remove or rename that file, "
                "or choose another path")
    if code == errno.EEXIST:
        if path and _exists_as_file(str(path)):
            return f"{shown}: a file is in the way where a folder is needed; remove it or choose another folder"
        return f"{shown}: already exists; remove it, pass --overwrite where the command has it, or choose another path"
    if code == errno.EISDIR:
        return f"{shown}: is a folder where a file is needed; give a file name"
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return f"{shown}: no space left on the disk (or quota exceeded); free some space or write to another disk"
    if code == errno.EFBIG:
        return (f"{shown}: the file grew past the largest size allowed here (`ulimit -f` or the file "
                "system's limit); raise the limit or write to another disk")
    if code == errno.ENOENT:
        return f"{shown}: does not exist; check the path"
    if code == errno.ENAMETOOLONG:
        return f"{shown}: the name is too long; choose a shorter path"
    if code == errno.ELOOP:
        return f"{shown}: too many symbolic links (a link loop?); fix the links or choose another path"
    if code in (errno.EMFILE, errno.ENFILE):
        return "too many open files; raise the limit (`ulimit -n`) and run again"
    if code == errno.EIO:
        return f"{shown}: input/output error; check the disk (or network share) and run again"
    if code == errno.ENXIO or code == errno.ENODEV:
        return f"{shown}: not a regular file or device that can be read; give a regular file"
    if code is None:  # e.g. PIL's "cannot identify image file": a file of the wrong kind
        return f"{shown}: cannot be read ({exc}); check that it is the right kind of file and not damaged"
    return f"{shown}: {exc.strerror or exc} (errno {code}); check the path, its permissions and the disk"


def _flag_for_path(filename, flags: dict[str, str]) -> str | None:
    """The flag whose value is `filename` or a folder above it (longest match)."""
    if not filename:
        return None
    try:
        name = os.path.abspath(os.fspath(filename))
    except TypeError:
        return None
    best, best_len = None, -1
    for value, flag in flags.items():
        candidate = os.path.abspath(value)
        if (name == candidate or name.startswith(candidate.rstrip(os.sep) + os.sep)) and len(candidate) > best_len:
            best, best_len = flag, len(candidate)
    return best


def path_flags(parser, args) -> dict[str, str]:
    """path-like argument value -> the flag (or positional name) that gave it."""
    flags: dict[str, str] = {}
    for action in getattr(parser, "_actions", []):
        value = getattr(args, action.dest, None) if action.dest else None
        values = value if isinstance(value, (list, tuple)) else [value]
        for item in values:
            if isinstance(item, (str, os.PathLike)) and str(item) and (os.sep in str(item) or "." in str(item)):
                flag = action.option_strings[-1] if action.option_strings else (action.metavar or action.dest.upper())
                flags.setdefault(str(item), str(flag))
    return flags


_OS_ERROR_TEXT = re.compile(r"os error (\d+)")


def os_error_from_text(exc: BaseException, path: str | os.PathLike | None = None) -> OSError | None:
    """An OSError for a library error that only carries one in its text (safetensors: 'os error 28')."""
    match = _OS_ERROR_TEXT.search(str(exc))
    if match is None:
        return None
    code = int(match.group(1))
    return OSError(code, os.strerror(code), None if path is None else str(path))


def error_line(exc: BaseException, flags: dict[str, str] | None = None) -> str | None:
    """The one line for an expected failure, or None for an unexpected one (a bug: traceback)."""
    if isinstance(exc, CommandError):
        return one_line(str(exc))
    if isinstance(exc, OSError) and not isinstance(exc, user_error_types()):
        name = final_path(exc.filename) if exc.filename else None
        return describe_os_error(exc, _flag_for_path(name, flags or {}))
    if isinstance(exc, user_error_types()):
        return one_line(str(exc))
    if type(exc).__name__ == "SafetensorError" and os_error_from_text(exc) is not None:
        return describe_os_error(os_error_from_text(exc))
    if type(exc).__name__ == "OutOfMemoryError" or isinstance(exc, MemoryError):
        return ("out of memory; use a smaller size (--width/--height), fewer frames per window "
                "(--window-length), --dtype fp16 on a GPU, or another device")
    return None


def report(exc: BaseException, flags: dict[str, str] | None = None) -> int | None:
    """Print the line for `exc` and return the exit status, or None to let the exception propagate."""
    if os.environ.get("CHAMP_TRACEBACK"):
        return None
    line = error_line(exc, flags)
    if line is None:
        return None
    print(f"error: {line}", file=sys.stderr)
    return EXIT_USER_ERROR


# -- checks before expensive work ------------------------------------------------------------

def _first_existing_parent(path: Path) -> Path:
    parent = path.absolute().parent
    while not parent.exists():
        if parent.is_symlink():  # a dangling link
            break
        parent = parent.parent
    return parent


def _check_parent(path: Path, flag: str) -> None:
    parent = _first_existing_parent(path)
    if not parent.is_dir():
        raise CommandError(f"{flag} {path}: {parent} is a file, not a folder; remove or rename it, "
                           "or choose another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        if _read_only_fs(parent):
            raise CommandError(f"{flag} {path}: {parent} is on a read-only file system; choose a folder on a "
                               "writable disk")
        raise CommandError(f"{flag} {path}: no permission to write into {parent}; choose a folder you can "
                           "write to or fix its permissions")


def _read_only_fs(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def check_output_file(path: str | os.PathLike, flag: str, suffixes: Sequence[str] | None = None,
                      overwrite: bool = True) -> Path:
    """An output file that can be written: right suffix, not a folder, its folder writable (or creatable)."""
    path = Path(path)
    if str(path) in ("", "."):
        raise CommandError(f"{flag}: give an output file name")
    if suffixes and path.suffix.lower() not in suffixes:
        raise CommandError(f"{flag} {path}: must end in {' or '.join(suffixes)}")
    if path.is_dir():
        raise CommandError(f"{flag} {path}: is a folder; give a file name inside it, e.g. {path / ('out' + (suffixes[0] if suffixes else ''))}")
    if path.exists() and not overwrite:
        raise CommandError(f"{flag} {path}: already exists; pass --overwrite or choose another name")
    _check_parent(path, flag)
    return path


def check_output_dir(path: str | os.PathLike, flag: str, overwrite: bool = False,
                     overwrite_flag: str = "--overwrite") -> Path:
    """An output folder that can be (re)created: not a file, empty or `overwrite`, parent writable."""
    path = Path(path)
    if str(path) == "":
        raise CommandError(f"{flag}: give an output folder")
    if path.exists() and not path.is_dir():
        raise CommandError(f"{flag} {path}: is a file, not a folder; remove it or choose another folder")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise CommandError(f"{flag} {path}: exists and is not empty; pass {overwrite_flag} or choose another folder")
    _check_parent(path, flag)
    return path


def check_input_file(path: str | os.PathLike, flag: str, what: str = "file",
                     suffixes: Iterable[str] | None = None) -> Path:
    """An input file that exists, is a file and can be read."""
    path = Path(path)
    if not path.exists():
        raise CommandError(f"{flag} {path}: {what} does not exist; check the path")
    if path.is_dir():
        raise CommandError(f"{flag} {path}: is a folder; give the {what} itself")
    if not os.access(path, os.R_OK):
        raise CommandError(f"{flag} {path}: no permission to read it; fix its permissions")
    if suffixes is not None and path.suffix.lower() not in tuple(suffixes):
        raise CommandError(f"{flag} {path}: expected a {what} ending in {' or '.join(suffixes)}")
    return path


def check_input_dir(path: str | os.PathLike, flag: str, what: str = "folder") -> Path:
    """An input folder that exists and can be listed."""
    path = Path(path)
    if not path.exists():
        raise CommandError(f"{flag} {path}: {what} does not exist; check the path")
    if not path.is_dir():
        raise CommandError(f"{flag} {path}: is a file; give the {what}")
    if not os.access(path, os.R_OK | os.X_OK):
        raise CommandError(f"{flag} {path}: no permission to read it; fix its permissions")
    return path


def check_positive(value: float | int, flag: str, integer: bool = False, allow_zero: bool = False) -> None:
    """A finite number > 0 (or >= 0)."""
    ok = isinstance(value, (int, float)) and math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok or (integer and int(value) != value):
        kind = "an integer" if integer else "a number"
        raise CommandError(f"{flag} {value}: must be {kind} {'>= 0' if allow_zero else '> 0'}")


def check_device(text: str | None, flag: str = "--device", allow_auto: bool = True):
    """A torch device string that exists on this machine ('auto' -> cuda if available else cpu)."""
    import torch

    if text is None or (allow_auto and text == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError) as exc:
        raise CommandError(f"{flag} {text}: not a device name; use cpu, cuda or cuda:N") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise CommandError(f"{flag} {text}: no CUDA GPU is available here; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise CommandError(f"{flag} {text}: only {torch.cuda.device_count()} CUDA device(s) here; "
                               f"use cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
    elif device.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise CommandError(f"{flag} {text}: MPS is not available here; use --device cpu")
    elif device.type != "cpu":
        raise CommandError(f"{flag} {text}: unsupported device type {device.type!r}; use cpu or cuda")
    return device
