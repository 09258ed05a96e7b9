#!/usr/bin/env bash
# Brings a fresh clone on a fresh Debian machine to the point where the tests,
# the demo and the benchmarks can run, and does as little as possible when
# everything is already there:
#   1. Debian packages (clang-16, libbpf headers, iproute2 ...), when missing;
#   2. toolchains present and new enough (cargo, go, node);
#   3. npm dependencies, when node_modules is missing or older than the lockfile;
#   4. the build: eBPF objects + Rust addon, CNI binary, TypeScript (cargo and tsc
#      are incremental; compiled Rust lives in a cache outside the work tree);
#   5. the lab's control-plane binaries, built from source once and cached.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

step() { printf '[prepare] %s\n' "$*" >&2; }
die() { printf '[prepare] error: %s\n' "$*" >&2; exit 1; }
started=$SECONDS

# 1. Debian packages ---------------------------------------------------------
packages=(clang-16 llvm-16 libbpf-dev linux-libc-dev bpftool iproute2 iputils-ping openssl gcc make ca-certificates)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  [ "$(id -u)" = 0 ] || die "missing Debian packages: ${missing[*]}; run as root or install them: apt-get install ${missing[*]}"
  step "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. Toolchains -------------------------------------------------------------
command -v cargo >/dev/null || die "cargo not found: install Rust >= 1.88 with rustup (https://rustup.rs), then re-run"
command -v go >/dev/null || die "go not found: install Go >= 1.24, then re-run"
node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=17)?0:1)' \
  || die "Node.js $(node --version) is too old: Membrane needs Node >= 20.17"

# 3. npm dependencies ---------------------------------------------------------
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  # `npm install --no-save` rather than `npm ci`: with omit-lockfile-registry-resolved
  # (set on some machines) npm writes lockfiles without the other platforms' optional
  # packages, which `npm ci` then rejects. The lockfile still pins every version.
  step "installing npm dependencies"
  npm install --no-save --no-audit --no-fund --loglevel=error
fi

# 4. Build -------------------------------------------------------------------
step "building eBPF objects, the Rust addon, the CNI plugin and the TypeScript (incremental)"
npm run --silent build >&2

# 5. Lab binaries ------------------------------------------------------------
step "checking the lab's control-plane binaries (built once from source, then cached)"
node dist/cli/main.js lab build >&2
bash ts/setup/build-helm.sh >/dev/null  # helm for the deploy/ chart test, built once and cached
bash ts/setup/build-cnitool.sh >/dev/null  # cnitool (the reference CNI client) for the CNI e2e test, built once and cached

step "ready in $((SECONDS - started)) s"
