#!/usr/bin/env bash
# Builds the pinned `cnitool` (the reference CNI client of containernetworking/cni)
# from the Go module proxy, once, into
#   ${MEMBRANE_CACHE_DIR:-~/.cache/membrane}/lab-bin/cnitool-<version>/cnitool
# and prints that path on stdout. The CNI e2e test drives membrane-cni with it
# exactly as a container runtime's libcni would. Later runs only print the path.
#   MEMBRANE_CNITOOL_VERSION  another containernetworking/cni release (default below; >= v1.2.0 for STATUS and GC)
#   MEMBRANE_GO               the go command (default: go on PATH, then /usr/local/go/bin/go)
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/go-tools.sh"

version="${MEMBRANE_CNITOOL_VERSION:-v1.3.0}"
case "$version" in
  v1.*.*) ;;
  *) printf '[build-cnitool] error: MEMBRANE_CNITOOL_VERSION=%s is not a containernetworking/cni v1 release such as v1.3.0\n' "$version" >&2; exit 2 ;;
esac

dir="$(lab_bin_dir cnitool "$version")"
bin="$dir/cnitool"
stamp="$dir/version"

if [ -x "$bin" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$version" ]; then
  printf '%s\n' "$bin"
  exit 0
fi

go="$(find_go build-cnitool)"

mkdir -p "$dir"
tmp="$(mktemp -d "$dir/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
printf '[build-cnitool] building cnitool %s from the Go module proxy (once)\n' "$version" >&2
# `go install pkg@version` builds with the module's own go.mod; cnitool has no
# --version, so the version is recorded beside the binary, written last.
GOBIN="$tmp" CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local "$go" install -trimpath -ldflags "-s -w" \
  "github.com/containernetworking/cni/cnitool@$version" >&2
# Without arguments cnitool prints its usage (add/check/del/gc/status) and exits 1.
usage="$("$tmp/cnitool" 2>&1 || true)"
case "$usage" in
  *"status <net> <netns>"*) ;;
  *) printf '[build-cnitool] error: the built cnitool does not offer STATUS/GC (usage: %s); use v1.2.0 or newer\n' "$usage" >&2; exit 1 ;;
esac
mv -f "$tmp/cnitool" "$bin"
printf '%s\n' "$version" > "$stamp"
printf '%s\n' "$bin"
