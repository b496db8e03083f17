"""Data package `pepc.bpf`: the XDP program's C source, compiled by clang at run time.

Installed under this name (see [tool.setuptools] in pyproject.toml) so that
pepc/policy/resources.py finds it with importlib.resources in every kind of install.
"""
