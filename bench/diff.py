"""`pepc diff` benchmark: two revisions of a realistic policy, 1k / 10k rules.

The policy is bench/check.py's generated estate. The new revision is the
kind of change a pull request makes: a few rules' actions flipped, a few
rules added (host allows and a subnet block) and a few removed. For every
size it prints the time of the semantic diff (`policydiff.diff_policies`,
the region search and the rule changes) and the regions found, against
the baseline measured in the same run: `pepc check`'s analysis of the new
revision (`checker.analyze`), which a pull request's CI runs anyway. The
ratio says what the diff adds to a PR's pipeline.

    .venv/bin/python bench/diff.py [SIZES...]
"""

from __future__ import annotations

import dataclasses
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from check import NOW, generate  # noqa: E402

from pepc.checker import analyze  # noqa: E402
from pepc.policy.config import Config  # noqa: E402
from pepc.policy.model import Action, Location, Policy, Prefix, PortRange, Protocol, Rule  # noqa: E402
from pepc.diff.semantic import Kind, diff_policies  # noqa: E402


def edit(policy: Policy, seed: int = 7) -> Policy:
    rng = random.Random(seed)
    rules = list(policy.rules)
    for i in rng.sample(range(len(rules)), 5):  # flip a few actions
        r = rules[i]
        if r.action in (Action.ALLOW, Action.BLOCK):
            rules[i] = dataclasses.replace(r, action=Action.BLOCK if r.action is Action.ALLOW else Action.ALLOW)
    for i in sorted(rng.sample(range(len(rules)), 5), reverse=True):  # remove a few
        del rules[i]
    for k in range(5):  # add host allows and a subnet block
        rules.append(Rule(
            id=f"zz_new_{k}", action=Action.ALLOW, loc=Location("new.yaml", k + 1, 3), priority=300,
            protocol=Protocol.TCP, dst=(Prefix(0x0A630000 + k, 32),), dports=(PortRange(443, 443),),
        ))
    rules.append(Rule(id="zz_block", action=Action.BLOCK, loc=Location("new.yaml", 9, 3), priority=900, src=(Prefix(0xC6336400, 24),)))
    return Policy(policy.root, tuple(rules))


def timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def main(argv: list[str]) -> int:
    sizes = [int(a) for a in argv] or [1000, 10000]
    cfg = Config(default_action=Action.BLOCK)
    print(f"{'rules':>7} {'diff s':>8} {'check s':>8} {'diff/check':>10}  regions (verdict/action/rule)  rule changes")
    for n in sizes:
        old = generate(n)
        new = edit(old)
        d, dt, _ = timed(lambda: diff_policies(old, cfg.default_action, new, cfg.default_action, NOW))
        _, ct, _ = timed(lambda: analyze(new, cfg, NOW))
        counts = "/".join(str(d.count(k)) for k in Kind)
        print(f"{n:>7} {dt:>8.3f} {ct:>8.3f} {dt / ct:>10.2f}  {counts:>29}  {len(d.rules):>12}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
