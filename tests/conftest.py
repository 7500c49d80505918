"""Shared test setup: headless matplotlib, tolerances in one place (tests/tolerances.py)."""
import os

os.environ.setdefault("MPLBACKEND", "Agg")
