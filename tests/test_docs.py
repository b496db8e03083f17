"""The user-facing docs (README.md and docs/*.md) hold together: every
relative link names a file of the repository and every anchor a heading of
the page it points into (GitHub's slugs), and the docs stand on their own
(no internal design notes or project history cited). The checker is tested
on a broken synthetic page too, so a green run means something.

Absolute http(s) links are not fetched: the tests run without a network.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import ROOT, doc_pages

DOCS = ROOT / "docs"


# --- Markdown, as far as links and headings need it ----------------------------

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
#: a code span; it may wrap, but not across a blank line
_INLINE_CODE = re.compile(r"(`+)((?:(?!\n[ \t]*\n).)+?)\1", re.S)
#: [text](target) and ![alt](target); the text may hold `code` and nested
#: brackets one level deep; the target ends at whitespace or ")".
_LINK = re.compile(r"!?\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
_HTML_TAG = re.compile(r"<[^>]+>")


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of the lines outside fenced code blocks."""
    out = []
    fence = None
    for n, line in enumerate(text.splitlines(), 1):
        m = _FENCE.match(line)
        if fence is None:
            if m:
                fence = m.group(1)
                continue
            out.append((n, line))
        elif m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) and not line.strip()[len(m.group(1)):].strip():
            fence = None
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text: the rendered text (links by
    their text, code without its backticks, no HTML), lowercased, every
    character that is not a letter, digit, `-`, `_` or space removed, and
    each space turned into `-`."""
    text = _LINK.sub(lambda m: m.group(1), heading)
    text = _HTML_TAG.sub("", text)
    text = text.lower()
    text = "".join(ch for ch in text if ch.isalnum() or ch in "-_ ")
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every anchor of a page: its headings' slugs, a repeated one with
    -1, -2, … in order, as GitHub numbers them."""
    seen: dict[str, int] = {}
    out = set()
    for _, line in prose_lines(text):
        m = _HEADING.match(line)
        if not m:
            continue
        s = slug(m.group(2))
        if s in seen:
            seen[s] += 1
            s = f"{s}-{seen[s]}"
        else:
            seen[s] = 0
        out.add(s)
    return out


def links(text: str) -> list[tuple[int, str]]:
    """(line, target) of every link in the prose: not in code blocks, not in
    inline code. A link's text may wrap onto the next lines."""
    lines = text.splitlines()
    prose = dict(prose_lines(text))
    body = "\n".join(prose.get(n, "") for n in range(1, len(lines) + 1))
    body = _INLINE_CODE.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), body)
    return [(body.count("\n", 0, m.start()) + 1, m.group(2)) for m in _LINK.finditer(body)]


def broken_links(page: Path, root: Path) -> list[str]:
    """Every relative link of `page` that does not resolve, as
    `page:line: target: why`."""
    problems = []
    text = page.read_text(encoding="utf-8")
    shown = page.relative_to(root)
    cache: dict[Path, set[str]] = {}
    for n, target in links(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:, …
            continue
        where = f"{shown}:{n}: {target}"
        path, _, anchor = target.partition("#")
        dest = page if not path else (page.parent / path)
        try:
            dest.resolve().relative_to(root.resolve())
        except ValueError:
            problems.append(f"{where}: points outside the repository")
            continue
        if not dest.exists():
            problems.append(f"{where}: no such file")
            continue
        if anchor:
            if dest.suffix != ".md" or dest.is_dir():
                problems.append(f"{where}: an anchor into a file that is not Markdown")
                continue
            if dest not in cache:
                cache[dest] = anchors(dest.read_text(encoding="utf-8"))
            if anchor not in cache[dest]:
                problems.append(f"{where}: no heading with the anchor #{anchor} in {dest.relative_to(root)}")
    return problems


# --- the checker itself --------------------------------------------------------


@pytest.mark.parametrize(
    "heading, expected",
    [
        ("Host settings: `pepc.yaml`", "host-settings-pepcyaml"),
        ("`pepc diff OLD NEW`: what a change does to packets", "pepc-diff-old-new-what-a-change-does-to-packets"),
        ("Suppressions: `suppress` and `allow_overlap`", "suppressions-suppress-and-allow_overlap"),
        ("Using the CPUs: `--jobs`", "using-the-cpus---jobs"),
        ("Which rules are live: enabled and expiry", "which-rules-are-live-enabled-and-expiry"),
        ("Applying to a host: `plan`, `apply`, `status`", "applying-to-a-host-plan-apply-status"),
        ("See [the semantics](semantics.md) — twice", "see-the-semantics--twice"),
        ("Ünïcode stays", "ünïcode-stays"),
    ],
)
def test_slug_follows_github(heading, expected):
    assert slug(heading) == expected


def test_checker_reports_broken_links_and_anchors(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "other.md").write_text("# Other\n\n## Same\n\n## Same\n\n```\n# not a heading\n```\n")
    page = tmp_path / "README.md"
    page.write_text(
        "# Title\n\n"
        "[ok](docs/other.md) [ok](docs/other.md#same-1) [ok](#title) [web](https://example.invalid/x)\n"
        "[gone](docs/missing.md)\n"
        "[bad anchor](docs/other.md#nowhere)\n"
        "[code anchor](docs/other.md#not-a-heading)\n"
        "[own](#no-such-heading)\n"
        "`[in code](nothing.md)`\n"
        "[wrapped\nlink](docs/gone.md)\n\n"
        "```\n[in a block](nothing.md)\n```\n"
    )
    problems = broken_links(page, tmp_path)
    assert len(problems) == 5, problems
    assert "README.md:9: docs/gone.md: no such file" in problems
    assert "README.md:4: docs/missing.md: no such file" in problems
    assert any(p.startswith("README.md:5: docs/other.md#nowhere: no heading") for p in problems)
    assert any(p.startswith("README.md:6: docs/other.md#not-a-heading: no heading") for p in problems)
    assert any(p.startswith("README.md:7: #no-such-heading: no heading") for p in problems)


# --- the repository's docs -----------------------------------------------------


def test_every_link_and_anchor_resolves():
    problems = [p for page in doc_pages() for p in broken_links(page, ROOT)]
    assert not problems, "\n".join(problems)


def test_readme_links_every_docs_page():
    linked = {target.partition("#")[0] for _, target in links((ROOT / "README.md").read_text())}
    pages = {f"docs/{p.name}" for p in DOCS.glob("*.md")}
    assert pages <= linked, sorted(pages - linked)


#: What the user-facing docs must not mention: the internal design notes
#: (the docs are the project's own complete statement) and the history of
#: how the project was built.
_FORBIDDEN = [
    (re.compile(r"DESIGN\.md", re.I), "the internal design notes"),
    (re.compile(r"closing notes?", re.I), "project history"),
    (re.compile(r"\bissue\s*#\s*\d+", re.I), "an issue number"),
    (re.compile(r"\bthe issues?\b", re.I), "the project's issues"),
]


@pytest.mark.parametrize("page", doc_pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_stand_on_their_own(page):
    text = page.read_text(encoding="utf-8")
    found = [
        f"{page.relative_to(ROOT)}:{n}: {why}: {m.group(0)!r}"
        for n, line in enumerate(text.splitlines(), 1)
        for rx, why in _FORBIDDEN
        for m in rx.finditer(line)
    ]
    assert not found, "\n".join(found)


def test_forbidden_patterns_are_caught():
    samples = ["see DESIGN.md", "the numbers are in the closing notes", "fixed in issue #12", "as the issue asks"]
    for s in samples:
        assert any(rx.search(s) for rx, _ in _FORBIDDEN), s


# --- the worked example of the semantics page is real --------------------------


def _worked_example() -> tuple[str, list[tuple[str, str, str]]]:
    text = (DOCS / "semantics.md").read_text(encoding="utf-8")
    section = text.split("### Worked example", 1)[1].split("\n### ", 1)[0]
    policy = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    rows = []
    for line in section.splitlines():
        m = re.match(r"\|\s*`([^`]+)`\s*\|\s*(?:`([^`]+)`|\(none\))\s*\|\s*([A-Z_]+)\s*\|", line)
        if m:
            rows.append((m.group(1), m.group(2) or "", m.group(3)))
    return policy, rows


def test_semantics_worked_example_holds(tmp_path, capsys):
    from pepc.cli import main

    policy, rows = _worked_example()
    assert len(rows) >= 10
    d = tmp_path / "policies.d"
    d.mkdir()
    (d / "lab.yaml").write_text(policy)
    rc = main(["simulate", str(d), "--format", "json", *[p for p, _, _ in rows]])
    out = capsys.readouterr().out
    assert rc == 0, out
    got = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert len(got) == len(rows)
    for (packet, rule, action), g in zip(rows, got):
        assert (g["rule"] or "", g["action"]) == (rule, action), (packet, g)
