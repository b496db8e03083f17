"""Data package `pepc.templates`: the jinja2 templates of the generated C header.

Installed under this name (see [tool.setuptools] in pyproject.toml) so that
pepc/policy/resources.py finds it with importlib.resources in every kind of install.
"""
