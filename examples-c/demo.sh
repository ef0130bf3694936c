#!/usr/bin/env bash
# examples-c/demo.sh: `make demo`. Prepares a busybox root and runs chroot_vm with a
# hello-world command in a microVM: directly when this host's KVM boots guests
# (tests/lab/krunlab direct-ok), else inside the lab (tests/lab/krunlab run).
#
#   examples-c/demo.sh LIBKRUN CHROOT_VM [COMMAND ARGS...]
#
# Default command: /bin/sh -c 'echo "hello from the microVM: $(uname -sr), $(nproc) vCPU"'.
# The root is built in target/demo/rootfs from a static busybox (Debian: busybox-static).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
KRUNLAB=$ROOT/tests/lab/krunlab
say() { echo "demo: $*" >&2; }

[ $# -ge 2 ] || { say "usage: $0 LIBKRUN CHROOT_VM [COMMAND ARGS...]"; exit 2; }
LIB=$1 EXAMPLE=$2
shift 2
# shellcheck disable=SC2016 # expanded by the guest's shell
[ $# -gt 0 ] || set -- /bin/sh -c 'echo "hello from the microVM: $(uname -sr), $(nproc) vCPU"'
[ -f "$LIB" ] && [ -x "$EXAMPLE" ] || { say "build first: $LIB or $EXAMPLE is missing"; exit 2; }

# A busybox root: the guest needs a static busybox, it has no libc of its own.
BUSYBOX=${BUSYBOX:-/bin/busybox}
if ! [ -x "$BUSYBOX" ] || ! file -L "$BUSYBOX" 2>/dev/null | grep -q 'statically linked'; then
  say "$BUSYBOX is missing or not static; installing busybox-static with tests/lab/krunlab fetch"
  "$KRUNLAB" fetch
fi
DEMO=$ROOT/target/demo
rootfs=$DEMO/rootfs
rm -rf "$rootfs"
mkdir -p "$rootfs"/{bin,sbin,dev,proc,sys,tmp,run,etc,root,mnt,var}
cp "$BUSYBOX" "$rootfs/bin/busybox"
for a in $("$BUSYBOX" --list); do
  [ "$a" = busybox ] || ln -sf busybox "$rootfs/bin/$a"
done
echo 'root:x:0:0:root:/root:/bin/sh' >"$rootfs/etc/passwd"
echo 'root:x:0:' >"$rootfs/etc/group"
say "busybox root in $rootfs"

# libkrun.so.1 (SONAME) next to a copy of the library, and libkrunfw.so.5 from the system or
# the lab's cache.
mkdir -p "$DEMO/lib"
cp -L "$LIB" "$DEMO/lib/libkrun.so.1"
libpath=$DEMO/lib
if ! /sbin/ldconfig -p 2>/dev/null | grep -q 'libkrunfw\.so\.5 '; then
  fw=$("$KRUNLAB" env | sed -n 's/^KRUNLAB_KRUNFW=//p')
  [ -f "$fw" ] || "$KRUNLAB" fetch
  libpath=$libpath:$(dirname "$fw")
fi

probe=(env "LD_LIBRARY_PATH=$libpath" "$EXAMPLE" "$rootfs" /bin/echo KRUNLAB-PROBE-OK)
if "$KRUNLAB" direct-ok --key "$DEMO/lib/libkrun.so.1" -- "${probe[@]}"; then
  say "running on this host: chroot_vm $rootfs $*"
  rc=0
  env "LD_LIBRARY_PATH=$libpath" "$EXAMPLE" "$rootfs" "$@" || rc=$?
else
  say "this host's KVM cannot boot guests: running in the lab (tests/lab/krunlab, a few minutes)"
  say "chroot_vm /lab/demo-root $*"
  # Quote each word for the lab's shell.
  cmd=./chroot_vm
  for w in /lab/demo-root "$@"; do cmd="$cmd '${w//\'/\'\\\'\'}'"; done
  rc=0
  "$KRUNLAB" run --timeout 600 --lib "$DEMO/lib" --put "$EXAMPLE:chroot_vm" \
    --put "$rootfs:demo-root" -- "$cmd; echo \"demo: chroot_vm exited with status \$?\"" || rc=$?
fi
say "done (status $rc)"
exit "$rc"
