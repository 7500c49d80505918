"""The building blocks an algorithm file may import: surrogate derivatives, input encodings, convolution, the
linear fixed-point solvers, the official IDE code's parameter variants, argument checks and the numba shim.

Nothing here imports NumPy at package level: :mod:`refsnn.blocks._pools` must run before NumPy loads.
"""
