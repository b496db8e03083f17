#!/usr/bin/env bash
# The main job on the example policies, end to end on this machine:
#   check -> compile -> plan -> apply to a veth pair whose peer sits in a
#   throwaway network namespace -> real ICMP/TCP/UDP traffic from that
#   namespace -> pepc stats / status / history -> unload.
# Needs root (BPF, netns). Everything it creates is removed on exit, also on
# failure or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
PEPC=.venv/bin/pepc
PY=.venv/bin/python

if [ "$(id -u)" != 0 ]; then
  echo "demo: needs root (it loads an XDP program and creates a network namespace)" >&2
  exit 3
fi

INSTANCE=demo
NS=pepc-demo-$$
HOST_IF=pd$$h        # root end: the XDP program filters what arrives here
PEER_IF=pd$$n        # namespace end
OUT=$(mktemp -d /tmp/pepc-demo.XXXXXX)
SERVER_PID=

cleanup() {
  set +e
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null
  $PEPC unload --instance "$INSTANCE" >/dev/null 2>&1
  ip netns del "$NS" 2>/dev/null
  ip link del "$HOST_IF" 2>/dev/null
  rm -rf "$OUT"
}
trap cleanup EXIT INT TERM

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "pepc check policies.d/"
$PEPC check policies.d/

step "pepc compile policies.d/ -o $OUT/build"
$PEPC compile policies.d/ -o "$OUT/build"
ls -l "$OUT/build"

# The example policies protect web01 = 203.0.113.10 (see policies.d/00-objects.yaml).
# The root end of the veth gets that address (plus 10.201.0.1/24); the namespace
# gets one address per kind of client the policies know about:
#   10.201.0.2     an ordinary client on the internet
#   198.51.100.7   a machine in the office network (admins)
#   203.0.113.77   the abuser block_abuser blocks
#   192.0.2.53     one of the resolvers (DNS replies)
step "a veth pair into network namespace $NS"
ip netns add "$NS"
ip link add "$HOST_IF" type veth peer name "$PEER_IF" netns "$NS"
ip addr add 10.201.0.1/24 dev "$HOST_IF"
ip addr add 203.0.113.10/32 dev "$HOST_IF"
ip link set "$HOST_IF" up
ip -n "$NS" link set lo up
ip -n "$NS" addr add 10.201.0.2/24 dev "$PEER_IF"
for a in 198.51.100.7 203.0.113.77 192.0.2.53; do
  ip -n "$NS" addr add "$a/32" dev "$PEER_IF"
  ip route add "$a/32" dev "$HOST_IF"          # replies from the host go back through the veth
done
ip -n "$NS" link set "$PEER_IF" up
ip -n "$NS" route add 203.0.113.10/32 dev "$PEER_IF"
# IPv6 on the same link (documentation prefix, no DAD wait). The example
# policies name no IPv6 address, so default BLOCK decides every v6 packet
# except the neighbour discovery the lockout guard passes.
ip addr add 2001:db8:201::1/64 dev "$HOST_IF" nodad
ip -n "$NS" addr add 2001:db8:201::2/64 dev "$PEER_IF" nodad
# a real web server on web01's address, port 80 (the web_public rule)
$PY -m http.server --bind 203.0.113.10 80 --directory "$OUT" >/dev/null 2>&1 &
SERVER_PID=$!
sleep 0.5

step "pepc plan policies.d/ --iface $HOST_IF --instance $INSTANCE   (nothing is loaded yet)"
$PEPC plan policies.d/ --iface "$HOST_IF" --instance "$INSTANCE" || true

step "pepc apply policies.d/ --iface $HOST_IF --instance $INSTANCE"
$PEPC apply policies.d/ --iface "$HOST_IF" --instance "$INSTANCE"

step "pepc status --instance $INSTANCE"
$PEPC status --instance "$INSTANCE"

# One client at a time: SRC -> web01, with what the policy says must happen.
drops() {  # the data plane's global drop counter, summed over CPUs
  $PEPC stats --instance "$INSTANCE" --format json | $PY -c 'import json,sys; print(json.load(sys.stdin)["counters"]["drop"])'
}
probe() {  # probe KIND SRC SPORT DPORT EXPECT  (KIND: tcp | udp | ping)
  local kind=$1 src=$2 sport=$3 dport=$4 expect=$5 got before
  case $kind in
    ping)
      if ip netns exec "$NS" ping -c 2 -i 0.2 -W 1 -I "$src" 203.0.113.10 >/dev/null 2>&1; then got=pass; else got=drop; fi ;;
    tcp)
      got=$(ip netns exec "$NS" $PY - "$src" "$dport" <<'EOF'
import socket, sys
s = socket.socket(); s.settimeout(1.5); s.bind((sys.argv[1], 0))
try:
    s.connect(("203.0.113.10", int(sys.argv[2])))
    s.sendall(b"GET / HTTP/1.0\r\n\r\n"); s.recv(64)
    print("pass")                      # connected (and served)
except ConnectionRefusedError:
    print("pass")                      # reached the host: it answered RST
except OSError:
    print("drop")                      # no answer at all: dropped by XDP
EOF
) ;;
    udp)  # UDP gets no answer either way: the drop counter tells
      before=$(drops)
      ip netns exec "$NS" $PY - "$src" "$sport" "$dport" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
for _ in range(3):
    s.sendto(b"x" * 64, ("203.0.113.10", int(sys.argv[3])))
EOF
      sleep 0.2
      if [ "$(drops)" -gt "$before" ]; then got=drop; else got=pass; fi ;;
  esac
  printf '  %-5s %-14s -> 203.0.113.10:%-5s %-5s (policy: %s)\n' "$kind" "$src" "$dport" "$got" "$expect"
  if [ "$got" != "$expect" ]; then
    echo "demo: unexpected verdict" >&2; exit 1
  fi
}

step "real traffic from the namespace"
probe ping 10.201.0.2    -     -     pass   # icmp: ping web01 from anywhere
probe ping 203.0.113.77  -     -     drop   # block_abuser outranks every allow
probe tcp  10.201.0.2    0     80    pass   # web_public (served by the http.server above)
probe tcp  10.201.0.2    0     22    drop   # ssh only for admins: default BLOCK
probe tcp  198.51.100.7  0     22    pass   # ssh_admins (nothing listens: the host's RST proves it passed)
probe tcp  10.201.0.2    0     25    pass   # log_smtp_probes: LOG_ONLY passes and emits an event
probe udp  192.0.2.53    53    40000 pass   # dns_replies: resolver port 53 -> an ephemeral port
probe udp  10.201.0.2    40001 9999  drop   # any other UDP: default BLOCK

step "IPv6 from the namespace: default BLOCK, neighbour discovery still works"
ip -n "$NS" -6 neigh flush dev "$PEER_IF"   # resolve the host again, through the filter
got=$(ip netns exec "$NS" $PY - <<'EOF'
import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM); s.settimeout(1.5)
try:
    s.connect(("2001:db8:201::1", 22)); print("pass")
except ConnectionRefusedError:
    print("pass")
except OSError:
    print("drop")
EOF
)
printf '  %-5s %-14s -> [2001:db8:201::1]:22 %-5s (policy: drop, no IPv6 rule: default BLOCK)\n' tcp6 2001:db8:201::2 "$got"
[ "$got" = drop ] || { echo "demo: unexpected verdict" >&2; exit 1; }
if ip -n "$NS" -6 neigh show 2001:db8:201::1 dev "$PEER_IF" | grep -q lladdr; then nd=pass; else nd=drop; fi
printf '  %-5s %-14s -> 2001:db8:201::1 (neighbour solicitation) %-5s (policy: pass, lockout guard)\n' nd6 2001:db8:201::2 "$nd"
[ "$nd" = pass ] || { echo "demo: neighbour discovery was blocked" >&2; exit 1; }

step "pepc stats --instance $INSTANCE"
$PEPC stats --instance "$INSTANCE"

step "pepc apply again: nothing changed, so nothing is written"
$PEPC apply policies.d/ --iface "$HOST_IF" --instance "$INSTANCE"

step "pepc history --instance $INSTANCE"
$PEPC history --instance "$INSTANCE" --limit 5

step "pepc unload --instance $INSTANCE"
$PEPC unload --instance "$INSTANCE"

step "after unload: no filter, so the SSH probe that was dropped passes"
probe tcp 10.201.0.2 0 22 pass  # no filter any more: the host answers again
echo
echo "demo: done"
