"""The launcher of `edgeemo watch`: resolve and check the settings, then run the folder or the camera daemon."""
from __future__ import annotations

import logging

from . import config as cfg


def run_watch(given: dict, config_path=None) -> int:
    """Resolve the settings (raises SetupError, exit status 2), then run until stopped; returns the exit status."""
    s = cfg.resolve(given, config_path)
    logging.getLogger().setLevel(getattr(logging, s.log_level.upper()))
    if s.camera is not None:
        from .camera import CameraDaemon
        return CameraDaemon(s).run()
    from .watch import FolderDaemon
    return FolderDaemon(s).run()
