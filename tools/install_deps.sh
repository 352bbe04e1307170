#!/usr/bin/env bash
# Installs the Debian packages sputnik builds against. Idempotent; skips apt when all are present.
set -euo pipefail
packages=(build-essential cmake ninja-build pkg-config nlohmann-json3-dev libpcre2-dev python3-pip
          libcli11-dev libfmt-dev libgtest-dev libbenchmark-dev unzip python3)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
fi
