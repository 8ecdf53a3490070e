#!/usr/bin/env bash
# scripts/build.sh DIR [cmake options...]: configure (once) and build into DIR.
# The configure and compiler output goes to DIR/build.log; the terminal gets
# one status line, and the end of the log when the build fails.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
dir="$1"
shift
export CCACHE_DIR="${CCACHE_DIR:-$HOME/.cache/ccache}"
# Hash paths relative to the checkout so fresh clones reuse the cache.
export CCACHE_BASEDIR="$here" CCACHE_NOHASHDIR=1
mkdir -p "$here/$dir"
log="$here/$dir/build.log"
start=$SECONDS
printf 'Building %s/ (compiler output: %s/build.log) ... ' "$dir" "$dir"
if cmake -S "$here" -B "$here/$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >"$log" 2>&1 &&
  cmake --build "$here/$dir" -j "$(nproc)" >>"$log" 2>&1; then
  warnings=$(grep -c "warning:" "$log" || true)
  echo "done in $((SECONDS - start)) s, $warnings compiler warnings"
else
  status=$?
  echo "FAILED; the end of $log:" >&2
  tail -n 40 "$log" >&2
  exit "$status"
fi
