#!/usr/bin/env bash
# Install the Debian packages the test suite needs, when missing. Idempotent:
# does nothing (not even `apt-get update`) when everything is already there.
# Runs as root, or through sudo otherwise. Fails loudly when an install fails.
set -euo pipefail

# package -> how to tell it is present ("pkg" = dpkg-query; "cmd:NAME" = a command on PATH)
PACKAGES=(
  "openssh-client pkg"
  "openssh-server pkg"
  "python3-paramiko pkg"
  "curl pkg"
  "libjsch-java pkg"
  "default-jdk-headless cmd:javac"
  "keepalived pkg"
  "haproxy pkg"
  "ipvsadm pkg"
  "iproute2 pkg"
  "prometheus cmd:promtool"
  "systemd cmd:systemd-analyze"
)

is_installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

missing=()
for entry in "${PACKAGES[@]}"; do
  pkg=${entry%% *}
  check=${entry#* }
  case "$check" in
    cmd:*)
      if command -v "${check#cmd:}" >/dev/null 2>&1 || is_installed "$pkg"; then continue; fi
      ;;
    *)
      if is_installed "$pkg"; then continue; fi
      ;;
  esac
  missing+=("$pkg")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all test dependencies present"
  exit 0
fi

echo "install-deps: installing: ${missing[*]}"

if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo -n)
else
  echo "install-deps: ERROR: not root and no sudo; cannot install: ${missing[*]}" >&2
  exit 1
fi

# Keep the packages' daemons (keepalived, haproxy, sshd) from being started by
# their maintainer scripts: the tests start their own instances.
policy=/usr/sbin/policy-rc.d
added_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
  "${SUDO[@]}" chmod 755 "$policy"
  added_policy=1
fi
cleanup() {
  if [ "$added_policy" -eq 1 ]; then "${SUDO[@]}" rm -f "$policy"; fi
}
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
if ! "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update; then
  echo "install-deps: ERROR: apt-get update failed" >&2
  exit 1
fi
if ! "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y --no-install-recommends "${missing[@]}"; then
  echo "install-deps: ERROR: apt-get install failed for: ${missing[*]}" >&2
  exit 1
fi

# Verify.
still=()
for entry in "${PACKAGES[@]}"; do
  pkg=${entry%% *}
  check=${entry#* }
  case "$check" in
    cmd:*) command -v "${check#cmd:}" >/dev/null 2>&1 || is_installed "$pkg" || still+=("$pkg") ;;
    *) is_installed "$pkg" || still+=("$pkg") ;;
  esac
done
if [ ${#still[@]} -ne 0 ]; then
  echo "install-deps: ERROR: still missing after install: ${still[*]}" >&2
  exit 1
fi
echo "install-deps: done"
