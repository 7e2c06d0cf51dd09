#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian bookworm machine (run as root):
#   - Debian packages: what the build links, and the peers/servers the tests use;
#   - the BPF toolchain: LLVM 22, rust-src for the nightly toolchain (the BPF crate builds core
#     with -Z build-std) and bpf-linker 0.13.0 linked against Debian's libLLVM-22. The tests
#     always need it (CI rebuilds the BPF objects and compares them with the committed ones);
#     `--run-only` installs it only when the committed objects (ebpf/objects/) are stale.
# Each step is skipped when what it installs is already there.
# Usage: scripts/setup.sh [--run-only]   (--run-only: just what `clockpath run` needs)
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=${1:-full}
BPF_LINKER_VERSION=0.13.0
export PATH="$HOME/.cargo/bin:$PATH"

log() { printf 'setup: %s\n' "$*" >&2; }

# Whether the BPF objects must be built here: the tests rebuild them; a run needs to only when
# the sources no longer hash to what ebpf/objects/SOURCES.sha256 records (as build.rs checks).
NEED_BPF=1
if [ "$MODE" = --run-only ] && scripts/bpf-objects.sh --fresh; then
  NEED_BPF=0
fi

# Packages needed to build and run the exporter, and to build the BPF objects (bpf-linker links
# libLLVM; llvm-objcopy strips the objects).
BUILD_PKGS=(libzstd-dev zlib1g-dev pkg-config fonts-dejavu-core)
BPF_PKGS=(llvm-22-dev libpolly-22-dev)
# Packages the test suite uses: peers (runqlat, bpftrace), load generators (perf, hackbench),
# a real Prometheus, and the guest kernel harness (qemu, busybox, cpio, kernel image tools,
# iasl for the guest's C-state table, make and gcc-12 for test modules), podman and runc for
# the container image (crun, podman's default runtime, refuses this host's hybrid cgroups).
# groff-base renders the generated man pages in their test; jq edits a clock audit in the book.
TEST_PKGS=(libbpf-tools bpftrace linux-perf rt-tests prometheus wrk curl
           qemu-system-x86 busybox-static cpio xz-utils lz4 zstd kmod acpica-tools make gcc-12
           python3-venv python3-yaml pps-tools adjtimex podman runc groff-base jq)
# The Helm chart is linted and rendered with Helm's own Go SDK, through its Python binding
# (a self-contained wheel from PyPI): no helm binary or Go toolchain is packaged for bookworm.
HELM_SDK_VERSION=0.2.2
HELM_VENV=${CLOCKPATH_HELM_VENV:-/opt/clockpath-test/helm-venv}
# DuckDB checks clockpath's Parquet traces (the investigation's SQL over them); pandas is the
# reference implementation the analysis benchmark compares against. Pinned, from PyPI.
ANALYSIS_PY=(duckdb==2.0.1 pandas==3.1.1 numpy==2.4.6)
ANALYSIS_VENV=${CLOCKPATH_ANALYSIS_VENV:-/opt/clockpath-test/analysis-venv}
# The dashboards are generated and schema-checked with Grafana's Foundation SDK (its models are
# generated from Grafana's own dashboard schema). PyPI versions carry an epoch; this one is the
# Grafana 11.6 schema.
GRAFANA_SDK_VERSION='1769699379!11.6.0'
GRAFANA_VENV=${CLOCKPATH_GRAFANA_VENV:-/opt/clockpath-test/grafana-venv}

pkgs=("${BUILD_PKGS[@]}")
[ "$NEED_BPF" = 0 ] || pkgs+=("${BPF_PKGS[@]}")
[ "$MODE" = --run-only ] || pkgs+=("${TEST_PKGS[@]}")

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    log "missing Debian packages (${missing[*]}); run this script as root"; exit 1
  fi
  log "installing Debian packages: ${missing[*]}"
  # The apt lock may be held by an unattended job right after boot.
  for _ in $(seq 1 30); do apt-get update -qq && break; sleep 5; done
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    -o DPkg::Lock::Timeout=600 "${missing[@]}" >/dev/null
  # Debian's prometheus package starts a service; the tests start their own instance.
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
    systemctl stop prometheus prometheus-node-exporter 2>/dev/null || true
  fi
fi

if [ "$NEED_BPF" = 0 ]; then
  log "the committed BPF objects match their sources: no BPF toolchain needed"
elif ! rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^rust-src'; then
  log "adding rust-src to the nightly toolchain"
  rustup component add rust-src --toolchain nightly
fi

if [ "$NEED_BPF" = 1 ] && ! bpf-linker --version 2>/dev/null | grep -q "^bpf-linker $BPF_LINKER_VERSION\$"; then
  log "building bpf-linker $BPF_LINKER_VERSION against Debian's LLVM 22 (about 1-2 minutes)"
  # bpf-linker's build script takes the first llvm-config on PATH; /usr/bin/llvm-config may be
  # an older LLVM, so LLVM 22's bin directory goes first.
  PATH="/usr/lib/llvm-22/bin:$PATH" cargo +stable install --locked "bpf-linker@$BPF_LINKER_VERSION" \
    --no-default-features --features llvm-22
fi
if [ "$MODE" != --run-only ] && ! "$HELM_VENV/bin/python" -c 'import helm_python, yaml' 2>/dev/null; then
  log "installing helm-python-sdk $HELM_SDK_VERSION (Helm's Go SDK) into $HELM_VENV"
  python3 -m venv --system-site-packages "$HELM_VENV"
  "$HELM_VENV/bin/pip" install --quiet --disable-pip-version-check "helm-python-sdk==$HELM_SDK_VERSION"
fi
if [ "$MODE" != --run-only ] && ! "$ANALYSIS_VENV/bin/python" -c '
import duckdb, pandas, numpy, sys
want = dict(a.split("==") for a in sys.argv[1:])
have = {"duckdb": duckdb.__version__, "pandas": pandas.__version__, "numpy": numpy.__version__}
sys.exit(any(have[k] != v for k, v in want.items()))' "${ANALYSIS_PY[@]}" 2>/dev/null; then
  log "installing ${ANALYSIS_PY[*]} into $ANALYSIS_VENV"
  python3 -m venv "$ANALYSIS_VENV"
  "$ANALYSIS_VENV/bin/pip" install --quiet --disable-pip-version-check "${ANALYSIS_PY[@]}"
fi

if [ "$MODE" != --run-only ] && ! "$GRAFANA_VENV/bin/python" -c '
import sys
from importlib.metadata import version
sys.exit(version("grafana-foundation-sdk") != sys.argv[1])' "$GRAFANA_SDK_VERSION" 2>/dev/null; then
  log "installing grafana-foundation-sdk $GRAFANA_SDK_VERSION into $GRAFANA_VENV"
  python3 -m venv "$GRAFANA_VENV"
  "$GRAFANA_VENV/bin/pip" install --quiet --disable-pip-version-check "grafana-foundation-sdk==$GRAFANA_SDK_VERSION"
fi

# The docs book is built by the docs test with mdBook (not packaged for bookworm): from
# crates.io, pinned, without its live-reload server (about a minute on two cores).
MDBOOK_VERSION=0.5.4
if [ "$MODE" != --run-only ] && ! mdbook --version 2>/dev/null | grep -q "^mdbook v$MDBOOK_VERSION\$"; then
  log "building mdBook $MDBOOK_VERSION (the docs test builds the book with it)"
  cargo +stable install --locked "mdbook@$MDBOOK_VERSION" --no-default-features --features search
fi

if [ "$NEED_BPF" = 1 ]; then
  log "ready: $(bpf-linker --version), nightly $(rustup run nightly rustc --version | cut -d' ' -f2-)"
else
  log "ready: stable Rust and the committed BPF objects"
fi
