"""`pepc check`: exit codes, formats, options."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from pepc.cli import main

from conftest import ROOT


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


def test_examples_are_clean(capsys, examples):
    rc, out, _ = run(capsys, "check", str(examples))
    assert rc == 0, out
    assert "0 errors" in out


def test_examples_clean_through_the_console_script(examples):
    exe = Path(sys.executable).with_name("pepc")
    proc = subprocess.run([str(exe), "check", "policies.d/"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "policies.d/20-blocklist.yaml" in proc.stdout  # the expired example rule, as info


def test_examples_json(capsys, examples):
    rc, out, _ = run(capsys, "check", "--format", "json", str(examples))
    doc = json.loads(out)
    assert rc == 0 and doc["ok"] is True
    assert doc["summary"]["files"] == 4 and doc["summary"]["rules"] >= 10
    assert {"expired", "disabled"} <= {f["code"] for f in doc["findings"]}
    assert all(f["severity"] != "error" for f in doc["findings"])


def test_fail_on(capsys, examples):
    # The examples hold an expired and a disabled rule: info findings.
    assert run(capsys, "check", "--fail-on", "error", str(examples))[0] == 0
    rc, out, _ = run(capsys, "check", "--fail-on", "info", "--format", "json", str(examples))
    assert rc == 1 and json.loads(out)["ok"] is False


def test_now_moves_the_clock(capsys, examples):
    _, out, _ = run(capsys, "check", "--format", "json", "--now", "2024-01-01T00:00:00Z", str(examples))
    assert "expired" not in {f["code"] for f in json.loads(out)["findings"]}
    _, out, _ = run(capsys, "check", "--format", "json", "--now", "2031-01-01T00:00:00Z", str(examples))
    expired = {f["rule"] for f in json.loads(out)["findings"] if f["code"] == "expired"}
    assert {"block_abuser", "block_scanner_2024", "legacy_backup_ssh"} <= expired


def test_bad_now_is_bad_usage(capsys, examples):
    with pytest.raises(SystemExit) as info:
        main(["check", "--now", "yesterday", str(examples)])
    assert info.value.code == 2
    assert "yesterday" in capsys.readouterr().err


def test_output_file(capsys, examples, tmp_path):
    target = tmp_path / "report.sarif"
    rc, out, _ = run(capsys, "check", "--format", "sarif", "--output", str(target), str(examples))
    assert rc == 0 and out == ""
    log = json.loads(target.read_text())
    schema = json.loads((ROOT / "schema" / "sarif-2.1.0.schema.json").read_text())
    jsonschema.validators.validator_for(schema)(schema).validate(log)
    assert log["runs"][0]["results"]  # the examples' info findings


def test_output_to_unwritable_place_is_an_environment_error(capsys, examples, tmp_path):
    rc, _, err = run(capsys, "check", "--output", str(tmp_path / "no" / "such" / "dir" / "r.txt"), str(examples))
    assert rc == 3 and "cannot write" in err


def _policy(tmp_path: Path, text: str) -> Path:
    d = tmp_path / "policies.d"
    d.mkdir(exist_ok=True)
    (d / "p.yaml").write_text(text)
    return d


def test_load_errors_exit_2_in_every_format(capsys, tmp_path):
    d = _policy(tmp_path, "policies: [{id: a, action: ALLOW, src: {ip: 1.2.3.4/8}}]\n")
    for fmt in ("text", "json", "sarif", "github"):
        rc, out, _ = run(capsys, "check", "--format", fmt, str(d))
        assert rc == 2 and "bad-cidr" in out
    rc, out, _ = run(capsys, "check", "--format", "json", str(d))
    assert json.loads(out)["ok"] is False


def test_config_beside_the_directory_is_read(capsys, tmp_path):
    d = _policy(tmp_path, "policies: [{id: a, action: ALLOW}]\n")
    (tmp_path / "pepc.yaml").write_text("default_action: DENY\n")
    rc, out, _ = run(capsys, "check", str(d))
    assert rc == 2 and "bad-config" in out and "pepc.yaml:1:" in out


def test_config_option(capsys, tmp_path):
    d = _policy(tmp_path, "policies: [{id: a, action: BLOCK, enabled: false}]\n")
    cfg = tmp_path / "other.yaml"
    cfg.write_text("severity: {disabled: error}\n")
    rc, out, _ = run(capsys, "check", "--config", str(cfg), "--format", "json", str(d))
    doc = json.loads(out)
    assert rc == 1 and doc["findings"][0]["severity"] == "error"


def test_errors_in_policy_and_config_are_reported_together(capsys, tmp_path):
    d = _policy(tmp_path, "policies: [{id: a, action: ALOW}]\n")
    (tmp_path / "pepc.yaml").write_text("interfaces: eth0\n")
    rc, out, _ = run(capsys, "check", "--format", "json", str(d))
    assert rc == 2 and [f["code"] for f in json.loads(out)["findings"]] == ["bad-config", "schema"]


def test_help_documents_exit_codes(capsys):
    with pytest.raises(SystemExit):
        main(["check", "--help"])
    out = capsys.readouterr().out
    assert "exit codes" in out and "--fail-on" in out and "--now" in out


SHADOWING = (
    "policies:\n"
    "  - {id: wide, action: BLOCK, priority: 100, dst: {ip: 10.0.0.0/8}}\n"
    "  - {id: narrow, action: ALLOW, priority: 50, dst: {ip: 10.1.0.0/16}}\n"
)


def _broken_dir(tmp_path: Path) -> Path:
    d = tmp_path / "policies.d"
    d.mkdir()
    (d / "a.yaml").write_text(SHADOWING)
    (d / "b.yaml").write_text("policies: [{id: b, action: ALLOW\n")  # YAML syntax
    # a schema error, and a shadowed rule of its own that must not be reported
    (d / "c.yaml").write_text(SHADOWING.replace("wide", "c_wide").replace("narrow", "c_narrow") + "  - {id: c, action: ALLOW, colour: red}\n")
    return d


def test_a_broken_file_does_not_hide_the_anomalies_of_the_others(capsys, tmp_path):
    d = _broken_dir(tmp_path)
    without = [str(d / "b.yaml"), str(d / "c.yaml")]

    rc, out, _ = run(capsys, "check", "--format", "json", str(d))
    doc = json.loads(out)
    assert rc == 2 and doc["ok"] is False
    by_code = {}
    for f in doc["findings"]:
        by_code.setdefault(f["code"], []).append(f)
    assert sorted(by_code) == ["shadowed", "unknown-key", "yaml-syntax"]
    assert [f["rule"] for f in by_code["shadowed"]] == ["narrow"]
    assert doc["summary"]["computed_without"] == without
    assert (doc["summary"]["files"], doc["summary"]["rules"]) == (1, 2)

    rc, out, _ = run(capsys, "check", str(d))
    assert rc == 2 and "[shadowed]" in out and "[yaml-syntax]" in out
    assert out.splitlines()[-1].startswith(f"note: rule anomalies were computed without 2 files that cannot be loaded ({without[0]}, {without[1]})")

    rc, out, _ = run(capsys, "check", "--format", "sarif", str(d))
    log = json.loads(out)
    schema = json.loads((ROOT / "schema" / "sarif-2.1.0.schema.json").read_text())
    jsonschema.validators.validator_for(schema)(schema).validate(log)
    (run_,) = log["runs"]
    assert rc == 2 and run_["properties"]["computedWithout"] == without
    (note,) = run_["invocations"][0]["toolExecutionNotifications"]
    assert [loc["physicalLocation"]["artifactLocation"]["uri"] for loc in note["locations"]] == [
        Path(w).as_uri() for w in without
    ]
    assert "shadowed" in {r["ruleId"] for r in run_["results"]}

    rc, out, _ = run(capsys, "check", "--format", "github", str(d))
    assert rc == 2 and out.splitlines()[-1].startswith("::warning title=pepc::rule anomalies were computed without 2 files")


def test_a_clean_check_says_nothing_of_left_out_files(capsys, tmp_path):
    d = _policy(tmp_path, SHADOWING)
    rc, out, _ = run(capsys, "check", "--format", "json", str(d))
    assert rc == 1 and "computed_without" not in json.loads(out)["summary"]
    rc, out, _ = run(capsys, "check", "--format", "sarif", str(d))
    assert "invocations" not in json.loads(out)["runs"][0]
    assert not run(capsys, "check", str(d))[1].splitlines()[-1].startswith("note:")


def test_no_anomalies_without_a_host_configuration(capsys, tmp_path):
    d = _broken_dir(tmp_path)
    (tmp_path / "pepc.yaml").write_text("default_action: DENY\n")
    rc, out, _ = run(capsys, "check", "--format", "json", str(d))
    doc = json.loads(out)
    assert rc == 2 and "shadowed" not in {f["code"] for f in doc["findings"]}
    assert "computed_without" not in doc["summary"]


def test_jobs_splits_the_analysis_and_reports_the_same(capsys, examples, monkeypatch):
    from pepc.checker import workers

    used = []
    real = workers.split
    monkeypatch.setattr(workers, "split", lambda an, run_, jobs: used.append(jobs) or real(an, run_, jobs))
    rc1, one, _ = run(capsys, "check", "--format", "json", "--jobs", "1", str(examples))
    rc3, three, _ = run(capsys, "check", "--format", "json", "--jobs", "3", str(examples))
    assert (rc1, one) == (rc3, three)
    assert used == [1, 1, 3, 3]  # coverage and pairs, each run: the flag reached the split


def test_jobs_below_one_is_bad_usage(capsys, examples):
    rc, _, err = run(capsys, "check", "--jobs", "0", str(examples))
    assert rc == 2 and "--jobs must be 1 or more" in err


def test_a_bad_job_count_in_the_environment_is_an_environment_error(capsys, examples, monkeypatch):
    monkeypatch.setenv("PEPC_CHECK_JOBS", "many")
    rc, _, err = run(capsys, "check", str(examples))
    assert rc == 3 and "PEPC_CHECK_JOBS must be a whole number of 1 or more" in err
