"""Text renderings of plans and apply results (pure; JSON is `to_json`)."""

from __future__ import annotations

from pepc.reconcile.planner import ReconcilePlan


def _fmt(v: object) -> str:
    return "" if v is None else str(v)


def render_plan(plan: ReconcilePlan, pin_dir: str = "") -> str:
    out: list[str] = []
    where = f" ({pin_dir})" if pin_dir else ""
    out.append(f"pepc plan: instance {plan.instance!r}{where}")
    out.append(f"  policy digest {plan.policy_digest[:16]}…  layout digest {plan.layout_digest}")
    out.append("")
    if plan.load_reason:
        out.append(f"Program: load needed: {plan.load_reason}")
        if plan.carry:
            out.append(f"  per-rule counters carried over for {len(plan.carry)} rule(s)")
    elif plan.live is not None:
        out.append(f"Program: loaded (prog id {_fmt(plan.live.prog_id)}), active generation {plan.live.active_gen}")
    if plan.interfaces:
        out.append("Interfaces:")
        for i in plan.interfaces:
            sign = {"keep": "=", "attach": "+", "replace": "~", "detach": "-"}[i.action]
            if i.action == "detach":
                what = f"detach ({i.current_mode or '?'}): not in the wanted interfaces"
            elif i.action == "keep":
                what = f"attached ({i.current_mode or '?'})"
            elif i.action == "attach":
                what = f"attach (mode {i.mode})"
            else:
                what = f"replace program {i.current_prog_id} ({i.current_mode or '?'}) atomically"
            out.append(f"  {sign} {i.ifname:<16} {what}")
    r = plan.rules
    out.append(f"Rules: {len(r.added)} to add, {len(r.changed)} to change, {len(r.removed)} to remove")
    for c in r.added:
        out.append(f"  + {c.rule_id}  ({c.entries_added} entries)")
    for c in r.changed:
        out.append(f"  ~ {c.rule_id}")
        for f, a, b in c.fields:
            out.append(f"      {f}: {b}" if a == "" else f"      {f}: {a} -> {b}")
    for c in r.removed:
        out.append(f"  - {c.rule_id}  ({c.entries_removed} entries)")
    per_map = plan.per_map()
    if per_map:
        out.append("Map elements (write / delete):")
        for name in sorted(per_map):
            w, d = per_map[name]["write"], per_map[name]["delete"]
            extra = ""
            if name == "pepc_ctrl":
                extra = f"  (flip to generation {plan.target_gen})"
            out.append(f"  {name:<16} {w:>7} / {d:<7}{extra}".rstrip())
    if plan.resets:
        out.append(f"Counters reset for {len(plan.resets)} slot(s) that get a new rule: {_short(plan.resets)}")
    d = plan.drift
    if d is not None:
        if d.found:
            elems = {m.name: m.count for m in d.delta.maps if m.count}
            detail = ", ".join(f"{k} {v}" for k, v in elems.items()) if elems else "contents do not hash to the stored digest"
            out.append(f"Drift: the active generation was modified outside pepc ({detail}); apply repairs it")
        else:
            out.append("Drift: none")
    for n in plan.notes:
        out.append(f"Note: {n}")
    out.append("")
    if plan.changes_pending:
        out.append(
            f"Plan: {len(r.added)} to add, {len(r.changed)} to change, {len(r.removed)} to remove; "
            f"{plan.map_writes} map element writes"
            + (", program load" if plan.load_reason else "")
            + (", attach" if plan.attach_needed else "")
            + "."
        )
    else:
        out.append("No changes: the live maps match the policy.")
    return "\n".join(out) + "\n"


def _short(items: tuple[int, ...], n: int = 10) -> str:
    s = ", ".join(str(i) for i in items[:n])
    return s + (f", … ({len(items)} in all)" if len(items) > n else "")
