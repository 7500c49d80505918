#!/usr/bin/env python3
"""Fetch and verify a dataset into refsnn's data folder: the same code as ``refsnn data fetch NAME``.

Usage::

    python data_scripts/fetch_dataset.py NAME [--root DIR] [--mirror URL ...] [--force] [--no-progress]
    python data_scripts/fetch_dataset.py --all [--root DIR] ...     # fashion-mnist, mnist, emnist, n-mnist

NAME is one of ``refsnn data list`` (every ``emnist-*`` name fetches the one EMNIST archive).
Files go to ``--root``, else ``$REFSNN_DATA``, else ``$XDG_CACHE_HOME/refsnn`` (``~/.cache/refsnn``);
a file already present and verified anywhere refsnn looks is not downloaded again.  Each file is
written to ``FILE.part`` and moved into place only once its checksum matches.  With
``REFSNN_OFFLINE=1`` nothing is downloaded: the script lists what is missing and where it goes.
Exit status: 0 when every file is there and verified, 1 when a download failed, 2 on other errors.
"""
import sys
from pathlib import Path

try:
    from refsnn.cli import main
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from refsnn.cli import main

DOWNLOADABLE = ("fashion-mnist", "mnist", "emnist", "n-mnist")

if __name__ == "__main__":
    args = sys.argv[1:]
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        sys.exit(0 if args else 2)
    if args[0] == "--all":
        sys.exit(max(main(["data", "fetch", name, *args[1:]]) for name in DOWNLOADABLE))
    sys.exit(main(["data", "fetch", *args]))
