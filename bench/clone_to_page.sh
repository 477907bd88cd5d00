#!/usr/bin/env bash
# Time from `git clone` to the web page answering on a fresh clone: `make run` with no pip cache, then poll the page.
#   bench/clone_to_page.sh [REPO]        (REPO defaults to this checkout; the clone goes to a temporary folder)
# Prints: clone + `.venv` created, page answering, sample catalogue indexed (seconds since the clone started), and
# the size of the `.venv`. Not part of `make bench`: it downloads every serving dependency from PyPI.
set -euo pipefail
repo=${1:-$(cd "$(dirname "$0")/.." && pwd)}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Ports away from a `make run` that may already be going on.
export PIP_NO_CACHE_DIR=1 FASHIONSEARCH_CLASSIFIER_PORT=51151 FASHIONSEARCH_EMBEDDER_PORT=51152 \
  FASHIONSEARCH_GATEWAY_PORT=51150 FASHIONSEARCH_HTTP_PORT=18180
since() { echo "$(date +%s.%N) - $start" | bc | xargs printf '%.1f'; }
start=$(date +%s.%N)
git clone -q "$repo" "$work/clone"
cd "$work/clone"
setsid make run >"$work/run.log" 2>&1 &
pid=$!
until [ -e .venv/.serving ]; do sleep 0.2; done
installed=$(since)
until curl -sf -o /dev/null "http://127.0.0.1:$FASHIONSEARCH_HTTP_PORT/"; do
  sleep 0.2
  kill -0 $pid 2>/dev/null || { tail -20 "$work/run.log"; exit 1; }
done
page=$(since)
until grep -q "fashionsearch is running" "$work/run.log"; do sleep 0.2; done
indexed=$(since)
echo "| clone + .venv | page answering | catalogue indexed | .venv size |"
echo "| ---: | ---: | ---: | ---: |"
echo "| ${installed} s | ${page} s | ${indexed} s | $(du -sh .venv | cut -f1) |"
kill -INT -- -$pid
wait $pid || true
