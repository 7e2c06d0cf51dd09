#!/usr/bin/env bash
# Build clockpath and run its whole test suite: formatting, lints, unit tests, and the
# integration tests that load BPF programs, start servers and boot a guest kernel.
# Run as root on a Debian bookworm machine; installs what is missing first (idempotent).
#   scripts/test.sh            everything
#   scripts/test.sh -- FILTER  only integration tests matching FILTER
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
FILTER=()
if [ "${1:-}" = "--" ]; then shift; FILTER=("$@"); fi

step() { printf '\n==> %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/test.sh: the integration tests load BPF programs; run as root" >&2
  exit 1
fi

step "set-up (packages, rust-src, bpf-linker)"
scripts/setup.sh

step "cargo fmt --check"
cargo fmt --all -- --check

# The BPF objects are built from source here (not taken from ebpf/objects/), once, by the first
# cargo command; the step after it checks they are byte for byte the committed ones (and that
# what it compares was built from these sources).
export CLOCKPATH_BPF_BUILD=1

# Every userspace crate, named alike in every command: cargo unifies the dependencies' features
# over the packages an invocation selects, so a different set would rebuild much of the graph
# (it cost six minutes of the suite). The BPF object is compiled once, by the first command,
# into target/bpf (exporter/probe/build.rs), and found fresh by the others.
CRATES=(-p clockpath-common -p clockpath-offline -p clockpath-probe -p clockpath -p clockpath-tests)
# The test targets that need no root; `suite` is the integration tests.
UNIT=(--lib --bins --test fuzz_corpus --test stats_reference --test calibration --test analyze --test architecture --test plan_fixtures --test manual)

step "cargo clippy -D warnings"
cargo clippy --release --locked "${CRATES[@]}" --all-targets -- -D warnings

step "BPF objects: ebpf/objects/ is byte for byte what its sources build"
scripts/bpf-objects.sh --compare

step "cargo clippy -D warnings (the BPF crate, for its target)"
# Its own target directory: the lint build's flags differ from the object's (build.rs).
(cd ebpf && rustup run nightly cargo clippy --locked --release --target bpfel-unknown-none -Z build-std=core \
  --target-dir ../target/bpf-clippy --bins -- -D warnings)

step "build (the exporter and every test target, once)"
cargo test --release --locked "${CRATES[@]}" --no-run

step "unit tests (no root needed: statistics, traces, config, plan resolution on kernel fixtures)"
cargo test --release --locked "${CRATES[@]}" "${UNIT[@]}"

step "integration tests (root, BPF, real servers, guest kernel)"
# One at a time: they share the kernel's tracing state and the machine's two cores.
cargo test --release --locked "${CRATES[@]}" --test suite -- --test-threads=1 "${FILTER[@]}"

step "all tests passed"
