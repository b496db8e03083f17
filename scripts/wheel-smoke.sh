#!/usr/bin/env bash
# pepc as a user gets it from a release: build the sdist and the wheel (the
# wheel from the sdist, as `python -m build` does), `twine check` both,
# install the wheel into a fresh venv outside the checkout, and run
# check / compile / simulate / test from another directory on a copy of the
# example policies. The generated files must equal what the checkout's own
# (editable) pepc writes: a data file missing from the wheel, or a stale
# one, shows up here. Exits non-zero on the first failure.
#
# Needs the project venv (`make setup`; build and twine come with '.[test]').
# Run by .ci/run after `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
py=$repo/.venv/bin/python
if [ ! -x "$py" ]; then
  echo "wheel-smoke: no .venv: run make setup first" >&2
  exit 2
fi

tmp=$(mktemp -d /tmp/pepc-wheel-smoke.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
step() { echo "wheel-smoke: $*"; }

step "building sdist and wheel"
"$py" -m build --outdir "$tmp/dist" . >"$tmp/build.log" 2>&1 || { cat "$tmp/build.log" >&2; exit 1; }
sdist=$(ls "$tmp"/dist/*.tar.gz)
wheel=$(ls "$tmp"/dist/*.whl)
step "twine check $(basename "$sdist") $(basename "$wheel")"
"$py" -m twine check --strict "$sdist" "$wheel"

# The wheel must carry the data packages (a missing one only fails at run time).
"$py" - "$wheel" <<'EOF'
import sys, zipfile
names = set(zipfile.ZipFile(sys.argv[1]).namelist())
want = ["pepc/schema/policy-set.schema.json", "pepc/templates/pepc_policy.h.j2", "pepc/bpf/pepc_xdp.c"]
missing = [n for n in want if n not in names]
if missing or not any(n.endswith("/licenses/LICENSE") for n in names):
    sys.exit(f"wheel-smoke: the wheel lacks {missing or 'LICENSE'}")
EOF

step "installing the wheel into a fresh venv"
"$py" -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install -q --disable-pip-version-check "$wheel" >"$tmp/pip.log" 2>&1 \
  || { cat "$tmp/pip.log" >&2; exit 1; }
pepc=$tmp/venv/bin/pepc

work=$tmp/work
mkdir -p "$work"
cp -r policies.d tests.d pepc.yaml "$work/"
cd "$work"
# pepc must come from the venv, not from the checkout
"$tmp/venv/bin/python" -c 'import pepc, sys; sys.exit(0 if "/venv/" in pepc.__file__ else f"pepc imported from {pepc.__file__}")'

packet='tcp 198.51.100.7:50000 > 203.0.113.10:22'
step "pepc check";    "$pepc" check policies.d >/dev/null
step "pepc compile";  "$pepc" compile policies.d -o out --no-object >/dev/null
step "pepc simulate"; "$pepc" simulate policies.d "$packet" >simulate.txt
step "pepc test";     "$pepc" test policies.d --junit junit.xml >/dev/null

# The same commands with the checkout's pepc, from the same relative paths.
ref=$tmp/ref
mkdir -p "$ref"
cp -r policies.d tests.d pepc.yaml "$ref/"
cd "$ref"
"$repo/.venv/bin/pepc" compile policies.d -o out --no-object >/dev/null
"$repo/.venv/bin/pepc" simulate policies.d "$packet" >simulate.txt
if ! diff -r "$ref/out" "$work/out" || ! diff "$ref/simulate.txt" "$work/simulate.txt"; then
  echo "wheel-smoke: the installed wheel's output differs from the checkout's" >&2
  exit 1
fi
step "ok"
