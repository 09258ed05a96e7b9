# Shared by the scripts that build pinned Go tools (cnitool, helm) from the Go
# module proxy into the lab binary cache. Source it; it defines:
#   lab_bin_dir NAME VERSION   prints <cache>/lab-bin/NAME-VERSION
#   find_go TAG                prints the go command (MEMBRANE_GO, PATH, /usr/local/go/bin/go)
#                              or exits 1 with an error prefixed [TAG]

lab_bin_dir() {
  local cache="${MEMBRANE_LAB_CACHE_DIR:-${MEMBRANE_CACHE_DIR:-$HOME/.cache/membrane}}"
  printf '%s\n' "$cache/lab-bin/$1-$2"
}

find_go() {
  local go="${MEMBRANE_GO:-}"
  if [ -z "$go" ]; then
    go="$(command -v go || true)"
    [ -n "$go" ] || { [ -x /usr/local/go/bin/go ] && go=/usr/local/go/bin/go; }
  fi
  [ -n "$go" ] || { printf '[%s] error: no go command (looked at MEMBRANE_GO, PATH, /usr/local/go/bin/go); install Go >= 1.24\n' "$1" >&2; exit 1; }
  printf '%s\n' "$go"
}
