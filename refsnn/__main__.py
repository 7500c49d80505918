"""``python -m refsnn`` is the ``refsnn`` command."""
import sys

from refsnn.cli import main

sys.exit(main())
