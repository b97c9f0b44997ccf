"""Accelerated twins of `ollamapy.engine` ops (installed as `ollamapy_kernels`).

Every kernel here has a pure-PyTorch reference in the engine with the same signature and a
test comparing the two. The reference path always works on CPU; nothing here is required.
"""
