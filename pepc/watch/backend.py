"""The real backend of the watch loop: pepc's loader and `pepc apply`'s code path.

Nothing here reconciles by itself. Loads go through a `LoadCache` (a reload
re-parses only the files that changed, with the same result as a fresh
load); applies go through a `ReconcileSession` (pepc/reconcile/session.py),
which runs the steps of `pepc apply` (`apply.converge`: same check gate,
same lock, same audit trail, same crash-safe generation flip) with warm
state. Trust: the start, every resync timer, SIGHUP and any retry after an
error read the live maps in full (drift is found and repaired there); a
filesystem change or an expiry reads only the control words and, when they
match what the session last wrote, diffs against its mirror.
"""

from __future__ import annotations

import os
import time
from datetime import datetime
from typing import Hashable, Sequence

from pepc.policy.config import Config
from pepc.policy.diagnostics import PolicyError
from pepc.watch import fs
from pepc.watch.schedule import Reason
from pepc.watch.service import Loaded, Outcome

#: Reasons whose reconcile may trust the session's mirror of the live maps.
EVENT_REASONS = frozenset({Reason.CHANGE, Reason.EXPIRY})


class PepcBackend:
    def __init__(
        self,
        path: str,
        config_path: str | None,
        instance: str,
        iface_names: Sequence[str] | None,
        *,
        lock_wait: float = 10.0,
    ) -> None:
        from pepc.loader.config import default_config_path

        self.path = path
        self.explicit_config = config_path
        # The file watched for changes: --config, else pepc.yaml beside PATH (it may appear later).
        self.config_file = os.path.abspath(config_path or default_config_path(path))
        self.instance = instance
        self.iface_names = list(iface_names) if iface_names else None
        self.lock_wait = lock_wait
        self.config: Config = Config()  # the last config that loaded (pins, state dir, interfaces)
        from pepc.loader.cache import LoadCache

        self.cache = LoadCache()
        self.session = None  # ReconcileSession, made at the first apply
        self._full_next = True  # until the loop says why it reconciles
        self.last_full: bool | None = None

    def reconcile_reasons(self, reasons: frozenset[Reason]) -> None:
        """Called by the loop before apply: a reconcile due only to file
        events or expiries may trust the mirror; any other reason (start,
        resync, SIGHUP, retry) reads everything."""
        self._full_next = not reasons or not reasons <= EVENT_REASONS

    def initial_config(self) -> tuple[Config, PolicyError | None]:
        from pepc.loader import load_config

        try:
            self.config = load_config(self.explicit_config, self.path)
            return self.config, None
        except PolicyError as err:
            return self.config, err

    def fingerprint(self) -> Hashable:
        return fs.fingerprint(os.path.abspath(self.path), self.config_file)

    def load(self) -> Loaded:
        from pepc.loader import load_config, load_policy
        from pepc.reconcile.apply import record_refusal

        started = time.perf_counter()
        config = load_config(self.explicit_config, self.path)
        try:
            # through a symlink (git-sync): the tree it points to now, read whole
            policy = load_policy(fs.resolved(self.path), cache=self.cache)
        except PolicyError as err:
            record_refusal(config, self.instance, err.findings, self.path, started)  # as `pepc apply` does
            raise
        return Loaded(policy, config)

    def apply(self, loaded: Loaded, now: datetime) -> Outcome:
        from pepc.reconcile.session import ReconcileSession, settle_heap

        full, self._full_next = self._full_next, True
        if self.session is None:
            self.session = ReconcileSession(
                self.instance, loaded.config, iface_names=self.iface_names, wait=self.lock_wait, policy_path=self.path
            )
        try:
            r = self.session.reconcile(loaded.policy, now, full=full, config=loaded.config)
        finally:
            settle_heap(collect=full)
        self.last_full = self.session.last_read != "mirror"
        self.config = loaded.config
        counts = r.plan.rule_counts
        details = {
            "apply": r.result,
            "policy_digest": r.plan.policy_digest,
            "prog_id": r.prog_id,
            "live_read": self.session.last_read,
            "rules_added": counts.get("added", 0),
            "rules_changed": counts.get("changed", 0),
            "rules_removed": counts.get("removed", 0),
        }
        if r.plan.load_reason:
            details["loaded"] = r.plan.load_reason
        if r.plan.drift is not None and r.plan.drift.found:
            details["drift_repaired"] = True
        if r.recovered:
            details["recovered"] = list(r.recovered)
        return Outcome(writes=r.writes, generation=r.generation, details=details)

    def unload(self) -> tuple[list, list]:
        from pepc.reconcile.apply import unload_instance

        if self.session is not None:
            self.session.invalidate()
        return unload_instance(self.config, self.instance, wait=self.lock_wait)

    def pin_dir(self) -> str:
        from pepc.reconcile.apply import pin_dir

        return str(pin_dir(self.config, self.instance))

    def interfaces(self) -> list[str]:
        from pepc.reconcile.apply import desired_interfaces

        return [i.name for i in desired_interfaces(self.config, self.iface_names)]

    def status(self) -> dict:
        from pepc.reconcile import status

        return status.collect(self.config, self.instance, compare_layout=True)
