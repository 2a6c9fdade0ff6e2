"""The folders of `edgeemo watch`: set up and checked at start, and locked so that one daemon owns them.

Nothing is created in the inbox; the lock is a kernel lock on the folder itself, and the PID of the daemon that
holds it is in the results folder's ``OWNER_FILE``.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

from .errors import SetupError, StartError

# Folders of the system that no inbox, output or metrics path may be, or lie under, unless the user says so
# (--allow-system-path): run as root, a typo there would move or overwrite the system's own files.
SYSTEM_DIRS = ("/etc", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/boot", "/proc", "/sys", "/dev")
OWNER_FILE = ".edgeemo.pid"     # in the results folder (the service's, not the producers'): who holds the locks


def expand_user(path: str | os.PathLike) -> Path:
    """``path`` with a leading ``~`` or ``~name`` expanded; as given where ``~name`` names no user of this
    system (then it is simply not found, and the error names it as the user wrote it)."""
    try:
        return Path(path).expanduser()
    except RuntimeError:
        return Path(path)


class FolderLock:
    """One daemon per folder: an exclusive kernel lock (``flock``) on an open descriptor of the folder itself.

    Nothing is created in the folder, so a producer who may write to an inbox can neither replace the lock
    by a link (which once let a start truncate results.jsonl) nor delete it to let a second daemon in; the
    kernel drops the lock when the process ends, however it ends. ``owner_file`` (in the results folder,
    opened with O_NOFOLLOW) holds the PID of the daemon that has the locks, for the message a second
    daemon prints."""

    def __init__(self, folder: Path, owner_file: Path | None = None):
        self.folder = folder
        try:
            self.fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise StartError(f"{folder}: cannot open the folder to lock it ({exc.strerror}); check that the "
                             f"service user may read it") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self.fd)
            owner = read_owner(owner_file)
            who = f"pid {owner}" if owner else "its process holds the lock"
            raise SetupError(f"{folder} is in use by another edgeemo watch ({who}); stop it first, or give this "
                             f"one its own folders") from None

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def read_owner(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, 32).decode(errors="replace").strip() or None
    finally:
        os.close(fd)


def write_owner(path: Path) -> None:
    """This process's PID in ``path`` (a regular file; a link there is refused, not followed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    finally:
        os.close(fd)


def prepare_folder(path: Path, what: str, create: bool = True) -> Path:
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StartError(f"{path}: cannot create the {what} folder ({exc.strerror or exc}); retrying at the next "
                             f"start") from None
    if not path.is_dir():
        hint = "create it (mkdir -p) or fix the path" if not path.exists() else "it is a file, not a folder"
        raise SetupError(f"{path}: the {what} folder does not exist; {hint}" if not path.exists()
                         else f"{path}: {hint}")
    if not os.access(path, os.W_OK | os.X_OK):
        raise StartError(f"{path}: the {what} folder is not writable by this user (uid {os.getuid()}); fix its "
                         f"owner or mode, or, under systemd, its ReadWritePaths=")
    return path


def system_folder(path: Path) -> str | None:
    """The system folder (SYSTEM_DIRS) that ``path`` is or lies under, links resolved; None when it is none."""
    real = os.path.realpath(os.path.abspath(os.fspath(path)))
    for d in SYSTEM_DIRS:
        if real == d or real.startswith(d + "/"):
            return d
    return None


def refuse_system_folder(path: Path, what: str, option: str) -> None:
    """SetupError when ``path`` is or lies under a system folder."""
    d = system_folder(path)
    if d is not None:
        raise SetupError(f"{option} {path}: the {what} lies in the system folder {d}; edgeemo refuses it so that a "
                         f"typo cannot move or overwrite system files. Choose another path, or give "
                         f"--allow-system-path (allow-system-path = true in the config file) if you mean it")
