#!/usr/bin/env bash
# Builds the pinned `helm` (v3) from the Go module proxy, once, into
#   ${MEMBRANE_CACHE_DIR:-~/.cache/membrane}/lab-bin/helm-<version>/helm
# and prints that path on stdout. The deploy e2e test renders deploy/helm/membrane
# with it. Later runs find the binary and only print the path.
#   MEMBRANE_HELM_VERSION  another v3 release (default below)
#   MEMBRANE_GO            the go command (default: go on PATH, then /usr/local/go/bin/go)
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/go-tools.sh"

version="${MEMBRANE_HELM_VERSION:-v3.21.4}"
case "$version" in
  v3.*.*) ;;
  *) printf '[build-helm] error: MEMBRANE_HELM_VERSION=%s is not a helm v3 release such as v3.21.4\n' "$version" >&2; exit 2 ;;
esac

dir="$(lab_bin_dir helm "$version")"
bin="$dir/helm"

if [ -x "$bin" ] && "$bin" version --template '{{.Version}}' 2>/dev/null | grep -qx "$version"; then
  printf '%s\n' "$bin"
  exit 0
fi

go="$(find_go build-helm)"

mkdir -p "$dir"
tmp="$(mktemp -d "$dir/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
printf '[build-helm] building helm %s from the Go module proxy (a few minutes, once)\n' "$version" >&2
# `go install pkg@version` builds with the module's own go.mod (no local module needed);
# the version is stamped the way helm's Makefile does it.
GOBIN="$tmp" CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local "$go" install \
  -trimpath \
  -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$version" \
  "helm.sh/helm/v3/cmd/helm@$version" >&2
got="$("$tmp/helm" version --template '{{.Version}}')"
[ "$got" = "$version" ] || { printf '[build-helm] error: built helm reports %s, expected %s\n' "$got" "$version" >&2; exit 1; }
mv -f "$tmp/helm" "$bin"
printf '%s\n' "$bin"
