#!/bin/sh
# lab.sh STAGE ROOTFS "DIRS": the lab (or KVM host) side of tests/posix/run. For each library
# (ours, then upstream's), one VM on a private copy of the busybox root ROOTFS with
# pjdfstest in /pjd runs guest.sh over the test directories DIRS; its lines come out
# prefixed with @@ours or @@ref.
STAGE=$1 SRCROOT=$2 DIRS=$3
for lib in ours ref; do
  work=$(mktemp -d "${TMPDIR:-/tmp}/posix.XXXXXX")
  cp -a "$SRCROOT" "$work/root" && cp -r "$STAGE/pjd" "$work/root/pjd" &&
    cp "$STAGE/guest.sh" "$work/root/posix.sh" || exit 1
  # The suite names its files with `openssl md5`; busybox has md5sum.
  rm -f "$work/root/bin/openssl"
  printf '#!/bin/sh\nmd5sum | sed "s/ .*//"\n' >"$work/root/bin/openssl"
  chmod 755 "$work/root/bin/openssl"
  echo "@@$lib start $(date +%s)"
  # Streamed (a long run shows its progress); the status comes through a file.
  {
    LD_LIBRARY_PATH="$STAGE/$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" timeout 2400 \
      "$STAGE/vmtest" run --cpus=2 --mem=512 --root="$work/root" -- /bin/sh /posix.sh "$DIRS" \
      </dev/null 2>&1
    echo $? >"$work/rc"
  } | sed "s/^/@@$lib /"
  rc=$(cat "$work/rc")
  echo "@@$lib end $(date +%s) status $rc"
  rm -rf "$work"
done
