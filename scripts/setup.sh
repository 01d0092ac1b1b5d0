#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian machine: system packages, a venv, lamina in it.
# Called by `make setup` (and so by `make test` and `make bench`). Safe to run again: it only
# installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  python3-venv python3-dev gcc libc6-dev # the venv (ensurepip) and pyfuse3's C build (no wheel on PyPI)
  e2fsprogs util-linux libarchive13     # loop filesystems for tests and bench; tar parsing (libarchive-c)
  btrfs-progs                           # btrfs driver
  fuse3 libfuse3-dev pkg-config         # fuse driver (pyfuse3 builds against libfuse3)
  crun runc                             # OCI runtimes
  busybox-static                        # a static busybox for the runtime tests' images
  iproute2 iptables                     # bridge networks: ip (links, addresses), isolation/NAT rules
  docker-registry                       # local registry for distribution tests and the bench
  docker.io                             # the docker CLI (20.10, API 1.41) the daemon tests drive; its
                                        # dockerd/containerd never start (policy-rc.d below)
  skopeo umoci                          # peers: images made by other tools; bench comparisons
  zstd pigz tar                         # roofline and peers
)
# `setup.sh --bench` (make bench, make bench-quick): what only the benchmark suite needs.
BENCH_APT_PACKAGES=(
  debootstrap                           # the bench's realistic image: a Debian minbase rootfs
  podman fuse-overlayfs                 # peers: podman pull / run, fuse-overlayfs beside the fuse driver
)
for arg in "$@"; do
  case "$arg" in
    --bench) APT_PACKAGES+=("${BENCH_APT_PACKAGES[@]}") ;;
    *) echo "setup: unknown option $arg (known: --bench)" >&2; exit 2 ;;
  esac
done
if [ "${LAMINA_SKIP_APT:-}" != 1 ]; then
  missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
      echo "setup: need root to install: ${missing[*]}" >&2; exit 1
    fi
    # docker-registry's package starts a service on *:5000 at install, docker.io dockerd and
    # containerd; none may start: we run our own registry on 127.0.0.1, and no Docker engine.
    created_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; created_policy=1
    fi
    echo "setup: apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    [ $created_policy = 1 ] && rm -f /usr/sbin/policy-rc.d
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.lamina-installed-compat
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip >/dev/null 2>&1 || true
  # The checkout itself goes on sys.path through a plain .pth entry ("compat" editable mode), not
  # setuptools' import-hook finder: the installed `lamina` imports the code in place (developers
  # edit and run, no reinstall), and start-up pays no finder on every import.
  .venv/bin/pip install -q --config-settings editable_mode=compat -e ".[test,bench]"
  touch "$stamp"
fi
# Bytecode, compiled here once: these machines set PYTHONDONTWRITEBYTECODE=1, so Python would
# otherwise compile every imported module from source on every start. Only changed files are
# recompiled; it takes a fraction of a second when nothing changed.
.venv/bin/python -m compileall -q -j 0 graph drivers runtime lamina bench >/dev/null
