#!/usr/bin/env bash
# scripts/build.sh DIR [cmake options...]: configure (once) and build into DIR.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
dir="$1"
shift
export CCACHE_DIR="${CCACHE_DIR:-$HOME/.cache/ccache}"
# Hash paths relative to the checkout so fresh clones reuse the cache.
export CCACHE_BASEDIR="$here" CCACHE_NOHASHDIR=1
cmake -S "$here" -B "$here/$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
cmake --build "$here/$dir" -j "$(nproc)"
