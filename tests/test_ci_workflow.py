"""The CI workflow runs commands that work: every `pepc …` step of
.github/workflows/pepc.yml is run here on the repository's policies, and
the SARIF it uploads validates against SARIF 2.1.0."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import jsonschema
import yaml

from pepc.cli import main

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "pepc.yml"


def steps() -> list[dict]:
    doc = yaml.safe_load(WORKFLOW.read_text())
    on = doc.get("on", doc.get(True))  # YAML 1.1 reads a bare `on` as true
    assert "pull_request" in on
    (job,) = doc["jobs"].values()
    return job["steps"]


def test_workflow_uploads_the_sarif_the_check_step_writes():
    by_uses = {s.get("uses", "").split("@")[0]: s for s in steps()}
    upload = by_uses["github/codeql-action/upload-sarif"]
    check = next(s for s in steps() if "--format sarif" in s.get("run", ""))
    argv = shlex.split(check["run"])
    assert argv[argv.index("--output") + 1] == upload["with"]["sarif_file"]


def test_every_pepc_step_runs_on_the_example_policies(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    ran = []
    for step in steps():
        cmd = step.get("run", "")
        if not cmd.startswith("pepc "):
            continue
        argv = shlex.split(cmd)[1:]
        if "--output" in argv:
            argv[argv.index("--output") + 1] = str(tmp_path / "pepc.sarif")
        assert main(argv) == 0, cmd
        ran.append(argv[0])
    capsys.readouterr()
    assert sorted(ran) == ["check", "check", "test"]
    sarif = json.loads((tmp_path / "pepc.sarif").read_text())
    schema = json.loads((ROOT / "schema" / "sarif-2.1.0.schema.json").read_text())
    jsonschema.validate(sarif, schema)
    rules = {r["id"] for r in sarif["runs"][0]["tool"]["driver"]["rules"]}
    assert {res["ruleId"] for res in sarif["runs"][0]["results"]} <= rules
