#!/usr/bin/env bash
# Installs every Debian package Strata builds, tests and benchmarks with, if
# missing.
set -euo pipefail
packages=(
  build-essential cmake pkg-config ccache
  libuv1-dev nlohmann-json3-dev zlib1g-dev libzstd-dev libssl-dev libgtest-dev libgmock-dev
  qemu-utils qemu-system-common libnbd-bin python3-libnbd python3-pytest fio nbdkit
  openssl socat valgrind
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "Installing: ${missing[*]}"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
