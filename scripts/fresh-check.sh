#!/bin/bash
# fresh-check.sh [TARGET...]: the newcomer test, owned by the project (CI runs it: .ci/run).
# A clean Debian 12 chroot (debootstrap minbase from the machine's own apt mirror) gets only git,
# make and python3, a fresh clone of this checkout, and then `make TARGET` runs for each TARGET
# (default: test), as a new user on a new machine would. Output streams to stdout and to
# $FRESH_DIR/log-<target>.txt.
#   SRC=DIR          the checkout to clone (default: this script's repository)
#   FRESH_DIR=DIR    where the cached base and the chroot live (default: /var/tmp/lamina-fresh)
#   FRESH_EXTRA=...  more Debian packages to install first (only to see what breaks past a gap)
#   FRESH_KEEP=1     leave the chroot's tree in place afterwards (mounts are always removed)
# Needs root. Exit 0 only when every target passed. Derived from ../shared/tools/fresh-check.sh;
# differences: output is streamed (CI reads pytest's closing line), the chroot's root is a mount
# point of its own on a tmpfs-free path, and every mount under it is removed on any exit.
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
SRC=${SRC:-$(git -C "$here" rev-parse --show-toplevel 2>/dev/null)}; [ -n "$SRC" ] || { echo "fresh-check: set SRC"; exit 2; }
FRESH_DIR=${FRESH_DIR:-/var/tmp/lamina-fresh}; BASE=$FRESH_DIR/base; ROOT=$FRESH_DIR/root
[ "$(id -u)" = 0 ] || { echo "fresh-check: needs root"; exit 2; }
if ! command -v debootstrap >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null \
    || { echo "fresh-check: cannot install debootstrap"; exit 2; }
fi
mkdir -p "$FRESH_DIR"
if [ ! -f "$BASE/.done" ]; then
  MIRROR=$(grep -hE '^\s*URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -1)
  [ -n "$MIRROR" ] || MIRROR=$(grep -hE '^\s*deb\s' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk '{print $2}' | grep -v security | head -1)
  rm -rf "$BASE"
  echo "fresh-check: debootstrap --variant=minbase bookworm from $MIRROR"
  debootstrap --variant=minbase bookworm "$BASE" "$MIRROR" >"$FRESH_DIR/debootstrap.log" 2>&1 \
    || { echo "fresh-check: debootstrap failed (see $FRESH_DIR/debootstrap.log)"; tail -5 "$FRESH_DIR/debootstrap.log"; exit 1; }
  touch "$BASE/.done"
fi
unmount_all() {
  # deepest first; lazily, so a busy mount left by a failed test cannot keep the chroot alive
  awk -v p="$ROOT" 'index($2,p)==1 {print $2}' /proc/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
}
cleanup() {
  unmount_all
  # loop devices whose backing files live in the chroot (a test that died before detaching)
  losetup -ln -O NAME,BACK-FILE 2>/dev/null | awk -v p="$ROOT" 'index($2,p)==1 {print $1}' | xargs -r -n1 losetup -d 2>/dev/null
  [ "${FRESH_KEEP:-}" = 1 ] || rm -rf "$ROOT"
}
unmount_all; rm -rf "$ROOT"; cp -a "$BASE" "$ROOT"; trap cleanup EXIT
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
# The machine's network settings, not its installs: its CA bundle (HTTPS to the package registries
# may go through a proxy with its own CA) and pip's certificate setting.
mkdir -p "$ROOT/etc/ssl/certs" "$ROOT/usr/local/share/ca-certificates"
cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"
cp /usr/local/share/ca-certificates/* "$ROOT/usr/local/share/ca-certificates/" 2>/dev/null
printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' > "$ROOT/etc/pip.conf"
ENVS="SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt PIP_CERT=/etc/ssl/certs/ca-certificates.crt"
for v in PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_DEFAULT_TIMEOUT PYTHONDONTWRITEBYTECODE CI; do [ -n "${!v:-}" ] && ENVS="$ENVS $v=${!v}"; done
# The tree must be the ROOT OF ITS OWN MOUNT NAMESPACE, as / is on a real machine, not merely a
# chroot: `runc exec` / `crun exec` join a container's mount namespace with setns(2), which puts
# the caller at that namespace's root. Under a plain chroot that root is the host's /, so an exec'd
# process sees the host's /proc (seen: `exec ... cat /proc/1/cmdline` printed the host's init).
# So each step runs in a private mount namespace that pivot_roots into the tree; every mount made
# there (proc, sys, dev, and whatever the tests mount) dies with the namespace.
in_root() {
  unshare --mount --propagation private -- /bin/bash -c '
    set -e
    R=$1; shift
    mount --bind "$R" "$R"
    for m in proc sys dev; do mkdir -p "$R/$m"; mount --rbind "/$m" "$R/$m"; done
    cd "$R"; mkdir -p .host-root; pivot_root . .host-root
    umount -l /.host-root; rmdir /.host-root
    exec /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
      PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"' _ "$ROOT" "$@"
}
git clone -q "$SRC" "$ROOT/src" || exit 1
git -C "$SRC" rev-parse HEAD >/dev/null 2>&1 && git -C "$ROOT/src" checkout -q "$(git -C "$SRC" rev-parse HEAD)"
in_root /bin/bash -c "export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq git make python3 ${FRESH_EXTRA:-} >/dev/null" \
  || { echo "fresh-check: installing git make python3 failed"; exit 1; }
rc=0
for t in "${@:-test}"; do
  SECONDS=0
  echo "fresh-check: make $t (in a clean Debian 12 chroot)"
  in_root $ENVS /bin/bash -c "cd /src && make $t" 2>&1 | tee "$FRESH_DIR/log-$t.txt"; r=${PIPESTATUS[0]}
  echo "fresh-check: make $t: exit $r in ${SECONDS}s"
  [ "$r" = 0 ] || { rc=1; break; }
done
exit $rc
