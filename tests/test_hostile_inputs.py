"""Hostile and broken input: one clear, located error per problem, exit 2,
never a traceback. Each test runs the real CLI entry point (`pepc.cli.main`).
"""

from __future__ import annotations

import json
import os
import re
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pepc.cli import main
from pepc.policy.diagnostics import CODES, PolicyError
from pepc.loader import load_policy


def check(capsys, path: Path | str, *extra: str) -> tuple[int, list[dict], str]:
    """Run `pepc check --format json PATH`; the exit code, findings, all output."""
    rc = main(["check", "--format", "json", str(path), *extra])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    doc = json.loads(out)
    assert doc["ok"] is False
    return rc, doc["findings"], out + err


def check_text(capsys, path: Path | str) -> str:
    rc = main(["check", str(path)])
    out, err = capsys.readouterr()
    assert rc == 2 and "Traceback" not in out + err
    return out + err


def load_errors(findings: list[dict]) -> list[dict]:
    """Without the rule anomalies that `pepc check` also reports for the
    files that did load."""
    return [f for f in findings if CODES[f["code"]].blocks_load]


def only(findings: list[dict], code: str, *, located: bool = True) -> dict:
    assert [f["code"] for f in findings] == [code], findings
    f = findings[0]
    assert f["file"] and f["message"]
    if located:
        assert f["line"] >= 1 and f["column"] >= 1, f
    return f


@pytest.fixture
def pdir(tmp_path: Path) -> Path:
    d = tmp_path / "policies.d"
    d.mkdir()
    return d


def test_malformed_yaml(capsys, pdir):
    (pdir / "a.yaml").write_text("policies:\n  - id: a\n   action: ALLOW\n")
    rc, findings, _ = check(capsys, pdir)
    f = only(findings, "yaml-syntax")
    assert rc == 2 and f["line"] == 3
    assert re.search(r"a\.yaml:3:\d+: error: invalid YAML", check_text(capsys, pdir))


def test_unclosed_flow_and_bad_json(capsys, pdir):
    (pdir / "a.yaml").write_text("policies: [{id: a, action: ALLOW}\n")
    (pdir / "b.json").write_text('{"id": "b", "action": "ALLOW",}}')
    rc, findings, _ = check(capsys, pdir)
    assert rc == 2 and [f["code"] for f in findings] == ["yaml-syntax", "yaml-syntax"]
    assert all(f["line"] for f in findings)


def test_duplicate_keys(capsys, pdir):
    (pdir / "a.yaml").write_text("policies:\n  - id: a\n    action: ALLOW\n    action: BLOCK\n")
    rc, findings, _ = check(capsys, pdir)
    f = only(findings, "duplicate-key")
    assert rc == 2 and (f["line"], f["column"]) == (4, 5)
    assert f["related"][0]["line"] == 3


def test_duplicate_keys_in_json(capsys, pdir):
    (pdir / "a.json").write_text('{"id": "a", "action": "ALLOW", "id": "b"}')
    rc, findings, _ = check(capsys, pdir)
    assert rc == 2 and only(findings, "duplicate-key")["column"] == 32


def test_billion_laughs(capsys, pdir):
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, cur in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]")
    (pdir / "a.yaml").write_text("\n".join(lines) + "\n")
    rc, findings, _ = check(capsys, pdir)
    f = only(findings, "alias-limit")
    assert rc == 2 and f["line"] <= 9


def test_deep_nesting(capsys, pdir):
    # 100,000 levels crash PyYAML's C composer (recursion in C); pepc builds from events.
    (pdir / "a.yaml").write_text("policies: " + "[" * 100_000 + "]" * 100_000 + "\n")
    rc, findings, _ = check(capsys, pdir)
    f = only(findings, "alias-limit")
    assert rc == 2 and f["line"] == 1 and "nesting" in f["message"]


def test_deep_block_nesting(capsys, pdir):
    (pdir / "a.yaml").write_text("".join(" " * i + "k:\n" for i in range(200)))
    rc, findings, _ = check(capsys, pdir)
    assert rc == 2 and only(findings, "alias-limit")


def test_wrong_types(capsys, pdir):
    (pdir / "a.yaml").write_text("policies:\n  - id: 5\n    action: [ALLOW]\n    priority: '10'\n")
    rc, findings, _ = check(capsys, pdir)
    assert rc == 2 and [f["code"] for f in findings] == ["schema"] * 3
    assert [f["line"] for f in findings] == [2, 3, 4]


def test_non_utf8_bytes(capsys, pdir):
    (pdir / "a.yaml").write_bytes(b"policies:\n  - id: caf\xe9\n    action: ALLOW\n")
    rc, findings, _ = check(capsys, pdir)
    f = only(findings, "encoding")
    assert rc == 2 and (f["line"], f["column"]) == (2, 12) and "0xe9" in f["message"]


def test_utf16_file(capsys, pdir):
    (pdir / "a.yaml").write_bytes("policies: []\n".encode("utf-16"))
    rc, findings, _ = check(capsys, pdir)
    assert rc == 2 and only(findings, "encoding")


def test_control_characters(capsys, pdir):
    (pdir / "a.yaml").write_text("policies:\n  - id: a\x00b\n    action: ALLOW\n")
    rc, findings, _ = check(capsys, pdir)
    f = only(findings, "yaml-syntax")
    assert rc == 2 and (f["line"], f["column"]) == (2, 10)


def test_file_over_the_size_limit(capsys, pdir):
    with open(pdir / "a.yaml", "w") as fh:
        fh.write("# padding\n" * (4 * 1024 * 1024 // 10 + 1))
    rc, findings, _ = check(capsys, pdir)
    f = only(findings, "file-too-large")
    assert rc == 2 and "4194304" in f["message"]


def test_size_limit_is_overridable(pdir):
    (pdir / "a.yaml").write_text("policies: [{id: a, action: ALLOW}]\n" + "#" * 100)
    with pytest.raises(PolicyError) as info:
        load_policy(pdir, max_file_bytes=64)
    assert info.value.findings[0].code == "file-too-large"
    assert load_policy(pdir).rules


def test_unreadable_file_dangling_link(capsys, pdir):
    os.symlink(pdir / "gone.yaml", pdir / "a.yaml")
    rc, findings, _ = check(capsys, pdir)
    f = only(findings, "io-error", located=False)
    assert rc == 2 and f["file"].endswith("a.yaml") and "No such file" in f["message"]


def test_unreadable_file_fifo(capsys, pdir):
    os.mkfifo(pdir / "a.yaml")  # opening it would block forever
    rc, findings, _ = check(capsys, pdir)
    f = only(findings, "io-error", located=False)
    assert rc == 2 and f["file"].endswith("a.yaml")


@pytest.fixture
def open_dir():
    """A policy directory anyone may enter (pytest's own temp dirs are 0700)."""
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="pepc-test-"))
    base.chmod(0o755)
    (base / "policies.d").mkdir(mode=0o755)
    yield base / "policies.d"
    shutil.rmtree(base, ignore_errors=True)


def test_unreadable_file_permissions(open_dir):
    """A file without read permission. Root reads any file, so the check runs
    in a forked child that drops to nobody (as a user it just runs)."""
    import contextlib
    import io

    pdir = open_dir
    (pdir / "ok.yaml").write_text("policies: [{id: a, action: ALLOW}]\n")
    main(["check", "--format", "json", str(pdir)])  # warm imports while they can still be read
    secret = pdir / "secret.yaml"
    secret.write_text("policies: []\n")
    secret.chmod(0)
    (pdir / "ok.yaml").chmod(0o644)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.close(r)
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                rc = main(["check", "--format", "json", str(pdir)])
            os.write(w, json.dumps({"rc": rc, "out": out.getvalue(), "err": err.getvalue()}).encode())
        except BaseException as exc:  # report, never run the parent's code in the child
            os.write(w, json.dumps({"crash": repr(exc)}).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as fh:
        result = json.loads(fh.read())
    os.waitpid(pid, 0)
    assert "crash" not in result, result
    assert "Traceback" not in result["out"] + result["err"]
    assert result["rc"] == 2, result
    f = only(load_errors(json.loads(result["out"])["findings"]), "io-error", located=False)
    assert f["file"].endswith("secret.yaml") and "Permission denied" in f["message"]


def test_symlink_loop_directory(capsys, pdir):
    (pdir / "sub").mkdir()
    (pdir / "a.yaml").write_text("policies: [{id: a, action: ALLOW}]\n")
    os.symlink("..", pdir / "sub" / "back")
    rc, findings, _ = check(capsys, pdir)
    f = only(load_errors(findings), "symlink-loop", located=False)
    assert rc == 2 and f["file"].endswith("sub/back")


def test_symlink_loop_file(capsys, pdir):
    os.symlink("self.yaml", pdir / "self.yaml")
    rc, findings, _ = check(capsys, pdir)
    assert rc == 2 and only(findings, "symlink-loop", located=False)


def test_path_is_not_a_directory(capsys, pdir):
    f = pdir / "a.yaml"
    f.write_text("policies: []\n")
    rc, findings, _ = check(capsys, f)
    assert rc == 2 and only(findings, "not-a-directory", located=False)["file"] == str(f)


def test_path_does_not_exist(capsys, tmp_path):
    rc, findings, _ = check(capsys, tmp_path / "nope")
    assert rc == 2 and only(findings, "io-error", located=False)


def test_empty_directory(capsys, pdir):
    (pdir / "README.md").write_text("no policies here")
    rc, findings, _ = check(capsys, pdir)
    assert rc == 2 and only(findings, "empty-directory", located=False)["file"] == str(pdir)


def test_bad_cidr(capsys, pdir):
    (pdir / "a.yaml").write_text("policies:\n  - {id: a, action: ALLOW, src: {ip: 192.168.1.1/24}}\n")
    rc, findings, _ = check(capsys, pdir)
    f = only(findings, "bad-cidr")
    assert rc == 2 and "192.168.1.0/24" in f["help"]


@pytest.mark.parametrize(
    "ip, fragment",
    [
        ("2001:db8::1/64", "2001:db8::/64"),
        ("'fe80::1%eth0'", "fe80::1"),
        ("'[2001:db8::1]:443'", "port: 443"),
        ("'1::2::3'", ""),
    ],
)
def test_bad_ipv6(capsys, pdir, ip, fragment):
    (pdir / "a.yaml").write_text(f"policies:\n  - {{id: a, action: ALLOW, src: {{ip: {ip}}}}}\n")
    rc, findings, _ = check(capsys, pdir)
    f = only(findings, "bad-cidr")
    assert rc == 2 and f["line"] == 2 and fragment in (f["help"] or "")


def test_family_mismatch(capsys, pdir):
    (pdir / "a.yaml").write_text("policies:\n  - {id: a, action: ALLOW, src: {ip: 10.0.0.1}, dst: {ip: '2001:db8::1'}}\n")
    rc, findings, _ = check(capsys, pdir)
    f = only(findings, "family-mismatch")
    assert rc == 2 and (f["line"], f["column"]) == (2, 59) and "IPv4" in f["message"] and "IPv6" in f["message"]
    text = check_text(capsys, pdir)
    assert "a.yaml:2:59: error:" in text and "[family-mismatch]" in text and "help:" in text


def test_port_out_of_range(capsys, pdir):
    (pdir / "a.yaml").write_text("policies:\n  - {id: a, action: ALLOW, dst: {port: 65536}}\n")
    rc, findings, _ = check(capsys, pdir)
    assert rc == 2 and only(findings, "bad-port")["line"] == 2


def test_unknown_names(capsys, pdir):
    (pdir / "a.yaml").write_text("networks: {web: 10.0.0.0/8}\npolicies:\n  - {id: a, action: ALLOW, dst: {ip: wbe}}\n")
    rc, findings, _ = check(capsys, pdir)
    f = only(findings, "unknown-network")
    assert rc == 2 and "'web'" in f["help"]


def test_unknown_key(capsys, pdir):
    (pdir / "a.yaml").write_text("policies:\n  - {id: a, action: ALLOW, prority: 5}\n")
    rc, findings, _ = check(capsys, pdir)
    assert rc == 2 and "did you mean 'priority'" in only(findings, "unknown-key")["message"]


def test_problems_in_many_files_are_all_reported(capsys, pdir):
    (pdir / "a.yaml").write_text("policies: [\n")
    (pdir / "b.yaml").write_bytes(b"\xff")
    (pdir / "c.yaml").write_text("policies: []\npolicies: []\n")
    (pdir / "d.yaml").write_text("policies: [{id: d, action: NOPE}]\n")
    rc, findings, _ = check(capsys, pdir)
    assert rc == 2
    assert [f["code"] for f in findings] == ["yaml-syntax", "encoding", "duplicate-key", "schema"]


def test_text_output_has_no_traceback_and_locations(capsys, pdir):
    (pdir / "a.yaml").write_text("policies:\n  - {id: a, action: ALLOW, src: {ip: 1.2.3.4/8}}\n")
    out = check_text(capsys, pdir)
    assert re.search(r"policies\.d/a\.yaml:2:\d+: error: .* \[bad-cidr\]", out)


# --- fuzzing ------------------------------------------------------------------------

_YAMLISH = st.text(
    alphabet=st.sampled_from(list(string.ascii_letters[:8] + string.digits[:4] + " \n\t-:,[]{}&*!|>'\"#%@`?.~/\\") + ["\x00", "é", "\ufeff"]),
    max_size=120,
)
_SKELETONS = st.sampled_from(
    [
        "",
        "policies:\n  - ",
        "networks:\n  ",
        "policies: [{id: a, action: ALLOW, ",
        '[{"id": "x", "action": ',
        "services: {s: ",
    ]
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prefix=_SKELETONS, body=_YAMLISH, raw=st.binary(max_size=24))
def test_garbage_never_tracebacks(tmp_path, prefix, body, raw):
    d = tmp_path / "fuzz"
    d.mkdir(exist_ok=True)
    (d / "a.yaml").write_bytes(prefix.encode() + body.encode("utf-8", "surrogatepass") + raw)
    try:
        load_policy(d)
    except PolicyError as err:
        assert err.findings and all(f.blocks_load for f in err.findings)
