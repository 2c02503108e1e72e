#!/usr/bin/env bash
# The whole test suite, as CI runs it (`.ci/run` execs this):
#   1. install the system packages the tests drive (scripts/install-deps.sh)
#   2. cargo test --release   (unit + integration tests against the real binary
#                              and real OpenSSH/paramiko/curl/JSch clients)
#   3. the power-cut test (tests/powercut/run.sh: qemu guest, power cuts during
#      uploads and the pipeline, recovery boots, controls that must lose files)
#   4. the director configs (keepalived -t, haproxy -c), the namespace pool lab
#      (tests/lab/) and the director files on real IPVS (tests/ipvs-vm/)
#   5. the layering check (scripts/check-layers.sh)
#   6. fuzzing: every cargo-fuzz target for 30 s (scripts/fuzz.sh, docs/fuzzing.md)
#   7. cargo clippy --all-targets -- -D warnings
#   8. cargo fmt --check
# Exits non-zero if any step fails. Every step runs even after an earlier failure
# (except that nothing runs when the dependencies cannot be installed), so one run
# reports everything. Tests never skip for a missing tool: they fail.
set -uo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"
# Integration tests read this to refuse any "skip when missing" behaviour.
export INGESTD_TESTS_REQUIRE_TOOLS=1

step() { echo; echo "==> $*"; }

step "install test dependencies"
if ! bash scripts/install-deps.sh; then
  echo "test.sh: FAILED: dependencies could not be installed" >&2
  exit 1
fi
for tool in ssh scp sftp ssh-keygen timeout curl; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "test.sh: FAILED: required tool '$tool' is missing after install-deps" >&2
    exit 1
  fi
done

failed=()
start=$(date +%s)

step "cargo test --release"
# Bounded so a hung test cannot eat the CI budget.
if ! timeout --kill-after=30s 40m cargo test --release; then
  failed+=("cargo test")
fi

step "power-cut test (tests/powercut/run.sh)"
# Uses target/release/ingestd (built by the step above; the build is a no-op then).
# Bounded: the CI set takes about 3-6 minutes on a 2-core machine.
if ! cargo build --release --quiet ||
   ! timeout --kill-after=30s 15m bash tests/powercut/run.sh; then
  failed+=("power-cut test")
fi

# --- the director pair and the pool lab (keepalived/, tests/lab/) ----------------
step "director configs: keepalived -t for lvs1 and lvs2, haproxy -c"
if ! bash keepalived/check-config.sh --scratch-netns keepalived/keepalived.conf; then
  failed+=("keepalived config")
fi
if ! haproxy -c -q -f keepalived/haproxy.cfg; then
  failed+=("haproxy config")
fi

step "pool lab (tests/lab/lab.sh: directors, 3 nodes, GlusterFS, in network namespaces)"
# Uses target/release/ingestd from the step above. Bounded; tears itself down.
if ! timeout --kill-after=60s 10m bash tests/lab/lab.sh; then
  failed+=("pool lab")
fi
# --- end of the pool lab block ----------------------------------------------------

# --- the director files on real IPVS (tests/ipvs-vm/) ----------------------------------
step "director files on real IPVS (tests/ipvs-vm/run.sh: keepalived + ipvsadm in a qemu TCG guest)"
# Boots Debian's cloud kernel (apt-get download, cached in /var/cache/ingestd-ipvs-vm)
# with target/release/ingestd from the cargo test step. Bounded; cleans up after itself.
if ! timeout --kill-after=30s 20m bash tests/ipvs-vm/run.sh; then
  failed+=("ipvs-vm")
fi
# --- end of the ipvs-vm block -----------------------------------------------------------

step "layering (core is pure; see ARCHITECTURE.md)"
if ! bash scripts/check-layers.sh; then
  failed+=("check-layers")
fi

# --- fuzzing (fuzz/, scripts/fuzz.sh; docs/fuzzing.md) -----------------------------
step "fuzz (every cargo-fuzz target in fuzz/ for 30 s; nightly, or stable with RUSTC_BOOTSTRAP=1)"
# The first build of the instrumented crate takes several minutes on 2 cores.
# A crash fails the step; its input is kept under fuzz/artifacts/<target>/.
if ! FUZZ_SECS=30 timeout --kill-after=30s 25m bash scripts/fuzz.sh; then
  failed+=("fuzz")
fi
# --- end of the fuzz block ---------------------------------------------------------

step "cargo clippy --all-targets -- -D warnings"
if ! cargo clippy --all-targets -- -D warnings; then
  failed+=("cargo clippy")
fi

step "cargo fmt --check"
if ! cargo fmt --check; then
  failed+=("cargo fmt")
fi

echo
echo "test.sh: finished in $(( $(date +%s) - start ))s"
if [ ${#failed[@]} -ne 0 ]; then
  echo "test.sh: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "test.sh: all steps passed"
