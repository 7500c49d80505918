"""Shared test setup: headless matplotlib, tolerances in one place (tests/tolerances.py)."""
import os

os.environ.setdefault("MPLBACKEND", "Agg")


def pytest_terminal_summary(terminalreporter, config):
    """Say which random test order ran (pytest-randomly, when installed), also under -q."""
    seed = getattr(config.option, "randomly_seed", None)
    if config.pluginmanager.hasplugin("randomly") and isinstance(seed, int):
        terminalreporter.write_line(f"test order: pytest-randomly seed {seed} "
                                    f"(the same order again: -p randomly --randomly-seed={seed})")
