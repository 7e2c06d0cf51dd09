#!/usr/bin/env bash
# Build clockpath's container image (localhost/clockpath:<version>) with podman, from the
# release binary and its shared libraries (FROM scratch, COPY only: see ../Containerfile).
# When podman cannot be installed, cannot build, or cannot run a container here, write a rootfs
# tarball instead (target/image/clockpath-rootfs.tar) and say why. Idempotent.
#
# Usage: scripts/image.sh [--binary PATH] [--skip-build] [--rootfs] [--save] [--no-smoke]
#   --binary PATH  use this clockpath binary; implies --skip-build   (env CLOCKPATH_BIN)
#   --skip-build   do not run cargo; use target/release/clockpath    (env SKIP_BUILD=1)
#   --rootfs       also write the rootfs tarball when podman works    (env IMAGE_ROOTFS=1)
#   --save         also `podman save` an OCI archive, for `ctr -n k8s.io images import` on nodes
#                  without a registry (target/image/clockpath-<version>.oci.tar)
#   --no-smoke     skip the `podman run ... --version` check
# Env: IMAGE_NAME (localhost/clockpath), IMAGE_TAG (the binary's version), STRIP=0 to keep debug
# info (about 190 MB instead of 38 MB), SOURCE_DATE_EPOCH (last commit's time).
#
# Running the image on a host like the Helm DaemonSet does (this machine: podman 4.3, nested in a
# container without CAP_SYS_RESOURCE, cgroup v1 hybrid, no systemd):
# (the --ulimit values are this host's hard limits: podman's defaults exceed them)
#   podman --runtime runc run --rm --network host \
#     --ulimit nofile=20000:20000 --ulimit nproc=32768:32768 \
#     --privileged --read-only \
#     -v /sys/kernel/tracing:/sys/kernel/tracing:ro -v /sys/kernel/btf:/sys/kernel/btf:ro \
#     -v "$PWD/conf":/etc/clockpath:ro -e CLOCKPATH_HTTP__LISTEN=0.0.0.0:39111 localhost/clockpath:0.1.0
# Without --privileged: --cap-drop=all --cap-add=bpf,perfmon,syslog plus either
# --security-opt seccomp=unconfined or --cap-add=sys_admin (podman's default seccomp profile allows
# bpf(2) and perf_event_open(2) only with CAP_SYS_ADMIN).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/target/image
CTX=$OUT/context
TARBALL=$OUT/clockpath-rootfs.tar
IMAGE_NAME=${IMAGE_NAME:-localhost/clockpath}
BIN=${CLOCKPATH_BIN:-}
SKIP_BUILD=${SKIP_BUILD:-0}
WANT_ROOTFS=${IMAGE_ROOTFS:-0}
SAVE=0
SMOKE=1
STRIP=${STRIP:-1}

while [ $# -gt 0 ]; do
  case $1 in
    --binary) BIN=$2; shift 2 ;;
    --binary=*) BIN=${1#*=}; shift ;;
    --skip-build) SKIP_BUILD=1; shift ;;
    --rootfs) WANT_ROOTFS=1; shift ;;
    --save) SAVE=1; shift ;;
    --no-smoke) SMOKE=0; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "image.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

log() { echo "image.sh: $*" >&2; }

# 1. The binary. Copied first: target/release may be rebuilt while we work.
if [ -z "$BIN" ]; then
  if [ "$SKIP_BUILD" != 1 ]; then
    log "cargo build --release --locked -p clockpath"
    cargo build --release --locked -p clockpath
  fi
  BIN=$ROOT/target/release/clockpath
fi
[ -x "$BIN" ] || { log "no executable clockpath binary at $BIN"; exit 1; }

rm -rf "$CTX"
R=$CTX/rootfs
mkdir -p "$R/usr/local/bin"
cp "$BIN" "$CTX/clockpath.orig"
VERSION=$("$CTX/clockpath.orig" --version | awk '{print $2}')
IMAGE_TAG=${IMAGE_TAG:-$VERSION}
IMAGE=$IMAGE_NAME:$IMAGE_TAG

# Debug info is ~150 MB of the ~190 MB binary; the symbol table (panic backtraces) stays.
if [ "$STRIP" = 1 ] && command -v objcopy >/dev/null; then
  objcopy --strip-debug "$CTX/clockpath.orig" "$R/usr/local/bin/clockpath"
else
  [ "$STRIP" = 1 ] && log "objcopy (binutils) missing: keeping debug info"
  cp "$CTX/clockpath.orig" "$R/usr/local/bin/clockpath"
fi
chmod 755 "$R/usr/local/bin/clockpath"
rm -f "$CTX/clockpath.orig"

# 2. Its shared libraries, at the paths ldd resolves (the loader's own path included); cp -L
# follows Debian's symlinks (/lib -> usr/lib, libc.so.6 -> ...).
ldd "$R/usr/local/bin/clockpath" | grep -o '/[^ ]*' | sort -u | while read -r lib; do
  mkdir -p "$R$(dirname "$lib")"
  cp -L "$lib" "$R$lib"
done
if ldd "$R/usr/local/bin/clockpath" | grep -q 'not found'; then
  log "missing shared libraries:"; ldd "$R/usr/local/bin/clockpath" | grep 'not found' >&2; exit 1
fi

# 3. The rest of the root filesystem.
mkdir -p "$R/etc/ssl/certs" "$R/etc/clockpath" "$R/tmp" "$R/proc" "$R/sys" "$R/dev"
chmod 1777 "$R/tmp"
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  cp -L /etc/ssl/certs/ca-certificates.crt "$R/etc/ssl/certs/ca-certificates.crt"
else
  log "no /etc/ssl/certs/ca-certificates.crt (apt-get install ca-certificates): OTLP over TLS will need otlp.certificate"
fi
printf 'root:x:0:0:root:/:/sbin/nologin\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n' >"$R/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$R/etc/group"
printf '# Empty: clockpath'"'"'s built-in defaults. The Helm chart mounts its ConfigMap over /etc/clockpath.\n' \
  >"$R/etc/clockpath/clockpath.toml"

# Reproducible: fixed mtimes and owners, fixed image timestamp.
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || echo 0)}
find "$R" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
chown -R 0:0 "$R" 2>/dev/null || true

write_rootfs() {
  tar --sort=name --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner \
    -C "$R" -cf "$TARBALL" .
  log "rootfs tarball: $TARBALL ($(du -h "$TARBALL" | cut -f1)). Run it with:"
  cat >&2 <<EOF
  R=\$(mktemp -d) && tar -C "\$R" -xf $TARBALL && \\
  unshare --mount --pid --fork --kill-child --propagation private sh -c "
    mount -t proc proc \$R/proc && mount -t sysfs sysfs \$R/sys &&
    mount -t tracefs tracefs \$R/sys/kernel/tracing && mount --rbind /dev \$R/dev &&
    exec chroot \$R /usr/local/bin/clockpath run --config /etc/clockpath/clockpath.toml"
EOF
}

fallback() {
  log "podman unusable here: $*"
  log "falling back to the rootfs tarball"
  write_rootfs
  exit 0
}

# 4. podman (installed from Debian if missing; runc too: crun 1.8 refuses cgroup v1 hybrid hosts
# whose cgroup2 mount still has controllers).
if ! command -v podman >/dev/null || ! command -v runc >/dev/null; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    log "apt-get install podman runc"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q podman runc >"$OUT/apt.log" 2>&1 ||
      { apt-get update -q >>"$OUT/apt.log" 2>&1 &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q podman runc >>"$OUT/apt.log" 2>&1; } ||
      log "apt-get install failed (see $OUT/apt.log)"
  fi
fi
command -v podman >/dev/null || fallback "podman is not installed and could not be installed"

OLD_ID=$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
if ! podman build --no-cache --timestamp "$SOURCE_DATE_EPOCH" --network none \
    -t "$IMAGE" -f "$ROOT/Containerfile" "$CTX" >"$OUT/build.log" 2>&1; then
  fallback "podman build failed: $(grep -m1 -i 'error' "$OUT/build.log" || tail -1 "$OUT/build.log")"
fi
NEW_ID=$(podman image inspect --format '{{.Id}}' "$IMAGE")
# Drop the image this tag pointed to before, unless something else still uses it.
if [ -n "$OLD_ID" ] && [ "$OLD_ID" != "$NEW_ID" ]; then podman rmi "$OLD_ID" >/dev/null 2>&1 || true; fi
SIZE=$(podman image inspect --format '{{.Size}}' "$IMAGE")
log "image $IMAGE (id ${NEW_ID:0:12}, $((SIZE / 1000 / 1000)) MB)"

# 5. Can this host run it? Podman asks for RLIMIT_NOFILE/NPROC above the hard limits when the
# caller lacks CAP_SYS_RESOURCE ("setrlimit ... Operation not permitted"); ask for what we have.
# `--ulimit host` does not help in podman 4.3 (it still passes 1048576).
if [ "$SMOKE" = 1 ]; then
  NOFILE=$(ulimit -Hn); [ "$NOFILE" = unlimited ] && NOFILE=1048576
  NPROC=$(ulimit -Hu); { [ "$NPROC" = unlimited ] || [ "$NPROC" -gt 32768 ]; } && NPROC=32768
  RUN_FLAGS="--network host --ulimit nofile=$NOFILE:$NOFILE --ulimit nproc=$NPROC:$NPROC"
  WORKS=
  ERRS=
  for rt in crun runc; do
    command -v "$rt" >/dev/null || continue
    # shellcheck disable=SC2086
    if out=$(podman --runtime "$rt" run --rm $RUN_FLAGS "$IMAGE" --version 2>&1); then
      WORKS=$rt; break
    fi
    ERRS="$ERRS [$rt] $(echo "$out" | tail -1)"
  done
  if [ -z "$WORKS" ]; then
    WANT_ROOTFS=1
    log "podman cannot run containers here:$ERRS"
    log "the image is built, but writing the rootfs tarball too"
  else
    log "runs here with: podman --runtime $WORKS run $RUN_FLAGS $IMAGE ..."
    [ -n "$ERRS" ] && log "(failed:$ERRS)"
  fi
fi

if [ "$SAVE" = 1 ]; then
  rm -f "$OUT/clockpath-$IMAGE_TAG.oci.tar"
  podman save -q --format oci-archive -o "$OUT/clockpath-$IMAGE_TAG.oci.tar" "$IMAGE"
  log "OCI archive: $OUT/clockpath-$IMAGE_TAG.oci.tar"
fi
[ "$WANT_ROOTFS" = 1 ] && write_rootfs
exit 0
