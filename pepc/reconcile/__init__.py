"""The reconciler: keep an instance's live XDP maps equal to a policy directory.

Takes: a `Policy` and `Config`, the compiler's `Program`, and the live
maps of an instance (through pepc.kernel).
Gives: the writes that make the live maps equal to the program, applied
atomically (generation flip), under a lock, audited; `pepc plan`'s text;
the warm session `pepc watch` holds; what an instance runs (status.py).
Start with: apply.py (converge: the one sequence every apply runs).

Pieces (functional core, imperative shell):

- ``state.py``    LiveState: what the kernel holds, as plain values.
- ``live.py``     reads a LiveState from the pinned maps (batch calls). The
                  kernel is the only source of truth: no cache file.
- ``diff.py``     pure: per-map deltas, rule-level summary, drift.
- ``planner.py``  pure: desired contents + LiveState -> ReconcilePlan.
- ``render.py``   pure: the text of `pepc plan`.
- ``apply.py``    executes a plan under the instance lock, counts writes,
                  writes the audit line.
- ``lock.py``     flock on ``<run_dir>/<instance>.lock`` (``--wait``).
- ``audit.py``    ``<state_dir>/<instance>/audit.jsonl``.
- ``session.py``  ReconcileSession: the warm reconciler `pepc watch` holds.

`apply.converge(planner, gate)` is the one sequence of steps every apply
runs (lock, pin recovery, plan, gate, writes/flip/barriers/resets or the
load path, audit); `apply_policy` (`pepc apply`) and the session differ
only in how they plan (read everything vs. the mirror) and gate.

Instances
---------
Every host command takes ``--instance NAME`` (default ``default``); the
instance's pins live in ``<pin_root>/<NAME>/`` (pepc.kernel), its lock in
``<run_dir>/<NAME>.lock``, its audit trail in ``<state_dir>/<NAME>/``.

Stable assignments from the kernel
----------------------------------
Before compiling, apply reads the ACTIVE generation's ``pepc_slots`` and
passes every rule's slot and order key to the compiler
(``compiler.Assignments``), so a rule that still exists keeps its slot
(hence its counters and token bucket) and its order key (hence the ranks of
its entries): a one-rule edit compiles to a one-rule delta. Ids are stored
truncated to 64 bytes plus their full length; a truncated id is attributed
only when exactly one policy id fits it.

Apply, with the layout unchanged (A = active generation, I = inactive)
--------------------------------------------------------------------
1. Read ctrl, both generations of gen/masks/rules/slots (one batch lookup
   per map, pepc.kernel.bulk), compile with the live assignments, plan.
   If anything is to be written, run the gate of `pepc check` (the same
   functions); errors refuse the apply before any write. A no-op skips the
   gate: the live maps already hold exactly this policy.
2. If live[I] differs from the desired contents: (barrier, see below) then
   write the minimal delta into generation I — deletes first (so a full
   hash map never refuses an insert), then writes; large deltas go through
   batch calls. A batch call that fails midway has applied a prefix, which
   is harmless: nothing reads generation I.
3. If live[A] differs from the desired contents: zero the per-rule state
   (per-CPU ``pepc_stats``, ``pepc_rl``, per-CPU ``pepc_evbudget``) of slots
   that get a rule they did not hold in A, then FLIP with one write of
   ``pepc_ctrl[0].active_gen = I``. Every packet reads active_gen once, so
   it sees generation A or generation I, never a mix.
4. BARRIER: wait until no packet can still be reading generation A. The
   kernel runs ``synchronize_rcu()`` after every successful update of an
   ARRAY_OF_MAPS / HASH_OF_MAPS map from userspace
   (``maybe_wait_bpf_programs`` in kernel/bpf/syscall.c) and XDP programs
   run inside an RCU read-side section, so one update of a tiny private
   array-of-maps (pepc.kernel.sync.RcuBarrier) is a real grace period.
5. Bring generation A to the same contents with the same kind of minimal
   delta. Both generations are now equal, so the NEXT apply's delta against
   its inactive generation is exactly the policy change.

A no-op apply makes zero writes. kill -9 at any point: before step 3 the
active generation was never touched; after it, the new generation is
complete and active. The next apply compares both generations with the
desired contents and finishes whatever is missing (a stale inactive
generation is synced without a flip). Step 2 is preceded by a barrier too,
because generation I may have been active moments ago if a previous apply
died between its flip and its barrier.

The mask prefilter and the direct table
---------------------------------------
``pepc_bloom_<gen>`` (pepc/compiler/bloom.py) and ``pepc_direct_<gen>``
(pepc/compiler/direct.py) are derived from a generation's rule map and policy
digest (``pepc_bloom6_<gen>`` and ``pepc_direct6_<gen>`` from its IPv6 rule
map ``pepc_rules6_<gen>``). The reconciler treats them as two more generation maps (in
diff.GEN_MAPS): recomputed for the desired contents, diffed element by
element, written with the rest of the generation before the flip. The
policy digest does not cover them, so when the stored digest is the
desired one any difference in them is reported as drift and repaired.

Per-rule state
--------------
Counters/buckets live in maps shared by both generations, indexed by slot.
A rule that keeps its slot keeps them. A slot that gets a new rule (or
another rule) is zeroed before the flip. The compiler gives new rules slots
that no rule of the active generation holds, so no packet of the old
generation counts into a freshly zeroed slot.

Layout change or no instance: the load path
-------------------------------------------
The layout digest in ``pepc_ctrl`` differs from the compiled one (or there
is no instance): render the header into a temp dir, build the object
(pepc.compiler.objbuild), load it, fill BOTH generations fully (batch), set ctrl
(active_gen 0, layout digest), copy the per-rule counters of surviving rules
from the old maps (when their value shapes are compatible), then:

- new instance: pin, attach where asked;
- replacement: pin the new set under ``<pin_root>/_new-<NAME>``, REPLACE the
  program on every interface that runs the old one (netlink
  XDP_FLAGS_REPLACE with the old program's fd as expected fd: a
  compare-and-swap, never a moment without a filter), then swap the pin
  directories: ``<NAME>`` -> ``_old-<NAME>``, ``_new-<NAME>`` -> ``<NAME>``,
  remove ``_old-<NAME>`` (bpffs allows no '.' in names).

Killed midway, the pin root is repaired by ``recover_pins`` at the start of
the next apply: a leftover ``_new-<NAME>`` whose program is attached somewhere is
the truth (finish the renames), otherwise it is discarded; a leftover
``_old-<NAME>`` whose program is no longer attached is removed.

Audit
-----
Every apply — done, no-op, refused (check errors) or failed — and every
unload appends one
JSON line to ``<state_dir>/<NAME>/audit.jsonl``: time, instance, result,
policy and layout digests, git commit and dirty flag of the policy dir,
rules added/changed/removed, map elements written, duration.

The watch session and its trust rule
-----------------------------------
A `ReconcileSession` keeps, between reconciles, the compiler state, the
last policy the check gate passed, and a MIRROR of what it last wrote:
after every complete apply both generations hold the desired contents, so
the mirror is one contents dict plus the active generation, the
``pepc_gen`` element (policy digest and counts), the layout digest and the
program id.

- A FULL reconcile — the first one, every resync timer, SIGHUP, any
  reconcile after an error (refused, failed, aborted: the mirror is then
  dropped) and whenever interrupted pin swaps were just repaired — reads
  the live state in full, exactly as `pepc apply`, and finds drift.
- An EVENT-triggered reconcile (file change, expiry) opens the pins and
  reads only ``pepc_ctrl`` (active generation, layout digest), both
  ``pepc_gen`` elements (stored policy digests and counts), the program
  id and the WRITER TOKEN. When all equal the mirror, the generations'
  contents are taken from the mirror instead of reading every map, and the
  plan skips the drift hash (it could only find what the mirror says).
  Anything that disagrees is a full read.
- The writer token (``<run_dir>/<NAME>.writer``) is replaced by every
  apply under the lock before it can write (`apply.swap_writer_token`).
  Control words alone cannot reveal another `pepc apply` killed after
  writing some elements of the inactive generation but before its
  ``pepc_gen`` or flip; the token does, and the session reads in full.

So an element changed by hand (bpftool, not pepc) is not seen by an
event-triggered reconcile; it is repaired at the next full one: the
reconciler is level-triggered at resync granularity, like Kubernetes
informers with periodic resync. Anything that changes the control words
(another `pepc apply`, a reload, an unload) is noticed at once.

Costs
-----
Diffs are set operations on dict views (C-level); Python work follows the
size of the change. When both generations are equal (after every complete
apply) one diff serves both. Drift needs the active generation hashed in
canonical order only when its stored digest is not the desired one (when
it is, the diff to the desired contents is the drift). bench/apply.py
measures all of it at 1k/10k/100k rules.
"""
