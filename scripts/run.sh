#!/usr/bin/env bash
# Build clockpath and run the exporter on its built-in default configuration (as root).
# Installs what the build needs first (idempotent). Extra arguments go to `clockpath run`,
# e.g. scripts/run.sh --duration 30; set CLOCKPATH_CONFIG=FILE to use a config file.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/run.sh: loading BPF programs needs root" >&2
  exit 1
fi
scripts/setup.sh --run-only
cargo build --release --locked -p clockpath
exec target/release/clockpath run "$@"
