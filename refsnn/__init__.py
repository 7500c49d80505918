"""refsnn: NumPy reference implementations of four SNN training algorithms."""
__version__ = "0.1.0"
