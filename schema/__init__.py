"""Data package `pepc.schema`: the JSON Schemas of pepc's documents.

Installed under this name (see [tool.setuptools] in pyproject.toml) so that
pepc/policy/resources.py finds it with importlib.resources in every kind of install.
"""
