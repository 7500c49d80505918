#!/bin/sh
# Install Fashion-MNIST from Debian's package dataset-fashion-mnist, then verify it with refsnn.
#
# The package puts the four IDX files in /usr/share/datasets/fashion-mnist/, one of the places
# refsnn.datasets.load("fashion-mnist") looks.  Debian re-compressed them (another gzip header),
# so their bytes differ from upstream's; refsnn accepts them by the SHA-256 of their content.
# Where apt is not available, use `refsnn data fetch fashion-mnist` (or data_scripts/fetch_dataset.py).
#
# Usage: sh data_scripts/install_fashion_mnist_debian.sh        (PYTHON=... picks the interpreter
#        that has refsnn installed; default python3)
set -eu
PKG=dataset-fashion-mnist
PYTHON=${PYTHON:-python3}

if dpkg-query -W -f='${Status}' "$PKG" 2>/dev/null | grep -q "install ok installed"; then
    echo "$PKG is already installed"
elif command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
    $SUDO apt-get update
    $SUDO apt-get install -y --no-install-recommends "$PKG"
else
    echo "apt-get is not available here: fetch the files instead with" >&2
    echo "    refsnn data fetch fashion-mnist" >&2
    exit 1
fi

if "$PYTHON" -c "import refsnn" 2>/dev/null; then
    exec "$PYTHON" -m refsnn data verify fashion-mnist
else
    echo "installed; refsnn is not importable with $PYTHON, so the files were not verified" >&2
    echo "(run: refsnn data verify fashion-mnist)" >&2
fi
