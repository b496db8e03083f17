"""The kernel layer: the only pepc code that touches bpf(2), netlink and pins.

Takes: compiled objects and map contents from the stages before it.
Gives: maps, programs, pins, attachments and BPF_PROG_TEST_RUN as Python
objects, each failure a `KernelError` a user can act on.
Start with: loader.py (maps.py for map access, netlink.py for attachments).

Everything here raises `KernelError` (a diagnostics.EnvironmentProblem,
exit code 3) with a message a user can act on: EPERM -> "needs root or
CAP_BPF+CAP_NET_ADMIN", E2BIG -> "the map is full, raise the capacities",
ENOENT on a pin -> "instance not loaded", a refused load -> the tail of the
verifier log.

API (import the submodules; they load libbpf lazily):

pepc.kernel.maps
    BpfMap(fd, name=None)            an open map; attributes name, id, map_type
                                     ("HASH", "ARRAY", "PERCPU_ARRAY", "RINGBUF", ...),
                                     key_size, value_size, max_entries, fd
      .lookup(key) -> bytes | None   (per-CPU maps: .lookup_percpu(key) -> [bytes per possible CPU])
      .update(key, value, flags=0)   (per-CPU: .update_percpu(key, [values]))
      .delete(key) -> bool           False when absent
      .keys() / .items()             items() is batched (BPF_MAP_LOOKUP_BATCH; hash cursor
                                     4 bytes, array cursor key_size); arrays list every index;
                                     per-CPU: .items_percpu() -> [(key, [bytes per CPU])];
                                     .items_raw(): values as the kernel returns them (cheap to compare)
      .update_batch(keys, values) -> applied      not atomic: a failure raises KernelError
      .update_batch_percpu(keys, [[per-CPU]])     with .applied = elements written
      .delete_batch(keys) -> applied              (every key must exist)
      .clear()                       hash: delete all; array: zero all
      .close()
    open_pinned(path) -> BpfMap      name = file name

pepc.kernel.loader
    Instance                         prog_fd, prog_id, prog_name, prog_tag, maps {kernel name: BpfMap},
                                     pin_dir; .map(name) (KernelError if missing), .close()
    load_object(obj, reuse=None) -> Instance (a.k.a. LoadedObject)
                                     fds only, libbpf object closed after load.
                                     reuse={"pepc_stats": old_map, ...}: bpf_map__reuse_fd, so the new
                                     program shares those maps (keeps counters/buckets/ring buffer across
                                     a reload); libbpf refuses a map whose type/sizes/max_entries differ
                                     (EINVAL) -- copy those instead.
    pin(inst, pin_dir, replace=False) files: pin_dir/prog and pin_dir/<map name>; mkdir -p, mounts
                                     bpffs at /sys/fs/bpf if needed; replace=True swaps existing pins
                                     by rename, one atomic rename per pin.
    open_instance(pin_dir) -> Instance | None    None when pin_dir/prog does not exist
    unpin(pin_dir)                   removes the pins and the directory
    prog_info(prog_fd)               struct bpf_prog_info prefix (id, tag, name)

pepc.kernel.netlink (pyroute2, never bpf_link)
    attach(ifname, prog_fd, mode=XdpMode.AUTO, replace_prog_fd=None) -> XdpMode used
                                     AUTO: native, then generic. Without replace_prog_fd it refuses to
                                     replace an attached program (UPDATE_IF_NOEXIST); with it, an atomic
                                     compare-and-swap (XDP_FLAGS_REPLACE + expected fd) in the mode the
                                     old program runs in.
    detach(ifname, mode=None) -> bool  fd -1 with the mode flag the program runs in (read back)
    query(ifname) -> (prog_id, XdpMode) | None

pepc.kernel.testrun
    test_run(prog_fd, frame, repeat=1) -> TestRun(retval, duration_ns, data_out)

pepc.kernel.ringbuf
    EventReader(ring_map)            .poll(timeout_ms) / .drain() -> [layout.EVENT dicts], .close()

pepc.kernel.dataplane (whole-generation helpers)
    write_generation(inst, gen, program)   full rewrite of one generation (masks, rules, slots, gen,
                                     the prefilter pepc_bloom_<gen> and the direct table pepc_direct_<gen>,
                                     and their IPv6 twins pepc_masks6/rules6/bloom6/direct6_<gen>)
    write_derived(array, elements)   a whole marker-guarded array, the marker last: the prefilter
                                     (pepc.compiler.bloom.contents) or the direct table (pepc.compiler.direct.contents)
    set_active(inst, gen)            one write of pepc_ctrl[0] (only active_gen changes)
    load_program(inst, program)      write the inactive generation, then flip
    init_ctrl(inst, layout_digest), read_ctrl(inst), active_gen(inst)
    read_counters(inst) -> {counter name: total over CPUs}
    read_rule_stats(inst, slot) -> {packets, bytes, drops}; read_all_rule_stats(inst)
    read_bucket(inst, slot), reset_rule_state(inst, slots=None)

pepc.kernel.errors
    KernelError(message, hint, errno, applied), kernel_error(op, errno, what=...)

Maps of an instance (layout.MAPS): pepc_ctrl, pepc_gen, pepc_masks_{0,1},
pepc_rules_{0,1}, pepc_slots_{0,1}, pepc_bloom_{0,1}, pepc_direct_{0,1}, the IPv6 maps
pepc_masks6_{0,1}, pepc_rules6_{0,1}, pepc_bloom6_{0,1}, pepc_direct6_{0,1}, pepc_stats, pepc_rl,
pepc_evbudget, pepc_counters, pepc_events. pepc_bloom is the mask prefilter
(ARRAY of u64, max_entries + 1): its contents are derived from the rules,
and a writer that ignores it leaves its marker stale, which only disables it.
pepc_direct (ARRAY of struct pepc_direct, 2 * max_entries + DEPTH + 1) is the
same kind of derived map: the rule map as a table the program reads inline.

Pin names: bpffs refuses any name containing "." (EPERM even on lookup), so
temporary pins use the suffix loader.TMP_SUFFIX ("__new"), never dot-files.
"""
