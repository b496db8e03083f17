"""Where pepc's non-Python files live: the schemas, templates and XDP source.

In the source tree they sit at the top (schema/, templates/, bpf/), beside
the package, so that a reviewer finds them from the folder listing; they
are installed as the data packages pepc.schema, pepc.templates and pepc.bpf
(pyproject.toml maps them), and found here with importlib.resources. That
is the one lookup for an editable install, a wheel and an sdist alike:
nothing else may build paths from the location of the source files.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path


def _directory(package: str) -> Path:
    where = importlib.resources.files(package)
    # clang and jinja2's FileSystemLoader need real files; pip always
    # installs unpacked, only a zipapp or a zipped site-packages would not be.
    if not isinstance(where, Path):
        raise ImportError(f"pepc's data package {package} is not a directory ({where}): install pepc with pip")
    return where


SCHEMA_DIR = _directory("pepc.schema")
TEMPLATES_DIR = _directory("pepc.templates")
BPF_DIR = _directory("pepc.bpf")
