"""Where pepc's non-Python files live (schema/, templates/, bpf/).

They sit at the top of the source tree, beside the package, so that a
reviewer finds them from the folder listing; an editable install (the
supported way, see README) reads them in place.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_DIR = ROOT / "schema"
TEMPLATES_DIR = ROOT / "templates"
BPF_DIR = ROOT / "bpf"
