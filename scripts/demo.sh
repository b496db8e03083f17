#!/usr/bin/env bash
# The main job on the example policies. Grows as pepc grows: today it checks.
set -euo pipefail
cd "$(dirname "$0")/.."
PEPC=.venv/bin/pepc
echo "== pepc check policies.d/"
$PEPC check policies.d/
