#!/usr/bin/env bash
# Regenerate the committed BPF objects (ebpf/objects/) from their sources, or check that the
# committed ones are exactly what the sources give.
#   scripts/bpf-objects.sh          rebuild and update ebpf/objects/ (commit the result)
#   scripts/bpf-objects.sh --check  rebuild and fail unless ebpf/objects/ is byte-identical
#                                   and records these sources (what CI runs)
#   scripts/bpf-objects.sh --compare  the same check on what the last build from source left
#   scripts/bpf-objects.sh --fresh  exit 0 when ebpf/objects/ records these sources (no build)
# Needs the BPF toolchain (nightly with rust-src, bpf-linker): scripts/setup.sh installs it.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
# The hash of the BPF sources, as exporter/probe/build.rs computes it (SOURCES.sha256 says how).
sources_hash() {
  (find ebpf common -type f -not -path 'ebpf/objects/*'; echo exporter/probe/build.rs) \
    | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -d' ' -f1
}
sources() { grep -v '^#' "$1" 2>/dev/null; }

CHECK=0
BUILD=1
case "${1:-}" in
  --check) CHECK=1 ;;
  # --check without building: compare what the last build from source left in target/bpf
  # (scripts/test.sh builds with CLOCKPATH_BPF_BUILD=1 set, so its own build serves).
  --compare) CHECK=1; BUILD=0 ;;
  # Exit 0 when the committed objects record these sources (no rebuild needed), 1 otherwise.
  --fresh) [ "$(sources ebpf/objects/SOURCES.sha256)" = "$(sources_hash)" ]; exit ;;
  "") ;;
  *) echo "usage: scripts/bpf-objects.sh [--check | --compare | --fresh]" >&2; exit 2 ;;
esac

# exporter/probe/build.rs builds from source when CLOCKPATH_BPF_BUILD=1 and leaves the
# stripped objects, with the hash of their sources, in target/bpf/objects.
[ "$BUILD" = 0 ] || CLOCKPATH_BPF_BUILD=1 cargo build --release --locked -p clockpath-probe
built=target/bpf/objects
if [ ! -f "$built/SOURCES.sha256" ]; then
  echo "bpf-objects: nothing built from source in $built (build with CLOCKPATH_BPF_BUILD=1 first)" >&2
  exit 1
fi
now=$(sources_hash)
if [ "$(sources "$built/SOURCES.sha256")" != "$now" ]; then
  echo "bpf-objects: the build script's source hash differs from sha256sum's ($now)" >&2
  exit 1
fi

if [ "$CHECK" = 1 ]; then
  status=0
  for f in clockpath.o clocks.o; do
    if ! cmp -s "$built/$f" "ebpf/objects/$f"; then
      echo "bpf-objects: ebpf/objects/$f differs from the object its sources build ($built/$f):" \
        "run scripts/bpf-objects.sh and commit ebpf/objects/" >&2
      status=1
    fi
  done
  if [ "$(sources ebpf/objects/SOURCES.sha256)" != "$now" ]; then
    echo "bpf-objects: ebpf/objects/SOURCES.sha256 does not record these sources ($now):" \
      "run scripts/bpf-objects.sh and commit ebpf/objects/" >&2
    status=1
  fi
  [ "$status" = 0 ] && echo "bpf-objects: ebpf/objects/ is what its sources build ($now)"
  exit "$status"
fi
mkdir -p ebpf/objects
cp "$built/clockpath.o" "$built/clocks.o" "$built/SOURCES.sha256" ebpf/objects/
echo "bpf-objects: ebpf/objects/ updated ($now); commit it"
