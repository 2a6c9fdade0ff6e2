"""The one base of edgeemo's errors: each carries the exit status the command ends with, and a message that
says what happened, to which file, and what to do. The CLI prints it once (``edgeemo.cli``)."""
from __future__ import annotations


class EdgeemoError(Exception):
    """A fatal problem the user can fix; ``exit_code`` is the command's exit status."""

    exit_code = 1


class StartError(EdgeemoError):
    """A problem at start that can clear by itself (a folder not writable or not mounted yet, a full disk):
    exit status 1, so that systemd tries again after RestartSec instead of giving up."""

    exit_code = 1


class SetupError(EdgeemoError):
    """A configuration error found when a command or daemon starts (a bad setting, a missing inbox, an
    unusable model): exit status 2, which systemd does not restart (the unit's RestartPreventExitStatus=2)."""

    exit_code = 2
