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
  # the abuse tests check the shipped fail2ban filter against the real log
  "fail2ban cmd:fail2ban-regex"
  # the pool lab (tests/lab/lab.sh): a real GlusterFS volume, BLAKE3 checks
  "glusterfs-server pkg"
  "glusterfs-client pkg"
  "b3sum cmd:b3sum"
  "python3 cmd:python3"
  # tests/powercut (the power-cut test) and tests/ipvs-vm (real IPVS): a qemu guest booting Debian's cloud kernel
  # (downloaded below, not installed) from a busybox initramfs, an ext4 disk image,
  # the LD_PRELOAD control shim built with cc, a checker in python3 using b3sum.
  "qemu-system-x86 cmd:qemu-system-x86_64"
  "busybox-static pkg"
  "e2fsprogs cmd:mkfs.ext4"
  "gcc cmd:cc"
  "libc6-dev pkg"
  "binutils cmd:strip"
  # SFTP append tests mount the node with sshfs
  "sshfs pkg"
  # rsync over sshfs writes ".name.XXXXXX" and renames it (tests/sftp.rs)
  "rsync pkg"
  # ops tests: promtool checks /metrics and the alert rules; systemd-analyze verify
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

# The power-cut test's guest kernel: Debian's cloud kernel package, downloaded (not
# installed) into a cache, only when no version of it is there yet.
POWERCUT_KERNEL_CACHE=${POWERCUT_KERNEL_CACHE:-/var/cache/ingestd-powercut}
powercut_kernel() {
  if ls "$POWERCUT_KERNEL_CACHE"/linux-image-*-cloud-amd64_*.deb >/dev/null 2>&1; then
    return 0
  fi
  local pkg
  pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  if [ -z "$pkg" ]; then
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update || return 1
    pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  fi
  if [ -z "$pkg" ]; then
    echo "install-deps: ERROR: cannot resolve linux-image-cloud-amd64" >&2
    return 1
  fi
  echo "install-deps: downloading $pkg into $POWERCUT_KERNEL_CACHE (power-cut test guest kernel)"
  "${SUDO[@]}" mkdir -p "$POWERCUT_KERNEL_CACHE" &&
    (cd "$POWERCUT_KERNEL_CACHE" && "${SUDO[@]}" apt-get download "$pkg") &&
    ls "$POWERCUT_KERNEL_CACHE"/linux-image-*-cloud-amd64_*.deb >/dev/null 2>&1
}

if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo -n)
else
  SUDO=(false)
fi

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all test dependencies present"
  if ! powercut_kernel; then
    echo "install-deps: ERROR: could not download the power-cut test's kernel" >&2
    exit 1
  fi
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
if ! powercut_kernel; then
  echo "install-deps: ERROR: could not download the power-cut test's kernel" >&2
  exit 1
fi
echo "install-deps: done"
