"""The imperative shell: read live state, plan, write, flip, audit.

See the package docstring for the algorithm and its crash-safety argument.
`plan_policy` and `apply_policy` are the API `pepc plan`, `pepc apply` and
`pepc watch` share.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import tempfile
import time
from operator import itemgetter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from pepc.compiler import capacity_findings, layout, prebuilt
from pepc.policy.config import Config, Interface, XdpMode
from pepc.policy.diagnostics import EnvironmentProblem, Finding, PolicyError
from pepc.policy.model import Policy
from pepc.compiler.program import Program
from pepc.reconcile import audit, diff
from pepc.reconcile.live import compatible, read_live
from pepc.reconcile.lock import InstanceLock
from pepc.reconcile.planner import ReconcilePlan, make_plan
from pepc.reconcile.state import Attachment, LiveState

ABORT_ENV = "PEPC_TEST_ABORT_AFTER_WRITES"
ABORT_EXIT = 86  # exit status of a run stopped by the test hook

# bpffs refuses '.' in names; '_' first is reserved for pinswap's staging dirs
_INSTANCE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
#: Per-rule state shared by both generations (indexed by slot).
SLOT_STATE_MAPS = ("pepc_stats", "pepc_rl", "pepc_evbudget")
#: Maps a reload can hand over to the new program when their shape is unchanged.
SHARED_MAPS = ("pepc_stats", "pepc_rl", "pepc_evbudget", "pepc_counters", "pepc_events")


def check_instance_name(name: str) -> str:
    if not _INSTANCE_RE.match(name or ""):
        raise EnvironmentProblem(
            f"invalid instance name {name!r}",
            "use 1-64 characters from A-Z a-z 0-9 _ - starting with a letter or digit",
        )
    return name


def pin_dir(config: Config, instance: str) -> Path:
    return Path(config.pin_root) / check_instance_name(instance)


def desired_interfaces(config: Config, names: Sequence[str] | None) -> tuple[Interface, ...]:
    """--iface NAME (repeatable) wins over pepc.yaml; a name listed in
    pepc.yaml keeps its mode there."""
    if not names:
        return tuple(config.interfaces)
    modes = {i.name: i.mode for i in config.interfaces}
    out, seen = [], set()
    for n in names:
        if n not in seen:
            seen.add(n)
            out.append(Interface(n, modes.get(n, XdpMode.AUTO)))
    return tuple(out)


# --- the writer token -------------------------------------------------------------


def swap_writer_token(config: Config, instance: str) -> tuple[str | None, str | None]:
    """(previous token, new token) of `<run_dir>/<instance>.writer`.

    Every apply replaces the token under the instance lock BEFORE it can
    write anything, so a process that remembers the token it wrote (the
    watch session) knows whether any other apply has run since — even one
    killed midway, which may have left half-written generation maps behind
    control words it never reached. (None: the file could not be read or
    written; then nothing is remembered.)"""
    path = Path(config.run_dir) / f"{instance}.writer"
    try:
        prev = path.read_text(encoding="ascii").strip() or None
    except (OSError, UnicodeDecodeError):
        prev = None
    new = os.urandom(12).hex()
    try:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(new, encoding="ascii")
        os.replace(tmp, path)
    except OSError:
        return prev, None
    return prev, new


# --- the gate: what `pepc check` would say ---------------------------------------


def check_errors(policy: Policy, config: Config, now: datetime, *, capacity: bool = True) -> list[Finding]:
    """Findings of `pepc check` (lifecycle + checker, with the severity
    overrides of pepc.yaml) that are errors: apply refuses those. See
    pepc.checker.incremental.gate_errors (rule by rule when the config
    allows); `capacity=False` when the caller compiled this policy with
    this config (the compiler raises capacity errors itself)."""
    from pepc.checker.incremental import gate_errors

    return gate_errors(policy, config, now, capacity=capacity_findings if capacity else None)


def apply_gate_errors(policy: Policy, config: Config, now: datetime, *, capacity: bool = True) -> list[Finding]:
    """The findings that refuse an apply: those of the codes pepc.yaml's
    `apply_gate` lists (default: capacity), whatever their severity in
    `check`. A shadowed rule in a long block list is a CI error, not a
    reason to keep an urgent block from going live."""
    from pepc.policy.config import gate_config

    return check_errors(policy, gate_config(config), now, capacity=capacity)


# --- write accounting and the crash test hook ------------------------------------


class Aborted(Exception):
    """Raised instead of exiting when the hook runs in-process (tests)."""


@dataclass
class WriteLog:
    elements: int = 0
    syscalls: int = 0
    per_map: dict[str, int] = field(default_factory=dict)
    abort_after: int | None = None
    abort_in_process: bool = False

    def budget(self, n: int) -> int:
        """How many of the next `n` element writes may happen before the hook fires."""
        if self.abort_after is None:
            return n
        return max(0, min(n, self.abort_after - self.elements))

    def done(self, name: str, n: int, calls: int) -> None:
        self.elements += n
        self.syscalls += calls
        if n:
            self.per_map[name] = self.per_map.get(name, 0) + n

    def maybe_abort(self) -> None:
        if self.abort_after is not None and self.elements >= self.abort_after:
            if self.abort_in_process:
                raise Aborted(self.elements)
            os._exit(ABORT_EXIT)  # the crash the hook simulates: no cleanup, no finally


def _abort_after_from_env() -> int | None:
    v = os.environ.get(ABORT_ENV)
    if v is None or v == "":
        return None
    try:
        return int(v)
    except ValueError:
        return None


_FIRST, _SECOND = itemgetter(0), itemgetter(1)


class Writer:
    """Element writes on an instance's maps, counted; big ones batched."""

    BATCH_MIN = 2

    def __init__(self, maps: Mapping[str, Any], log: WriteLog):
        self.maps = maps
        self.log = log

    def _chunked(self, name: str, n: int, do) -> None:
        """Run do(start, end) over [0, n), stopping where the hook fires."""
        if n == 0:
            return
        allowed = self.log.budget(n)
        if allowed:
            calls = do(0, allowed)
            self.log.done(name, allowed, calls)
        if allowed < n:
            self.log.maybe_abort()

    def put(self, name: str, pairs: Sequence[tuple[bytes, bytes]]) -> None:
        from pepc.kernel import bulk

        m = self.maps[name]

        def do(a: int, b: int) -> int:
            if b - a < self.BATCH_MIN:
                for k, v in pairs[a:b]:
                    m.update(k, v)
                return b - a
            part = pairs[a:b] if a or b < len(pairs) else pairs
            return bulk.write(m, list(map(_FIRST, part)), list(map(_SECOND, part)))

        self._chunked(name, len(pairs), do)
        self.log.maybe_abort()

    def put_percpu_zero(self, name: str, keys: Sequence[bytes]) -> None:
        from pepc.kernel import bulk

        m = self.maps[name]
        zero = bytes(m.value_buf_size)

        def do(a: int, b: int) -> int:
            ks = list(keys[a:b])
            return bulk.write(m, ks, [zero] * len(ks))

        self._chunked(name, len(keys), do)
        self.log.maybe_abort()

    def delete(self, name: str, keys: Sequence[bytes]) -> None:
        from pepc.kernel import bulk

        m = self.maps[name]

        def do(a: int, b: int) -> int:
            ks = list(keys[a:b])
            if len(ks) < self.BATCH_MIN:
                for k in ks:
                    m.delete(k)
                return len(ks)
            return bulk.delete(m, ks)

        self._chunked(name, len(keys), do)
        self.log.maybe_abort()

    # -- generation-level ---------------------------------------------------

    def gen_delta(self, gen: int, delta: diff.GenDelta) -> None:
        for m in delta.maps:
            if not m.count:
                continue
            if m.name == "pepc_gen":
                # one element, at the index of the generation
                pairs = [(diff.u32(gen), v) for _, v in m.writes] + [(diff.u32(gen), bytes(layout.GEN.size)) for _ in m.deletes]
                self.put("pepc_gen", pairs)
                continue
            kname = f"{m.name}_{gen}"
            if kname not in self.maps:  # a prefilter the loaded program does not have
                continue
            if diff.is_array(m.name):
                size = self.maps[kname].value_size
                self.put(kname, list(m.writes) + [(k, bytes(size)) for k in m.deletes])
            else:
                # deletes first: a full hash map must not refuse an insert
                self.delete(kname, m.deletes)
                self.put(kname, list(m.writes))

    def reset_slots(self, slots: Iterable[int]) -> None:
        keys = [diff.u32(s) for s in slots]
        if not keys:
            return
        for name in SLOT_STATE_MAPS:
            m = self.maps[name]
            if m.percpu:
                self.put_percpu_zero(name, keys)
            else:
                self.put(name, [(k, bytes(m.value_size)) for k in keys])

    def flip(self, gen: int) -> None:
        ctrl = self.maps["pepc_ctrl"]
        raw = ctrl.lookup(diff.u32(0)) or bytes(layout.CTRL.size)
        val = layout.CTRL.unpack(raw)
        val["active_gen"] = gen
        self.put("pepc_ctrl", [(diff.u32(0), layout.CTRL.pack(val))])


# --- results ----------------------------------------------------------------------


@dataclass(frozen=True)
class ApplyResult:
    instance: str
    result: str  # "applied" | "unchanged"
    plan: ReconcilePlan
    writes: int  # map elements written (deletes included)
    syscalls: int
    per_map: Mapping[str, int]
    duration_s: float
    timings: Mapping[str, float]
    generation: int  # active after the apply
    prog_id: int
    attached: tuple[tuple[str, str], ...]  # (ifname, mode) after the apply
    detached: tuple[str, ...] = ()
    recovered: tuple[str, ...] = ()
    #: the writer token this apply left (swap_writer_token) and the one it replaced
    writer_token: str | None = field(default=None, repr=False, compare=False)
    previous_writer_token: str | None = field(default=None, repr=False, compare=False)
    #: what was compiled and is now in both generations (for the watch
    #: session's mirror; not part of the JSON)
    program: Program | None = field(default=None, repr=False, compare=False)
    contents: Mapping[str, Mapping[bytes, bytes]] | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict:
        return {
            "instance": self.instance,
            "result": self.result,
            "writes": self.writes,
            "syscalls": self.syscalls,
            "per_map": dict(sorted(self.per_map.items())),
            "duration_ms": round(self.duration_s * 1000, 3),
            "timings_ms": {k: round(v * 1000, 3) for k, v in self.timings.items()},
            "generation": self.generation,
            "prog_id": self.prog_id,
            "attached": [{"ifname": i, "mode": m} for i, m in self.attached],
            "detached": list(self.detached),
            "recovered": list(self.recovered),
            "plan": self.plan.to_json(),
        }


# --- reading --------------------------------------------------------------------


def current_attachments(names: Iterable[str]) -> dict[str, Attachment]:
    """What runs on the named interfaces now (one netlink dump)."""
    from pepc.kernel import links

    wanted = set(names)
    return {l.ifname: Attachment(l.ifname, l.ifindex, l.prog_id, l.mode) for l in links.xdp_links() if l.ifname in wanted}


def instance_links(prog_id: int) -> tuple[Attachment, ...]:
    from pepc.kernel import links

    return tuple(Attachment(l.ifname, l.ifindex, l.prog_id, l.mode) for l in links.links_of({prog_id}))


def open_live(config: Config, instance: str) -> tuple[Any, LiveState | None]:
    """(open kernel Instance or None, LiveState or None). The caller closes the Instance."""
    from pepc.kernel.loader import open_instance

    d = pin_dir(config, instance)
    inst = open_instance(d)
    if inst is None:
        return None, None
    try:
        live = read_live(instance, str(d), inst.maps, inst.prog_id, instance_links(inst.prog_id))
    except BaseException:
        inst.close()
        raise
    return inst, live


def assignments_for(policy: Policy, live: LiveState | None, now: datetime):
    from pepc.compiler import Assignments

    if live is None:
        return None
    ids = [r.id for r in policy.live_rules(now)]
    slots, keys = diff.assignments_from_slots(live.active.get("pepc_slots", {}), ids)
    return Assignments(slots=slots, order_keys=keys)


def compile_desired(policy: Policy, config: Config, now: datetime, live: LiveState | None) -> tuple[Program, dict]:
    """The program and the contents of one generation, the mask prefilter
    and the direct table included (sized for the live maps, or for a fresh
    load of this layout)."""
    from pepc.compiler import bloom, direct
    from pepc.compiler import compile_program
    from pepc.compiler.pack import map_contents

    program = compile_program(policy, config, now, assignments_for(policy, live, now))
    contents = map_contents(program)
    words, homes = derived_sizes(program, live)
    hashes = bloom.hashes(list(contents["pepc_rules"])) if words or homes else None
    if words:
        contents[diff.BLOOM] = bloom.for_contents(contents, words, hashes)
        contents[diff.BLOOM6] = bloom.for_contents6(contents, words)
    if homes:
        contents[diff.DIRECT] = direct.for_contents(contents, homes, hashes)
        contents[diff.DIRECT6] = direct.for_contents6(contents, homes)
    return program, contents


def derived_sizes(program: Program, live: LiveState | None) -> tuple[int | None, int | None]:
    """(prefilter words, direct-table homes) of the maps the contents go to:
    the live ones when the layout stays, else those of a fresh load (the
    object this pepc builds has both). None: the live program lacks them."""
    from pepc.compiler import bloom, direct

    if live is not None and live.layout_digest == program.layout_digest:
        return live.bloom_words, live.direct_homes
    return bloom.words(program.caps), direct.homes(program.caps)


# --- plan --------------------------------------------------------------------------


@dataclass
class Planned:
    program: Program
    contents: dict
    plan: ReconcilePlan
    live: LiveState | None
    inst: Any  # open kernel Instance or None (close it)
    timings: dict[str, float]
    foreign: tuple[InterfaceProblem, ...] = ()
    #: the live state is a session's record of its own last, complete apply
    #: (whose flip was followed by an RCU barrier)
    trusted: bool = False
    #: the program built and loaded (not pinned) while the policy compiled
    prefetch: Any = None  # pepc.reconcile.prefetch.Prefetch

    def close(self) -> None:
        if self.inst is not None:
            self.inst.close()
            self.inst = None
        if self.prefetch is not None:
            self.prefetch.discard()
            self.prefetch = None


@dataclass(frozen=True)
class InterfaceProblem:
    ifname: str
    message: str


def plan_policy(
    policy: Policy, config: Config, now: datetime, instance: str = "default", iface_names: Sequence[str] | None = None
) -> Planned:
    timings: dict[str, float] = {}
    t = time.perf_counter()
    inst, live = open_live(config, instance)
    timings["read"] = time.perf_counter() - t
    return plan_against(policy, config, now, instance, iface_names, inst, live, timings)


def plan_against(
    policy: Policy,
    config: Config,
    now: datetime,
    instance: str,
    iface_names: Sequence[str] | None,
    inst: Any,
    live: LiveState | None,
    timings: dict[str, float],
    *,
    compile_fn: Any = None,
    trusted: bool = False,
) -> Planned:
    """The plan step of an apply, given the live state however it was had
    (read in full by `plan_policy`, or taken from a session's mirror).
    Owns `inst`: closes it on error. `compile_fn(policy, config, now, live)`
    replaces `compile_desired` (the session's incremental compiler);
    `trusted`: the live generations are the session's own record of what it
    wrote, so drift is not looked for (see ReconcileSession)."""
    try:
        t = time.perf_counter()
        program, contents = (compile_fn or compile_desired)(policy, config, now, live)
        timings["compile"] = time.perf_counter() - t
        t = time.perf_counter()
        ifaces = desired_interfaces(config, iface_names)
        from pepc.kernel import links

        missing = [i.name for i in ifaces if not links.interface_exists(i.name)]
        if missing:
            raise EnvironmentProblem(
                f"interface {', '.join(missing)} does not exist",
                "check `interfaces` in pepc.yaml or --iface (ip link shows the names)",
            )
        current = current_attachments(i.name for i in ifaces)
        plan = make_plan(
            instance,
            contents,
            program.policy_digest,
            program.layout_digest,
            live,
            [(i.name, i.mode.value) for i in ifaces],
            current,
            trusted=trusted,
        )
        ours = {live.prog_id} if live and live.prog_id else set()
        foreign = tuple(
            InterfaceProblem(a.ifname, f"interface {a.ifname} runs XDP program {a.current_prog_id}, which is not instance {instance!r}'s")
            for a in plan.interfaces
            if a.current_prog_id is not None and a.current_prog_id not in ours
        )
        timings["plan"] = time.perf_counter() - t
        return Planned(program, contents, plan, live, inst, timings, foreign, trusted)
    except BaseException:
        if inst is not None:
            inst.close()
        raise


# --- apply ----------------------------------------------------------------------


def _audit_record(
    instance: str,
    result: str,
    *,
    policy_path: str | None,
    started: float,
    plan: ReconcilePlan | None = None,
    writes: int = 0,
    error: str | None = None,
    findings: Sequence[Finding] = (),
    extra: Mapping[str, Any] | None = None,
    source: Mapping[str, Any] | None = None,
) -> dict:
    rec: dict[str, Any] = {
        "time": audit.now_iso(),
        "instance": instance,
        "result": result,
        "policy_path": os.path.abspath(policy_path) if policy_path else None,
        # a policy read from a revision (apply --revision, rollback) says which;
        # else the work tree at policy_path does
        "git": dict(source) if source is not None else audit.git_info(policy_path) if policy_path else None,
        "duration_ms": round((time.perf_counter() - started) * 1000, 3),
        "map_writes": writes,
    }
    if plan is not None:
        entries = plan.sync_old if plan.flip or plan.load_reason else plan.target
        rs, rs6 = entries.of("pepc_rules"), entries.of("pepc_rules6")
        rec.update(
            {
                "policy_digest": plan.policy_digest,
                "layout_digest": plan.layout_digest,
                "load": plan.load_reason,
                "rules": dict(plan.rule_counts),
                "entries": {
                    "added": rs.added + rs6.added, "changed": rs.changed + rs6.changed, "removed": len(rs.deletes) + len(rs6.deletes),
                },
                "drift_repaired": bool(plan.drift and plan.drift.found),
            }
        )
    if error:
        rec["error"] = error
    if findings:
        rec["findings"] = [
            {"code": f.code, "message": f.message, "where": str(f.loc), **({"rule": f.rule} if f.rule else {})} for f in findings[:20]
        ]
        rec["findings_total"] = len(findings)
    if extra:
        rec.update(extra)
    return rec


def record_refusal(
    config: Config, instance: str, findings: Sequence[Finding], policy_path: str | None, started: float,
    source: Mapping[str, Any] | None = None,
) -> None:
    """The audit line of an apply refused for policy errors (nothing was touched)."""
    try:
        audit.append(
            config.state_dir,
            check_instance_name(instance),
            _audit_record(instance, "refused", policy_path=policy_path, started=started, findings=findings, source=source),
        )
    except OSError:
        pass  # refusing is what matters; the audit trail is best effort here


def apply_policy(
    policy: Policy,
    config: Config,
    now: datetime,
    *,
    instance: str = "default",
    iface_names: Sequence[str] | None = None,
    wait: float = 0.0,
    policy_path: str | None = None,
    write_audit: bool = True,
    abort_after: int | None = None,
    check: bool = True,
    source: Mapping[str, Any] | None = None,
) -> ApplyResult:
    """Converge instance `instance` to `policy`. Raises PolicyError (policy
    refused, nothing touched) or EnvironmentProblem (kernel/host refused).

    `check=False` only for callers that have just run `check_errors` on
    this very policy and config themselves (the benchmark times the checker
    apart): the gate is never skipped silently."""
    early = _ForkedGate.start(lambda: apply_gate_errors(policy, config, now, capacity=False)) if check else None

    def gate(planned: Planned) -> Sequence[Finding]:
        got = early.result() if early is not None else None
        return got if got is not None else apply_gate_errors(policy, config, now, capacity=False)

    try:
        return converge(
            policy,
            config,
            now,
            planner=lambda recovered, writer: plan_policy(policy, config, now, instance, iface_names),
            gate=gate if check else None,
            instance=instance,
            wait=wait,
            policy_path=policy_path,
            write_audit=write_audit,
            abort_after=abort_after,
            source=source,
        )
    finally:
        if early is not None:
            early.discard()


class _ForkedGate:
    """The check gate computed in a forked child while the parent reads the
    live state and compiles (the two use one core each). The gate depends
    on the policy, the config and the clock only, so the child needs
    nothing else, and nothing it does is visible: it sends the errors back
    (pickled) and exits. `result()` is None when the child could not give
    them; the caller then runs the gate itself. Only when this process
    runs no other thread (a fork copies one thread, and another one's locks
    held at that moment), so not inside `pepc watch`, whose gate is
    incremental anyway."""

    def __init__(self, pid: int, fd: int) -> None:
        self.pid, self.fd = pid, fd

    @classmethod
    def start(cls, fn: Callable[[], list[Finding]]) -> "_ForkedGate | None":
        import threading

        if not hasattr(os, "fork") or threading.active_count() != 1:
            return None
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: compute, send, leave without any cleanup of the parent's
            code = 0
            try:
                os.close(r)
                import pickle

                data = pickle.dumps(fn())
                view = memoryview(data)
                while view:
                    view = view[os.write(w, view):]
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        os.close(w)
        return cls(pid, r)

    def result(self) -> list[Finding] | None:
        import pickle

        if self.fd < 0:
            return None
        chunks = []
        while True:
            b = os.read(self.fd, 1 << 20)
            if not b:
                break
            chunks.append(b)
        os.close(self.fd)
        self.fd = -1
        _, status = os.waitpid(self.pid, 0)
        self.pid = 0
        if not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0):
            return None
        try:
            return list(pickle.loads(b"".join(chunks)))
        except Exception:
            return None

    def discard(self) -> None:
        import signal

        if self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)
            self.pid = 0
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def converge(policy: Policy, config: Config, now: datetime, **kw: Any) -> ApplyResult:
    """_converge with the cyclic GC off: an apply allocates millions of
    small acyclic objects (entries, map elements) and frees few until it
    returns, so the collector's full passes over the growing heap are pure
    cost (hundreds of ms at 10^5 rules)."""
    import gc

    enabled = gc.isenabled()
    gc.disable()
    try:
        return _converge(policy, config, now, **kw)
    finally:
        if enabled:
            gc.enable()


def _converge(
    policy: Policy,
    config: Config,
    now: datetime,
    *,
    planner: Callable[[Sequence[str], str | None], Planned],
    gate: Callable[[Planned], Sequence[Finding]] | None,
    instance: str = "default",
    wait: float = 0.0,
    policy_path: str | None = None,
    write_audit: bool = True,
    abort_after: int | None = None,
    abort_in_process: bool = False,
    source: Mapping[str, Any] | None = None,
) -> ApplyResult:
    """The steps of every apply, in order, under the instance lock: repair
    interrupted pin swaps, replace the writer token, plan
    (`planner(recovered, previous writer token)`: read or mirror the live
    state, compile, diff), run the check `gate` when anything is to be
    written, execute (writes, flip, RCU barriers, counter resets, or the
    load path), audit. `pepc apply` and the watch session differ only in
    their planner and gate."""
    started = time.perf_counter()
    check_instance_name(instance)
    path = policy_path or policy.root
    check_s = 0.0
    log = WriteLog(
        abort_after=abort_after if abort_after is not None else _abort_after_from_env(), abort_in_process=abort_in_process
    )
    planned: Planned | None = None
    prefetch: Any = None
    try:
        with InstanceLock(config.run_dir, instance, wait):
            from pepc.kernel import pinswap

            recovered = pinswap.recover(config.pin_root, instance)
            prev_token, token = swap_writer_token(config, instance)
            if not pin_dir(config, instance).exists():
                # nothing loaded: build and load the program (it depends on
                # the layout only) on the other core while the policy compiles
                from pepc.reconcile.prefetch import Prefetch

                prefetch = Prefetch(config, instance)
            try:
                planned = planner(tuple(recovered), prev_token)
                planned.prefetch, prefetch = prefetch, None
            except PolicyError as err:
                if write_audit:
                    record_refusal(config, instance, err.findings, path, started, source)
                raise
            def run_gate() -> None:
                nonlocal check_s
                t = time.perf_counter()
                errors = list(gate(planned))  # type: ignore[misc]
                check_s = time.perf_counter() - t
                if errors:
                    if write_audit:
                        record_refusal(config, instance, errors, path, started, source)
                    raise PolicyError(errors)

            before_pin = None
            if gate is not None and planned.plan.changes_pending:
                # The gate of `pepc check`. Skipped only when nothing would be
                # written: the live maps already hold exactly this policy. A
                # load writes into maps nobody sees until they are pinned and
                # attached: there the gate is waited for only before the pin
                # (a gate computed meanwhile, as pepc apply's forked one, then
                # overlaps the writes too); a refusal leaves nothing behind.
                if planned.plan.load_reason:
                    before_pin = run_gate
                else:
                    run_gate()
            if planned.foreign:
                raise EnvironmentProblem(
                    "; ".join(p.message for p in planned.foreign),
                    "pepc does not replace programs it did not load: detach it first (ip link set dev IF xdp off)",
                )
            result = _execute(planned, policy, config, instance, log, before_pin)
            result = dataclasses.replace(
                result,
                duration_s=time.perf_counter() - started,
                timings={"check": check_s, **planned.timings, **result.timings},
                recovered=tuple(recovered),
                writer_token=token,
                previous_writer_token=prev_token,
                program=planned.program,
                contents=planned.contents,
            )
    except (EnvironmentProblem, OSError) as err:
        if write_audit and not isinstance(err, PolicyError):
            msg = err.message if isinstance(err, EnvironmentProblem) else str(err)
            try:
                audit.append(
                    config.state_dir,
                    instance,
                    _audit_record(instance, "failed", policy_path=path, started=started,
                                  plan=planned.plan if planned else None, writes=log.elements, error=msg, source=source),
                )
            except OSError:
                pass
        if isinstance(err, OSError) and not isinstance(err, EnvironmentProblem):
            raise EnvironmentProblem(f"apply failed: {err}") from err
        raise
    finally:
        if prefetch is not None:
            prefetch.discard()
        if planned is not None:
            planned.close()
    if write_audit:
        try:
            audit.append(
                config.state_dir,
                instance,
                _audit_record(
                    instance,
                    result.result,
                    policy_path=path,
                    started=started,
                    plan=result.plan,
                    writes=result.writes,
                    extra={"generation": result.generation, "prog_id": result.prog_id,
                           "interfaces": [i for i, _ in result.attached]},
                    source=source,
                ),
            )
        except OSError as e:
            raise EnvironmentProblem(
                f"applied, but cannot write the audit trail under {config.state_dir}: {e.strerror or e}",
                "set state_dir in pepc.yaml to a writable directory",
            ) from e
    return result


def _execute(
    planned: Planned, policy: Policy, config: Config, instance: str, log: WriteLog, before_pin: Callable[[], None] | None = None
) -> ApplyResult:
    from pepc.kernel.sync import RcuBarrier

    plan = planned.plan
    timings: dict[str, float] = {}
    t = time.perf_counter()
    if plan.load_reason:
        gen, prog_id, attached, detached = _load(planned, policy, config, instance, log, timings, before_pin)
    else:
        inst = planned.inst
        writer = Writer(inst.maps, log)
        i, a = plan.target_gen, 1 - plan.target_gen
        with RcuBarrier() as barrier:
            if not plan.target.empty:
                # generation i may have been active moments ago (an apply
                # killed between its flip and its barrier): let its readers
                # go. Not needed when the live state is a session's record of
                # its own last apply: that apply waited after its flip.
                if not planned.trusted:
                    barrier.wait()
                writer.gen_delta(i, plan.target)
            if plan.flip:
                writer.reset_slots(plan.resets)
                writer.flip(i)
                barrier.wait()
                writer.gen_delta(a, plan.sync_old)
            timings["barrier"] = barrier.seconds
        gen = i if plan.flip else a
        prog_id = inst.prog_id
        timings["write"] = time.perf_counter() - t - timings.get("barrier", 0.0)
        t = time.perf_counter()
        attached, detached = _attach(inst, plan, config, instance)
        timings["attach"] = time.perf_counter() - t
    changed = plan.changes_pending or log.elements > 0
    return ApplyResult(
        instance=instance,
        result="applied" if changed else "unchanged",
        plan=plan,
        writes=log.elements,
        syscalls=log.syscalls,
        per_map=dict(log.per_map),
        duration_s=0.0,
        timings=timings,
        generation=gen,
        prog_id=prog_id,
        attached=attached,
        detached=detached,
    )


def _attach(inst: Any, plan: ReconcilePlan, config: Config, instance: str) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...]]:
    """Attach where the plan says; report where the program runs after."""
    from pepc.kernel import netlink

    detached = []
    for ia in plan.interfaces:
        if ia.action == "attach":
            netlink.attach(ia.ifname, inst.prog_fd, XdpMode(ia.mode))
        elif ia.action == "detach":
            _detach_if_ours(ia.ifname, inst.prog_id)
            detached.append(ia.ifname)
    links = instance_links(inst.prog_id)
    return tuple((l.ifname, l.mode or "?") for l in links), tuple(detached)


def _detach_if_ours(ifname: str, prog_id: int) -> bool:
    """Detach `ifname` only while it still runs `prog_id` (the program read
    back right before; someone else's program is never removed)."""
    from pepc.kernel import netlink

    cur = netlink.query(ifname)
    if cur is None or cur[0] != prog_id:
        return False
    return netlink.detach(ifname, cur[1])


# --- the load path -------------------------------------------------------------------


def _reusable(old: Any, new_caps: layout.Capacities, carry: Sequence[tuple[int, int]]) -> dict[str, Any]:
    """Old maps the new program can share as they are: same shape and, for
    slot-indexed state, every surviving rule keeps its slot."""
    if old is None or compatible(old.maps):
        return {}
    identity = all(a == b for a, b in carry)
    out = {}
    for name in SHARED_MAPS:
        m = layout.map_def(name)
        bm = old.maps.get(name)
        if bm is None or bm.max_entries != m.entries(new_caps):
            continue
        if name in SLOT_STATE_MAPS and not identity:
            continue
        out[name] = bm
    return out


def _copy_slot_state(old: Any, new_maps: Mapping[str, Any], carry: Sequence[tuple[int, int]], writer: Writer) -> None:
    """Carry per-rule counters of surviving rules into fresh maps."""
    if not carry or old is None or compatible(old.maps):
        return
    src = old.maps["pepc_stats"]
    dst = new_maps["pepc_stats"]
    if src.value_size != dst.value_size:
        return
    keys, vals = [], []
    for a, b in carry:
        if b >= dst.max_entries:
            continue
        v = src.lookup_percpu(diff.u32(a))
        if v is not None and any(any(x) for x in v):
            keys.append(diff.u32(b))
            vals.append(v)
    if keys:
        dst.update_batch_percpu(keys, vals)
        writer.log.done("pepc_stats", len(keys), 1)


def _copy_counters(old: Any, new_maps: Mapping[str, Any], writer: Writer) -> None:
    if old is None or compatible(old.maps):
        return
    src, dst = old.maps.get("pepc_counters"), new_maps["pepc_counters"]
    if src is None or src.value_size != dst.value_size:
        return
    items = [(k, v) for k, v in src.items_percpu() if int.from_bytes(k, "little") < dst.max_entries]
    if items:
        dst.update_batch_percpu([k for k, _ in items], [v for _, v in items])
        writer.log.done("pepc_counters", len(items), 1)


def _load(
    planned: Planned, policy: Policy, config: Config, instance: str, log: WriteLog, timings: dict[str, float],
    before_pin: Callable[[], None] | None = None,
):
    from pepc.kernel import loader, netlink, pinswap

    plan, program = planned.plan, planned.program
    old = planned.inst
    t = time.perf_counter()
    reuse = _reusable(old, program.caps, plan.carry)
    new = None
    if planned.prefetch is not None and not reuse:
        new = planned.prefetch.take(program.layout_digest)
        planned.prefetch = None
        if new is not None:
            timings["build+load wait"] = time.perf_counter() - t
    if new is None:
        with tempfile.TemporaryDirectory(prefix="pepc-build-") as tmp:
            obj = prebuilt.layout_object(program.caps, program.default_action, program.event_cap, policy.root, Path(tmp))
            timings["build"] = time.perf_counter() - t
            t = time.perf_counter()
            new = loader.load_object(obj, reuse=reuse)
        timings["load"] = time.perf_counter() - t
    try:
        t = time.perf_counter()
        writer = Writer(new.maps, log)
        full = plan.target  # on a load: the whole program, as a delta against empty maps
        writer.gen_delta(0, full)
        writer.gen_delta(1, full)
        if reuse:
            surviving = {b for _, b in plan.carry}
            fresh = [s.slot for s in program.slots if s.slot not in surviving]
            if "pepc_stats" in reuse:
                writer.reset_slots(fresh)
        _copy_slot_state(old if "pepc_stats" not in reuse else None, new.maps, plan.carry, writer)
        if "pepc_counters" not in reuse:
            _copy_counters(old, new.maps, writer)
        writer.put(
            "pepc_ctrl",
            [(diff.u32(0), layout.CTRL.pack({"active_gen": 0, "layout_digest": bytes.fromhex(program.layout_digest)}))],
        )
        timings["write"] = time.perf_counter() - t
        if before_pin is not None:
            before_pin()  # refused: nothing was pinned or attached (finally closes the new program)
        t = time.perf_counter()
        staging = pinswap.staging_dir(config.pin_root, instance)
        if staging.exists():
            pinswap.remove(staging)
        loader.pin(new, staging)
        timings["pin"] = time.perf_counter() - t
        t = time.perf_counter()
        switched: list[str] = []
        if old is not None:
            switched = pinswap.switch_interfaces(old, new)
        pinswap.promote(config.pin_root, instance)
        detached = []
        for ia in plan.interfaces:
            if ia.action == "attach" and ia.ifname not in switched:
                netlink.attach(ia.ifname, new.prog_fd, XdpMode(ia.mode))
            elif ia.action == "detach":
                _detach_if_ours(ia.ifname, new.prog_id)
                detached.append(ia.ifname)
        attached = tuple((l.ifname, l.mode or "?") for l in instance_links(new.prog_id))
        timings["attach"] = time.perf_counter() - t
        return 0, new.prog_id, attached, tuple(detached)
    finally:
        new.close()


# --- unload ----------------------------------------------------------------------


def unload_instance(config: Config, instance: str, wait: float = 0.0) -> tuple[list[tuple[str, str]], list[str]]:
    """Detach every program of the instance (live, staged or retired pin
    set) from every interface it runs on, then remove the pins.
    Returns (detached (ifname, mode), pin directories removed)."""
    from pepc.kernel import links, pinswap
    from pepc.kernel.loader import open_instance

    started = time.perf_counter()
    detached: list[tuple[str, str]] = []
    removed: list[str] = []
    with InstanceLock(config.run_dir, check_instance_name(instance), wait):
        from pepc.reconcile.prefetch import prefetch_dir

        dirs = [
            pinswap.live_dir(config.pin_root, instance),
            pinswap.staging_dir(config.pin_root, instance),
            pinswap.retired_dir(config.pin_root, instance),
            prefetch_dir(config, instance),
        ]
        ids = set()
        for d in dirs:
            if not d.exists():
                continue
            inst = open_instance(d)
            if inst is not None:
                ids.add(inst.prog_id)
                inst.close()
        for link in links.links_of(ids):
            if _detach_if_ours(link.ifname, link.prog_id):
                detached.append((link.ifname, link.mode))
        for d in dirs:
            if d.exists():
                pinswap.remove(d)
                removed.append(str(d))
    if detached or removed:
        try:
            audit.append(
                config.state_dir,
                instance,
                {
                    "time": audit.now_iso(),
                    "instance": instance,
                    "result": "unloaded",
                    "interfaces": [i for i, _ in detached],
                    "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                    "map_writes": 0,
                },
            )
        except OSError:
            pass
    return detached, removed
