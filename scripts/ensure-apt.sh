#!/usr/bin/env bash
# Install the Debian packages named in the given files (one per line, # comments)
# that are not installed yet. Runs apt-get update once, only when something is missing.
set -euo pipefail
missing=()
for f in "$@"; do
  while read -r pkg; do
    pkg="${pkg%%#*}"; pkg="$(echo "$pkg" | xargs)"
    [ -z "$pkg" ] && continue
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
      missing+=("$pkg")
    fi
  done < "$f"
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing Debian packages: ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
# coturn is installed for the tests, which run their own on 127.0.0.1; on a machine with systemd the
# package also starts its service, an open relay on every interface with Debian's default config
for pkg in "${missing[@]}"; do
  if [ "$pkg" = coturn ] && command -v systemctl >/dev/null 2>&1; then
    $SUDO systemctl disable --now coturn >/dev/null 2>&1 || true
  fi
done
