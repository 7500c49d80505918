"""Where refsnn keeps files on disk: one folder for downloads and caches.

``data_home(root)`` is ``root`` if given, else ``$REFSNN_DATA``, else
``$XDG_CACHE_HOME/refsnn`` (default ``~/.cache/refsnn``).  The environment is
read at call time, never at import, and nothing is created here.

:mod:`refsnn.harness.datasets` downloads into ``data_home()/NAME``; ST-RSBP caches its
d-tables in ``data_home()/st_rsbp``.  This module is the one both import, so
that an algorithm module needs nothing of the dataset machinery.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["data_home", "user_cache_dir", "env_path"]


def env_path(var: str) -> Path | None:
    """The path in environment variable ``var`` (``~`` expanded), or None when unset or empty."""
    value = os.environ.get(var, "").strip()
    return Path(value).expanduser() if value else None


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/refsnn`` if that is an absolute path, else ``~/.cache/refsnn``."""
    xdg = env_path("XDG_CACHE_HOME")
    return (xdg if xdg is not None and xdg.is_absolute() else Path.home() / ".cache") / "refsnn"


def data_home(root=None) -> Path:
    """Folder that downloads and caches go into: ``root`` > ``$REFSNN_DATA`` > the user cache.

    Read at call time; nothing is created (whoever writes creates it).
    """
    if root is not None:
        return Path(root).expanduser()
    return env_path("REFSNN_DATA") or user_cache_dir()
