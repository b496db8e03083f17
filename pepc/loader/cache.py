"""Reloading a policy directory at the cost of what changed.

`load_policy(path, cache=LoadCache())` gives exactly what an uncached load
gives (the same Policy, or a PolicyError with the same findings in the same
order), but keeps per file what only depends on that file:

- the parse and the schema-validated classification (findings, network and
  service definitions, raw rules) — phases 1-2 of pepc/loader/policy.py;
- the resolution of each of its rules (the Rule, or the findings that stop
  it), valid while the global name tables it resolves against (networks and
  services, resolved) are equal to those it was computed with.

The directory is walked on every load (new, removed and renamed files are
seen); a file is re-read only when its stat key (size, mtime_ns, inode,
ctime_ns) changed, and re-parsed only when its bytes changed too (a touch,
or a `git checkout` that rewrites a file with the same bytes, costs a read
and a hash). As git does for its index, an entry whose mtime was within
RACY_NS of the moment it was read is "racy": a second write in the same
timestamp tick could leave the stat key unchanged, so such an entry is
verified by hash on the next load until it is old enough.

Discovery findings and the duplicate-id pass are recomputed on every load:
they are global and cheap. When nothing at all changed the previous Policy
object itself is returned, so callers can tell "unchanged" by identity.
"""

from __future__ import annotations

import bisect
import gc
import hashlib
import itertools
import os
import time
from dataclasses import dataclass
from typing import Any

from pepc.policy.diagnostics import Finding, PolicyError
from pepc.loader import policy as _policy
from pepc.loader.files import SourceFile, decode_source, read_bytes
from pepc.loader.reader import Marks, ParsedFile, parse_text
from pepc.policy.model import Policy

#: Entries read within this long of their mtime are re-verified by hash.
RACY_NS = 2_000_000_000

_versions = itertools.count(1)


@dataclass
class _Entry:
    key: tuple[int, int, int, int]  # size, mtime_ns, inode, ctime_ns
    digest: bytes
    racy: bool
    state: Any  # policy._State of this file alone
    version: int
    ids: tuple[str, ...] = ()  # the rule ids that count for duplicates
    #: computed against `tables` (reset when they change): per raw rule of
    #: `state.rules`, (Rule | None, findings); and for the whole file, when
    #: no id is duplicated anywhere, (rules, findings)
    tables: Any = None
    resolved: dict | None = None
    block: tuple[list, list] | None = None
    #: the Rules of the file's previous version, by id: a rule that resolves
    #: equal (locations included) is handed over as the same object, so that
    #: the stages after the load see one changed rule, not a whole file
    before: dict | None = None
    #: per raw rule (by index), its source text with where it starts, when
    #: that pins down its parse (see _spans); and the resolutions keyed by
    #: it, of this version (`memo`) and carried over from the previous one
    spans: list | None = None
    memo: dict | None = None
    memo_tables: Any = None
    #: with `block`: its enabled rules, or None when one of them expires
    live: tuple | None = None
    text: str | None = None  # the decoded source (for patching the next version)
    ck: Any = None  # the cache key (path, display, size limit)

    def against(self, networks: dict, services: dict) -> None:
        t = self.tables
        if t is None or t[0] is not networks or t[1] is not services:
            # (identity: _adopt_tables hands out the previous load's tables when equal)
            self.tables, self.resolved, self.block = (networks, services), {}, None


@dataclass
class Stats:
    """What the last load did (for tests, logs and the benchmark)."""

    files: int = 0
    stat_hits: int = 0  # stat key unchanged: nothing read
    hash_hits: int = 0  # read and hashed, bytes unchanged: not parsed
    parsed: int = 0  # read and parsed
    rules_resolved: int = 0  # rules resolved (not taken from the cache)
    patched: int = 0  # of the parsed files: edited inside one rule, only that rule re-parsed
    unchanged: bool = False  # the previous Policy was returned as is


def _spans(text: str, raws: list) -> list | None:
    """Per raw rule, (its source text up to where the next rule starts, its
    start position), or None for a rule whose text does not pin down its
    parse. Two versions of a file in which a rule starts at the same place
    and reads the same parse it the same (same values, same positions), so
    it resolves the same against the same name tables. Not pinned down: an
    alias (it may name an anchor outside the span), a tag (a %TAG directive
    outside may define it), a legacy rule, a file that is not ASCII (marks
    count columns in characters and, for some parsers, bytes). The last
    rule's span runs to the end of the file."""
    if not text.isascii() or not raws:
        return None
    offs = _rule_offsets(text, raws) + [len(text)]
    out: list = []
    for k, raw in enumerate(raws):
        a, b = offs[k], offs[k + 1]
        if raw.legacy or a < 0 or b <= a:
            out.append(None)
            continue
        chunk = text[a:b]
        out.append(None if "*" in chunk or "!" in chunk else (chunk, raw.pos))
    return out


def _patch(e: _Entry, text: str, display: str) -> tuple[Any, list] | None:
    """The file state of `text`, a new version of the file behind `e`, by
    re-parsing only the rule the edit lies in, or None when that is not
    known to give exactly what a full parse gives.

    It is when: the previous version had no finding; the edit (the part
    between the longest common prefix and suffix) lies inside one rule's
    lines, not the last rule's, and keeps their number (nothing after the
    rule moves); neither version of that rule's text holds an alias, an
    anchor or a tag; and the rule's lines, parsed on their own (indented
    to where the rule starts), give one mapping, with no finding, that
    passes the schema -- and give the previous value for the previous
    version of the lines (so the method is right for this span). In YAML's
    block style such lines end where the next item of the list starts, so
    the rest of the file parses as before."""
    old = e.text
    spans = e.spans
    fst0 = e.state
    if old is None or spans is None or fst0.findings or not text.isascii() or len(fst0.rules) < 2:
        return None
    n0, n1 = len(old), len(text)
    m = min(n0, n1)
    p = _common_prefix(old, text, m)
    q = _common_suffix(old, text, m - p)
    end0 = n0 - q
    # the rule whose own lines hold [p, end0)
    starts = _rule_offsets(old, fst0.rules)
    if min(starts) < 0 or starts != sorted(starts):
        return None
    k = bisect.bisect_right(starts, p) - 1
    if k < 0 or k + 1 >= len(starts) or spans[k] is None:
        return None
    a, b = starts[k], starts[k + 1]
    cut = old.rfind("\n", a, b) + 1  # the end of the rule's last line
    if not (a < p and end0 <= cut and cut > a):
        return None
    delta = n1 - n0
    if old.count("\n", p, end0) != text.count("\n", p, n1 - q):
        return None
    chunk0, chunk1 = old[a:cut], text[a : cut + delta]
    if any(c in chunk for chunk in (chunk0, chunk1) for c in "*&!%"):
        return None
    raw = fst0.rules[k]
    line, col = raw.pos
    got0 = _parse_chunk(chunk0, line, col, display)
    if got0 is None or got0[0] != raw.obj:
        return None
    got1 = _parse_chunk(chunk1, line, col, display)
    if got1 is None:
        return None
    obj, marks = got1
    from pepc.loader.schema import is_valid_fast

    if not is_valid_fast("policy-set", {"policies": [obj]}):
        return None
    rules = list(fst0.rules)
    rules[k] = _policy._RawRule(obj, marks, raw.pos, False, False)
    fst = _policy._State(findings=[], networks=fst0.networks, services=fst0.services, rules=rules)
    new_spans = list(spans)
    new_spans[k] = (text[a : b + delta], raw.pos)
    return fst, new_spans


def _rule_offsets(text: str, raws: list) -> list[int]:
    """Where each raw rule starts in `text` (an ASCII file: a mark's column
    is a character offset), -1 for a position outside it."""
    starts = [0]
    find = text.find
    i = find("\n")
    while i >= 0:
        starts.append(i + 1)
        i = find("\n", i + 1)
    return [starts[ln - 1] + c - 1 if 0 < ln <= len(starts) else -1 for ln, c in (r.pos for r in raws)]


def _common_prefix(a: str, b: str, m: int) -> int:
    lo, hi = 0, m  # a[:lo] == b[:lo]; find the largest such lo by bisection (C-speed slices)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _common_suffix(a: str, b: str, m: int) -> int:
    na, nb = len(a), len(b)
    lo, hi = 0, m
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[na - mid : na - lo] == b[nb - mid : nb - lo]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _parse_chunk(chunk: str, line: int, col: int, display: str) -> tuple[dict, Marks] | None:
    """A rule's lines parsed on their own: (value, marks in the file's
    coordinates), or None unless that is one mapping with no finding."""
    parsed = parse_text(" " * (col - 1) + chunk, display)
    if parsed.findings or len(parsed.docs) != 1 or not isinstance(parsed.docs[0].value, dict):
        return None
    if parsed.docs[0].pos != (1, col):
        return None
    shift = line - 1
    mk = parsed.marks
    out = Marks(display)
    out.keys = {i: {k: (ln + shift, c) for k, (ln, c) in d.items()} for i, d in mk.keys.items()}
    out.values = {i: {k: (ln + shift, c) for k, (ln, c) in d.items()} for i, d in mk.values.items()}
    out.items = {i: [(ln + shift, c) for ln, c in v] for i, v in mk.items.items()}
    return parsed.docs[0].value, out


class LoadCache:
    def __init__(self, *, racy_ns: int = RACY_NS) -> None:
        self.racy_ns = racy_ns
        self._files: dict[tuple[str, str, int], _Entry] = {}
        self._tables: Any = None  # (networks, services) of the last load
        self._last: tuple[Any, Policy | PolicyError] | None = None
        # rule ids of the entries of the last load, counted, kept up to date
        # file by file: whether an id is duplicated costs O(changed files)
        self._blocks: tuple[Policy, dict[Any, list]] | None = None  # the last Policy and its files' rule lists
        self._ids_of: dict[int, tuple[str, ...]] = {}  # entry version -> ids
        self._id_count: dict[str, int] = {}
        self._dups = 0  # ids counted more than once
        self.stats = Stats()

    def clear(self) -> None:
        self.__init__(racy_ns=self.racy_ns)

    # --- per file -------------------------------------------------------------

    def _entry(self, sf: SourceFile, max_file_bytes: int) -> _Entry | None:
        """The cached state of a file, refreshed; None when it cannot be
        read (the uncached path then reports why, exactly as without a cache)."""
        ck = (sf.path, sf.display, max_file_bytes)
        now = time.time_ns()
        try:
            st = os.stat(sf.path)
        except OSError:
            self._files.pop(ck, None)
            return None
        key = (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
        e = self._files.get(ck)
        if e is not None and e.key == key and not e.racy:
            self.stats.stat_hits += 1
            return e
        data, findings = read_bytes(sf.path, sf.display, max_file_bytes=max_file_bytes)
        if data is None:
            self._files.pop(ck, None)
            return None
        digest = hashlib.blake2b(data, digest_size=20).digest()
        racy = now - st.st_mtime_ns < self.racy_ns or now - st.st_ctime_ns < self.racy_ns
        if e is not None and e.digest == digest:
            self.stats.hash_hits += 1
            e.key, e.racy = key, racy
            return e
        self.stats.parsed += 1
        text, findings = decode_source(data, sf.display)
        patched = _patch(e, text, sf.display) if e is not None and text is not None and not findings else None
        if patched is not None:
            self.stats.patched += 1
            fst, spans = patched
        else:
            parsed = ParsedFile(sf.display, [], Marks(sf.display), findings) if text is None else parse_text(text, sf.display)
            fst = _policy.file_state(parsed)
            spans = _spans(text, fst.rules) if text is not None else None
        for i, raw in enumerate(fst.rules):
            raw.cached = i
        ids = tuple(rid for raw in fst.rules if (rid := _policy.rule_id(raw)) is not None)
        before = memo = memo_tables = None
        if e is not None:
            before = {r.id: r for r in e.block[0]} if e.block is not None else e.before
            memo, memo_tables = e.memo, e.memo_tables
        e = _Entry(
            key=key, digest=digest, racy=racy, state=fst, version=next(_versions), ids=ids, before=before,
            spans=spans, memo=memo, memo_tables=memo_tables, text=text, ck=ck,
        )
        self._files[ck] = e
        return e

    # --- the load -------------------------------------------------------------

    def load(self, root: str, files: list[SourceFile], findings: list[Finding], max_file_bytes: int) -> Policy:
        """load_policy's body with the cache (called by load_policy)."""
        # The cache holds every parsed document of the directory (millions
        # of objects at 10^5 rules); the cyclic GC would rescan them all on
        # each collection a re-parse triggers. Nothing here makes cycles
        # that outlive the call.
        enabled = gc.isenabled()
        gc.disable()
        try:
            return self._load(root, files, findings, max_file_bytes)
        finally:
            if enabled:
                gc.enable()

    def _load(self, root: str, files: list[SourceFile], findings: list[Finding], max_file_bytes: int) -> Policy:
        from pepc.loader.files import read_and_parse

        self.stats = Stats(files=len(files))
        st = _policy._State(findings=list(findings))
        displays = []
        signature: list[Any] = [root, max_file_bytes, tuple(findings)]
        entries: list[_Entry] = []
        plain_rules = False  # a file read without the cache contributed rules
        seen = set()
        for sf in files:
            displays.append(sf.display)
            e = self._entry(sf, max_file_bytes)
            if e is None:
                # unreadable now: no cache entry; the plain path says why
                fst = _policy.file_state(read_and_parse(sf.path, sf.display, max_file_bytes=max_file_bytes))
                plain_rules = plain_rules or bool(fst.rules)
                _policy._merge(st, fst)
                signature.append(None)  # never equal to a previous load's
                signature.append(next(_versions))
                continue
            seen.add((sf.path, sf.display, max_file_bytes))
            signature.append((sf.path, sf.display, e.version))
            entries.append(e)
            _policy._merge(st, e.state)
        for ck in list(self._files):
            if ck not in seen:
                del self._files[ck]
        sig = tuple(signature)
        if self._last is not None and self._last[0] == sig:
            self.stats.unchanged = True
            last = self._last[1]
            if isinstance(last, PolicyError):
                raise PolicyError(list(last.findings), partial=last.partial, without=last.without)
            return last

        def resolve_rules(st_: Any, networks: dict, services: dict) -> list:
            if plain_rules or self._duplicated_ids(entries):
                # a duplicated id: the rule-by-rule pass, memoised per rule
                owners = {id(raw): e for e in entries for raw in e.state.rules}
                return _policy._resolve_rules(st_, networks, services, lambda raw, s_, n_, v_: resolve(owners, raw, s_, n_, v_))
            # No duplicates: each file's rules resolve on their own, in order
            # (what the rule-by-rule pass does then), so whole files are reused.
            out: list = []
            for e in entries:
                e.against(networks, services)
                if e.block is None:
                    tmp = _policy._State()
                    rules = []
                    before = e.before or {}
                    mt = e.memo_tables
                    memo_in = e.memo if mt is not None and mt[0] is networks and mt[1] is services else None
                    memo_in = memo_in or {}
                    memo_out: dict = {}
                    spans = e.spans
                    for raw in e.state.rules:
                        if raw.broken:
                            continue
                        span = spans[raw.cached] if spans is not None else None
                        hit = memo_in.get(span) if span is not None else None
                        if hit is None:
                            self.stats.rules_resolved += 1
                            one = _policy._State()
                            r = _policy._resolve_rule(raw, one, networks, services)
                            if r is not None:
                                old = before.get(r.id)
                                if old is not None and old == r and old.field_locs == r.field_locs:
                                    r = old
                            hit = (r, tuple(one.findings))
                        if span is not None:
                            memo_out[span] = hit
                        tmp.findings.extend(hit[1])
                        if hit[0] is not None:
                            rules.append(hit[0])
                    e.block = (rules, tmp.findings)
                    e.live = None if any(r.expires_at is not None for r in rules) else tuple(r for r in rules if r.enabled)
                    e.before = None
                    e.memo, e.memo_tables = memo_out, (networks, services)
                st_.findings.extend(e.block[1])
                out.extend(e.block[0])
            if all(e.live is not None for e in entries):
                static_live.append(tuple(itertools.chain.from_iterable(e.live for e in entries)))
            blocks.update((e.ck, e.block[0]) for e in entries)
            return out

        static_live: list = []
        blocks: dict[Any, list] = {}  # per file (cache key): the rule list it contributed

        def resolve(owners: dict, raw: Any, st_: Any, networks: dict, services: dict) -> Any:
            e = owners.get(id(raw))
            if e is None or raw.cached is None:
                self.stats.rules_resolved += 1
                return _policy._resolve_rule(raw, st_, networks, services)
            e.against(networks, services)
            hit = e.resolved.get(raw.cached)
            if hit is None:
                self.stats.rules_resolved += 1
                tmp = _policy._State()
                rule = _policy._resolve_rule(raw, tmp, networks, services)
                hit = (rule, tuple(tmp.findings))
                e.resolved[raw.cached] = hit
            st_.findings.extend(hit[1])
            return hit[0]

        try:
            pol = _policy._finish(root, st, displays, resolve_rules, tables_hook=self._adopt_tables)
        except PolicyError as err:
            self._last = (sig, err)
            self._blocks = None
            raise
        if static_live:  # no rule expires: the live rules are the enabled ones, file by file
            pol.seed_live(static_live[0])
        self._note_edit(pol, blocks)
        self._last = (sig, pol)
        return pol

    def _note_edit(self, pol: Policy, blocks: dict[Any, list]) -> None:
        """Tell `pol` how it differs from the previous Policy this cache
        returned (Policy.edit_from), from the file blocks that changed: the
        stages after the load then skip comparing 10^5-rule sequences."""
        last, self._blocks = self._blocks, (pol, blocks)
        prev = self._last[1] if self._last is not None else None
        if not blocks or last is None or not last[1] or not isinstance(prev, Policy) or last[0] is not prev:
            return
        old_blocks = last[1]
        gone: list = []
        came: list = []
        for k, rules in blocks.items():
            before = old_blocks.get(k)
            if before is rules:
                continue
            if before is None:
                came += rules
                continue
            had = set(map(id, before))
            has = set(map(id, rules))
            gone += [r for r in before if id(r) not in has]
            came += [r for r in rules if id(r) not in had]
        for k, rules in old_blocks.items():
            if k not in blocks:
                gone += rules
        both = set(map(id, gone)) & set(map(id, came))  # moved with a renamed file
        if both:
            gone = [r for r in gone if id(r) not in both]
            came = [r for r in came if id(r) not in both]
        pol.set_edit(prev, tuple(gone), tuple(came))

    def _duplicated_ids(self, entries: list[_Entry]) -> bool:
        cur = {e.version: e.ids for e in entries}
        prev, count = self._ids_of, self._id_count
        dups = self._dups
        for v, ids in prev.items():
            if v not in cur:
                for i in ids:
                    c = count[i]
                    if c == 2:
                        dups -= 1
                    if c == 1:
                        del count[i]
                    else:
                        count[i] = c - 1
        for v, ids in cur.items():
            if v not in prev:
                for i in ids:
                    c = count.get(i, 0) + 1
                    count[i] = c
                    if c == 2:
                        dups += 1
        self._ids_of, self._dups = cur, dups
        return dups > 0

    def _adopt_tables(self, networks: dict, services: dict) -> tuple[dict, dict]:
        """The resolved name tables, as the previous load's objects when equal."""
        prev = self._tables
        if prev is not None and prev[0] == networks and prev[1] == services:
            return prev
        self._tables = (networks, services)
        return self._tables
