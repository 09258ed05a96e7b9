#!/usr/bin/env bash
# Runs a build command with Membrane's build caches outside the work tree, so a
# fresh clone on the same machine reuses compiled Rust dependencies.
#   CARGO_TARGET_DIR   default: $MEMBRANE_CACHE_DIR/cargo-target
#   MEMBRANE_CACHE_DIR default: ${XDG_CACHE_HOME:-$HOME/.cache}/membrane
set -euo pipefail
export MEMBRANE_CACHE_DIR="${MEMBRANE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/membrane}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$MEMBRANE_CACHE_DIR/cargo-target}"
mkdir -p "$CARGO_TARGET_DIR"
exec "$@"
