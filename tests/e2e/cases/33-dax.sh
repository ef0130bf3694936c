# shellcheck shell=sh
# The virtio-fs DAX window (issue 15, part 4). A share added with krun_add_virtiofs2(TAG, PATH,
# 64 MiB) offers the cache shared memory region; the guest mounts it with -o dax=always, and
# file data then moves through mappings of the host files in that window (FUSE_SETUPMAPPING,
# opcode 48) instead of READ/WRITE requests. tests/e2e/guest/daxmap.c (static, /bin/daxmap in
# the guest root) does the mmap work in the guest.

DAXMAP=${DAXMAP:-$HERE/daxmap}

register_split fs_dax
case_fs_dax() {
  copy_root root || fail "cannot copy the busybox root"
  cp "$DAXMAP" root/bin/daxmap || fail "cannot copy daxmap into the guest root"
  mkdir share
  head -c 8388608 /dev/urandom >share/h.bin
  want_h=$(sha256sum <share/h.bin | cut -d' ' -f1)
  head -c 8192 /dev/zero >share/s.bin
  head -c 8192 /dev/urandom >share/w.bin
  cp share/w.bin w.expected
  printf 'stored through DAX' | dd of=w.expected bs=1 seek=5000 conv=notrunc 2>/dev/null
  printf 'still served\n' >share/small.txt
  cat >root/e2e.sh <<'EOS'
mkdir -p /mnt/d || exit 10
mount -t virtiofs -o dax=always dax /mnt/d || exit 11
grep ' /mnt/d ' /proc/mounts | sed 's/^/<mount: /;s/$/>/'
/bin/daxmap isdax /mnt/d/h.bin || exit 12
echo "<h=$(sha256sum /mnt/d/h.bin | cut -d' ' -f1)>"
/bin/daxmap shared /mnt/d/s.bin || exit 13
/bin/daxmap write /mnt/d/w.bin 5000 "stored through DAX" || exit 14
echo "<small=$(cat /mnt/d/small.txt)>"
umount /mnt/d || exit 15
echo "<done>"
EOS
  guest dax run --log-level=4 --root="$PWD/root" \
    --virtiofs2="dax:$PWD/share:67108864" -- /bin/sh /e2e.sh
  expect_rc dax 0
  expect_line dax "<done>"
  ! has dax.err 'ignored: DAX window' || fail "the window was ignored: $(grep -a -m1 'ignored: DAX' dax.err)"
  has dax.txt '^<mount: dax /mnt/d virtiofs .*dax=always' ||
    fail "/proc/mounts shows no dax=always mount: $(grep -a '<mount' dax.txt || excerpt dax.txt)"
  expect_line dax "<dax /mnt/d/h.bin=1>"
  expect_line dax "<h=$want_h>"
  expect_line dax "<shared parent saw: written by the child through its mapping>"
  expect_line dax "<shared child saw: answered by the parent through its mapping>"
  expect_line dax "<written 18>"
  expect_line dax "<small=still served>"
  # Both processes' stores reached the host file.
  [ "$(dd if=share/s.bin bs=1 count=41 2>/dev/null)" = "written by the child through its mapping" ] ||
    fail "s.bin on the host starts with '$(head -c 41 share/s.bin | tr -c '[:print:]' .)'"
  [ "$(dd if=share/s.bin bs=1 skip=2048 count=43 2>/dev/null)" = "answered by the parent through its mapping" ] ||
    fail "s.bin on the host at 2048: '$(dd if=share/s.bin bs=1 skip=2048 count=43 2>/dev/null | tr -c '[:print:]' .)'"
  cmp -s share/w.bin w.expected ||
    fail "w.bin on the host differs from the expected bytes: $(cmp share/w.bin w.expected 2>&1 | head -n 1)"
  # The data went through mappings: the share's worker counts SETUPMAPPING (48) requests,
  # at least one per 2 MiB of h.bin, and READ (15) requests stay below the 8 a non-DAX
  # read of h.bin would need (1 MiB each).
  stats=$(grep -a 'fs(dax): requests served' dax.err | head -n 1)
  [ -n "$stats" ] || fail "no request summary for fs(dax) in the log: $(excerpt dax.err)"
  maps=$(echo "$stats" | sed -n 's/.* op48:\([0-9]*\)\/.*/\1/p')
  reads=$(echo "$stats" | sed -n 's/.* op15:\([0-9]*\)\/.*/\1/p')
  [ "${maps:-0}" -ge 4 ] || fail "${maps:-0} SETUPMAPPING requests for an 8 MiB file: $stats"
  [ "${reads:-0}" -lt 8 ] || fail "$reads READ requests: the reads did not go through DAX: $stats"
}

# The root's window (upstream's 512 MiB): krun_set_root, and krun_add_virtiofs2 with the root
# tag as crun's handler gives it. The guest's driver claims the cache region it found, so
# /proc/iomem lists 512 MiB under the root device's name (a device without a window logs
# "No cache capability" instead); the kernel mounts the root without dax, so nothing is
# mapped into it and the root works as before.
IOMEM_CMD='# The root is the only virtio-fs device here.
  d=$(ls -d /sys/bus/virtio/drivers/virtiofs/virtio* | head -n 1); d=${d##*/}
  grep " : $d\$" /proc/iomem | sed "s/^ *//; s/^/<iomem: /; s/\$/>/"
  dmesg | grep -c "No cache capability" | sed "s/^/<no cache lines: /; s/\$/>/"
  echo "<root works>"'

# root_window NAME: NAME.txt shows one 512 MiB region for the root's device.
root_window() {
  expect_rc "$1" 0
  expect_line "$1" "<root works>"
  expect_line "$1" "<no cache lines: 0>"
  range=$(sed -n 's/^<iomem: \([0-9a-f]*-[0-9a-f]*\) : virtio[0-9]*>$/\1/p' "$1.txt")
  [ -n "$range" ] || fail "no /proc/iomem region under the root device's name: $(excerpt "$1.txt")"
  start=$(printf '%d' "0x${range%-*}") end=$(printf '%d' "0x${range#*-}")
  [ $((end - start + 1)) -eq 536870912 ] || fail "the root's window is $range, not 512 MiB"
}

register fs_dax_root_window
case_fs_dax_root_window() {
  r=$(guest_root) || fail "no busybox root for the guest"
  guest set run --root="$r" -- /bin/sh -c "$IOMEM_CMD"
  root_window set
  guest v2 run --root-virtiofs="$r" -- /bin/sh -c "$IOMEM_CMD"
  root_window v2
}
