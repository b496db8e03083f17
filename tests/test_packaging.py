"""What pip installs is all pepc needs: every Python package of the tree and
every file of the data packages is declared in pyproject.toml.

scripts/wheel-smoke.sh (run by .ci/run) proves it end to end with a real
wheel in a fresh venv; these checks say *which* declaration is missing,
and run in a second.
"""

from __future__ import annotations

import fnmatch
import tomllib

from conftest import ROOT
from pepc.policy import resources

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]
DATA_PACKAGES = {"pepc.schema": "schema", "pepc.templates": "templates", "pepc.bpf": "bpf"}


def test_every_python_package_is_listed():
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "pepc").rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert set(SETUPTOOLS["packages"]) == found | set(DATA_PACKAGES)


def test_data_packages_map_the_top_level_directories():
    assert SETUPTOOLS["package-dir"] == DATA_PACKAGES


def test_every_data_file_is_package_data():
    for package, directory in DATA_PACKAGES.items():
        patterns = SETUPTOOLS["package-data"][package]
        files = [p.name for p in (ROOT / directory).iterdir() if p.is_file() and p.name != "__init__.py"]
        assert files, directory
        missed = [f for f in files if not any(fnmatch.fnmatch(f, pat) for pat in patterns)]
        assert not missed, f"{directory}/: not installed: {missed}; add a pattern to [tool.setuptools.package-data]"


def test_resources_are_found_through_the_installed_packages():
    # the editable install maps pepc.schema etc. to the top-level directories
    assert resources.SCHEMA_DIR == ROOT / "schema"
    assert resources.TEMPLATES_DIR == ROOT / "templates"
    assert resources.BPF_DIR == ROOT / "bpf"
    assert (resources.SCHEMA_DIR / "policy-set.schema.json").is_file()
    assert (resources.TEMPLATES_DIR / "pepc_policy.h.j2").is_file()
    assert (resources.BPF_DIR / "pepc_xdp.c").is_file()


def test_license_is_an_spdx_expression_with_its_file():
    project = PYPROJECT["project"]
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]
    assert "Apache License" in (ROOT / "LICENSE").read_text()
