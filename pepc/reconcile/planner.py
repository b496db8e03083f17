"""The reconcile plan: what `apply` will do, computed without touching anything.

`make_plan` is pure: desired contents + LiveState (or None) -> ReconcilePlan.
`pepc plan` renders it; `pepc apply` executes it (reconcile/apply.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable, Mapping, Sequence

from pepc.reconcile import diff
from pepc.reconcile.state import Attachment, LiveState


@dataclass(frozen=True)
class InterfaceAction:
    ifname: str
    mode: str  # requested mode: auto | native | generic | offload
    #: "keep" (our program is attached) | "attach" | "replace" (the program
    #: of this instance's previous load, swapped atomically) | "detach" (our
    #: program runs there but the interface is no longer wanted)
    action: str
    current_prog_id: int | None = None
    current_mode: str | None = None

    def to_json(self) -> dict:
        return {
            "ifname": self.ifname,
            "mode": self.mode,
            "action": self.action,
            "current_prog_id": self.current_prog_id,
            "current_mode": self.current_mode,
        }


@dataclass(frozen=True)
class ReconcilePlan:
    instance: str
    policy_digest: str
    layout_digest: str
    live: LiveState | None
    #: Why the program must be (re)loaded, or None when the live maps take
    #: the plan as is.
    load_reason: str | None
    #: computes the rule-level summary (rules added / changed / removed with
    #: their fields) on first use of `rules`: on a 100k-rule first load it is
    #: 100k decoded rules, which only `pepc plan` prints
    rules_fn: Callable[[], diff.RuleSummary]
    #: {"added", "changed", "removed"}: what the audit trail records
    rule_counts: Mapping[str, int]
    #: The generation written first (the inactive one; 0 on a load).
    target_gen: int
    #: Writes into target_gen. On a load: the whole program.
    target: diff.GenDelta
    #: Whether the active generation flips to target_gen afterwards.
    flip: bool
    #: After the flip (and an RCU grace period): writes that bring the
    #: previously active generation to the same contents. On a load: the
    #: second generation, filled before anything is attached.
    sync_old: diff.GenDelta
    #: Slots whose counters, token bucket and event budget are zeroed before
    #: the flip because they get a rule they did not hold.
    resets: tuple[int, ...]
    #: Rule slots whose counters are carried to the new maps on a layout change: (old, new).
    carry: tuple[tuple[int, int], ...]
    drift: diff.Drift | None
    interfaces: tuple[InterfaceAction, ...] = ()
    notes: tuple[str, ...] = field(default=())

    @cached_property
    def rules(self) -> diff.RuleSummary:
        return self.rules_fn()

    @property
    def map_writes(self) -> int:
        """Map elements apply will write (the flip counts as one)."""
        return self.target.count + (1 if self.flip else 0) + self.sync_old.count + 3 * len(self.resets)

    @property
    def attach_needed(self) -> bool:
        return any(i.action != "keep" for i in self.interfaces)

    @property
    def changes_pending(self) -> bool:
        return bool(self.load_reason) or self.map_writes > 0 or self.attach_needed

    def per_map(self) -> dict[str, dict[str, int]]:
        """Element writes and deletes per kernel map (both generations)."""
        out: dict[str, dict[str, int]] = {}

        def add(name: str, w: int, d: int) -> None:
            if w or d:
                cur = out.setdefault(name, {"write": 0, "delete": 0})
                cur["write"] += w
                cur["delete"] += d

        for gen, delta in ((self.target_gen, self.target), (1 - self.target_gen, self.sync_old)):
            for m in delta.maps:
                name = "pepc_gen" if m.name == "pepc_gen" else f"{m.name}_{gen}"
                add(name, len(m.writes), len(m.deletes))
        if self.flip:
            add("pepc_ctrl", 1, 0)
        for name in ("pepc_stats", "pepc_rl", "pepc_evbudget"):
            add(name, len(self.resets), 0)
        return out

    def to_json(self) -> dict:
        live = self.live
        return {
            "instance": self.instance,
            "changes_pending": self.changes_pending,
            "policy_digest": self.policy_digest,
            "layout_digest": self.layout_digest,
            "live": None
            if live is None
            else {
                "layout_digest": live.layout_digest,
                "active_gen": live.active_gen,
                "prog_id": live.prog_id,
                "policy_digest": [(live.gen_info(g) or {}).get("policy_digest") for g in (0, 1)],
            },
            "load": {"needed": bool(self.load_reason), "reason": self.load_reason},
            "interfaces": [i.to_json() for i in self.interfaces],
            "rules": {
                **self.rules.counts(),
                "changes": [c.to_json() for c in self.rules.all()],
            },
            "generation": {"target": self.target_gen, "flip": self.flip},
            "maps": self.per_map(),
            "map_writes": self.map_writes,
            "counter_resets": list(self.resets),
            "counters_carried": len(self.carry),
            "drift": None if self.drift is None else self.drift.to_json(),
            "notes": list(self.notes),
        }


def _interface_actions(
    interfaces: Sequence[tuple[str, str]], live: LiveState | None, current: Mapping[str, Attachment]
) -> tuple[InterfaceAction, ...]:
    ours = live.prog_id if live else None
    out = []
    for ifname, mode in interfaces:
        att = current.get(ifname)
        cur_id = att.prog_id if att else None
        cur_mode = att.mode if att else None
        if cur_id is None:
            action = "attach"
        elif ours is not None and cur_id == ours:
            action = "keep"
        else:
            action = "replace"
        out.append(InterfaceAction(ifname, mode, action, cur_id, cur_mode))
    if interfaces and live is not None:
        wanted = {n for n, _ in interfaces}
        for att in live.attachments:
            if att.ifname not in wanted:
                out.append(InterfaceAction(att.ifname, att.mode or "auto", "detach", att.prog_id, att.mode))
    return tuple(out)


def make_plan(
    instance: str,
    desired: Mapping[str, Mapping[bytes, bytes]],
    policy_digest: str,
    layout_digest: str,
    live: LiveState | None,
    interfaces: Sequence[tuple[str, str]] = (),
    current: Mapping[str, Attachment] | None = None,
    *,
    trusted: bool = False,
) -> ReconcilePlan:
    """`interfaces`: (ifname, mode) that must carry the program; `current`:
    what netlink reports attached on them now. `trusted`: the generations of
    `live` are a record of what was written (the watch session's mirror),
    not a read: drift is not looked for (it would cost a hash of the whole
    active generation and could only find what the record already says)."""
    desired = diff.normalize(desired)
    ifaces = _interface_actions(interfaces, live, current or {})
    empty = diff.empty_contents()
    notes: list[str] = []

    if live is None or live.layout_digest != layout_digest:
        if live is None:
            reason = "no instance is loaded"
            old_active = empty
        else:
            reason = f"the layout changed (live {live.layout_digest}, desired {layout_digest})"
            old_active = live.active
        carry: list[tuple[int, int]] = []
        if live is not None:
            old = {(r.id_bytes, r.id_len): r.slot for r in diff.decode_slots(old_active.get("pepc_slots", {})).values()}
            for r in diff.decode_slots(desired["pepc_slots"]).values():
                s = old.get((r.id_bytes, r.id_len))
                if s is not None:
                    carry.append((s, r.slot))
        full = diff.diff_generation(desired, empty)
        if live is None or not old_active.get("pepc_slots"):
            counts = {"added": diff.used_slots(desired["pepc_slots"]), "changed": 0, "removed": 0}
        else:
            counts = diff.rule_summary(desired, old_active).counts()
        if live is not None:
            # a program being replaced counts as attached wherever it runs
            ifaces = tuple(
                i if i.action == "detach"
                else InterfaceAction(i.ifname, i.mode, "replace" if i.current_prog_id else "attach", i.current_prog_id, i.current_mode)
                for i in ifaces
            )
        return ReconcilePlan(
            instance=instance,
            policy_digest=policy_digest,
            layout_digest=layout_digest,
            live=live,
            load_reason=reason,
            rules_fn=lambda: diff.rule_summary(desired, old_active),
            rule_counts=counts,
            target_gen=0,
            target=full,
            flip=False,
            sync_old=full,
            resets=(),
            carry=tuple(sorted(carry)),
            drift=None if live is None or trusted else diff.find_drift(live.active, desired, policy_digest),
            interfaces=ifaces,
            notes=tuple(notes),
        )

    a, i = live.active_gen, live.inactive_gen
    active = diff.normalize(live.gens[a])
    inactive = diff.normalize(live.gens[i])
    target = diff.diff_generation(desired, inactive)
    # after every complete apply both generations are equal: one diff serves both
    behind = (
        target
        if all(active[m] is inactive[m] or active[m] == inactive[m] for m in diff.GEN_MAPS)
        else diff.diff_generation(desired, active)
    )
    flip = not behind.empty
    summary = diff.rule_summary(desired, active, behind)  # proportional to the change
    if not flip and not target.empty:
        notes.append(
            f"generation {i} (inactive) is out of date, probably from an interrupted apply: it is brought up to date, the active generation is not touched"
        )
    return ReconcilePlan(
        instance=instance,
        policy_digest=policy_digest,
        layout_digest=layout_digest,
        live=live,
        load_reason=None,
        rules_fn=lambda: summary,
        rule_counts=summary.counts(),
        target_gen=i,
        target=target,
        flip=flip,
        sync_old=behind,
        resets=diff.slots_to_reset(desired, active, behind) if flip else (),
        carry=(),
        drift=_trusted_drift(active) if trusted else diff.find_drift(active, desired, policy_digest, behind),
        interfaces=ifaces,
        notes=tuple(notes),
    )


def _trusted_drift(active: diff.Contents) -> diff.Drift:
    g = diff.gen_info(active)
    stored = str(g["policy_digest"]) if g else None
    return diff.Drift(digest_ok=True, stored_digest=stored, contents_digest=stored or "")
