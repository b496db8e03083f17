#!/usr/bin/env bash
# Installs everything pepc needs on a Debian 12 machine, idempotently:
# the BPF toolchain from Debian, then a virtualenv with pepc in it.
# Run as root (apt-get). Re-running it is cheap: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBS=(clang llvm libbpf-dev libbpf1 linux-libc-dev iproute2 xdp-tools bpftool iputils-ping python3-venv)
missing=()
for p in "${DEBS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# bpffs is where pepc pins its maps; most systemd hosts mount it already.
if ! mountpoint -q /sys/fs/bpf 2>/dev/null; then
  mount -t bpf bpf /sys/fs/bpf 2>/dev/null || echo "setup: warning: could not mount bpffs at /sys/fs/bpf" >&2
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.pepc-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[test]'
  touch "$stamp"
fi
