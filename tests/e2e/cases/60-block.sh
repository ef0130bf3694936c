# Issue #13: virtio-blk disks. Images are made in the lab with the tools tests/e2e/run stages
# in ../tools (mke2fs, debugfs, qemu-img from the build host); the guest mounts, reads and
# writes them, and the host side is checked with debugfs, qemu-img or the raw bytes.

TOOLS=$HERE/tools

need_tool() { [ -x "$TOOLS/$1" ] || skip "no $1 staged in $TOOLS (install e2fsprogs/qemu-utils on the build host)"; }

# A 16 MiB ext4 image $1 holding hello.txt ("from the host").
make_ext4() {
  need_tool mke2fs
  mkdir -p src && printf 'from the host\n' >src/hello.txt
  dd if=/dev/zero of="$1" bs=1048576 count=0 seek=16 2>/dev/null || fail "cannot create $1"
  "$TOOLS/mke2fs" -q -F -t ext4 -d src "$1" >mke2fs.log 2>&1 ||
    fail "mke2fs failed: $(excerpt mke2fs.log)"
}

# Guest script: mount /dev/vda, show hello.txt and the serial, write guest.txt, unmount.
write_rw_script() {
  cat >root/e2e.sh <<'EOF'
mkdir -p /mnt/d && mount -t ext4 /dev/vda /mnt/d || exit 10
echo "<hello=$(cat /mnt/d/hello.txt)>"
printf '<serial='; cat /sys/block/vda/serial; printf '>\n'
printf 'written by the guest\n' >/mnt/d/guest.txt || exit 11
umount /mnt/d || exit 12
echo "<guest done>"
EOF
}

# debugfs's `cat` of $2 in image $1, to stdout (its banner goes to stderr).
image_cat() { "$TOOLS/debugfs" -R "cat $2" "$1" 2>debugfs.err; }

register block_ext4_raw
case_block_ext4_raw() {
  need_tool debugfs
  copy_root root || fail "cannot copy the busybox root"
  make_ext4 disk.img
  write_rw_script
  guest rw run --disk="disk0:raw:-:$PWD/disk.img" --root="$PWD/root" -- /bin/sh /e2e.sh
  expect_line rw "<hello=from the host>"
  expect_line rw "<serial=disk0>"
  expect_line rw "<guest done>"
  expect_rc rw 0
  image_cat disk.img /guest.txt >guest.txt
  printf 'written by the guest\n' >want.txt
  cmp -s want.txt guest.txt ||
    fail "guest.txt in the image is '$(excerpt guest.txt)' ($(excerpt debugfs.err))"
}

register block_read_only
case_block_read_only() {
  copy_root root || fail "cannot copy the busybox root"
  make_ext4 disk.img
  before=$(sha256sum <disk.img)
  cat >root/e2e.sh <<'EOF'
echo "<ro=$(cat /sys/block/vda/ro)>"
mkdir -p /mnt/d && mount -t ext4 -o ro,noload /dev/vda /mnt/d || exit 10
echo "<hello=$(cat /mnt/d/hello.txt)>"
if printf 'x\n' >/mnt/d/new.txt 2>/dev/null; then echo "<file write allowed>"; else echo "<file write refused>"; fi
umount /mnt/d
if dd if=/dev/zero of=/dev/vda bs=4096 count=1 conv=fsync 2>/dev/null; then
  echo "<device write allowed>"
else
  echo "<device write refused>"
fi
echo "<guest done>"
EOF
  guest ro run --disk="disk0:raw:ro:$PWD/disk.img" --root="$PWD/root" -- /bin/sh /e2e.sh
  expect_line ro "<ro=1>"
  expect_line ro "<hello=from the host>"
  expect_line ro "<file write refused>"
  expect_line ro "<device write refused>"
  expect_line ro "<guest done>"
  expect_rc ro 0
  [ "$(sha256sum <disk.img)" = "$before" ] || fail "the read-only image changed on the host"
}

register block_qcow2_backing
case_block_qcow2_backing() {
  need_tool qemu-img
  need_tool debugfs
  copy_root root || fail "cannot copy the busybox root"
  make_ext4 disk.img
  "$TOOLS/qemu-img" convert -f raw -O qcow2 disk.img base.qcow2 >qi.log 2>&1 ||
    fail "qemu-img convert: $(excerpt qi.log)"
  "$TOOLS/qemu-img" create -f qcow2 -b "$PWD/base.qcow2" -F qcow2 overlay.qcow2 >qi.log 2>&1 ||
    fail "qemu-img create: $(excerpt qi.log)"
  base_before=$(sha256sum <base.qcow2)
  write_rw_script
  # qcow2 offers no DISCARD (imago cannot punch the host file): the guest is told so, and its
  # blkdiscard fails without touching the data (guest.txt is checked below).
  cat >>root/e2e.sh <<'EOF'
echo "<discard_max=$(cat /sys/block/vda/queue/discard_max_bytes)>"
if blkdiscard /dev/vda 2>/dev/null; then echo "<blkdiscard allowed>"; else echo "<blkdiscard refused>"; fi
EOF
  guest q run --disk="disk0:qcow2:-:$PWD/overlay.qcow2" --root="$PWD/root" -- /bin/sh /e2e.sh
  expect_line q "<hello=from the host>"
  expect_line q "<guest done>"
  expect_line q "<discard_max=0>"
  expect_line q "<blkdiscard refused>"
  expect_rc q 0
  [ "$(sha256sum <base.qcow2)" = "$base_before" ] || fail "the backing file changed"
  "$TOOLS/qemu-img" check overlay.qcow2 >check.log 2>&1 ||
    fail "qemu-img check of the overlay failed: $(excerpt check.log)"
  "$TOOLS/qemu-img" convert -f qcow2 -O raw overlay.qcow2 flat.img >qi.log 2>&1 ||
    fail "qemu-img convert of the overlay: $(excerpt qi.log)"
  image_cat flat.img /guest.txt >guest.txt
  printf 'written by the guest\n' >want.txt
  cmp -s want.txt guest.txt || fail "guest.txt in the overlay is '$(excerpt guest.txt)'"
  "$TOOLS/qemu-img" convert -f qcow2 -O raw base.qcow2 base.img >qi.log 2>&1 ||
    fail "qemu-img convert of the base: $(excerpt qi.log)"
  image_cat base.img /guest.txt >base-guest.txt
  [ ! -s base-guest.txt ] || fail "the backing image has guest.txt: $(excerpt base-guest.txt)"
}

# blkdiscard on a raw image punches holes: the host file's blocks go, its bytes read zero.
register block_discard
case_block_discard() {
  copy_root root || fail "cannot copy the busybox root"
  dd if=/dev/urandom of=disk.img bs=1048576 count=8 2>/dev/null || fail "cannot write disk.img"
  before=$(du -k disk.img | cut -f1)
  [ "$before" -ge 8000 ] || fail "the host file has only ${before} KiB allocated before"
  cat >root/e2e.sh <<'EOF'
echo "<discard_max=$(cat /sys/block/vda/queue/discard_max_bytes)>"
blkdiscard /dev/vda || exit 10
echo "<guest done>"
EOF
  guest d run --disk="disk0:raw:-:$PWD/disk.img" --root="$PWD/root" -- /bin/sh /e2e.sh
  expect_line d "<guest done>"
  expect_rc d 0
  after=$(du -k disk.img | cut -f1)
  [ "$after" -le 64 ] || fail "after blkdiscard the host file still has ${after} KiB (before: ${before} KiB)"
  [ "$(stat -c %s disk.img)" = 8388608 ] || fail "the host file changed size: $(stat -c %s disk.img)"
  dd if=/dev/zero of=zero.img bs=1048576 count=8 2>/dev/null
  cmp -s zero.img disk.img || fail "the discarded image does not read as zeroes"
}

# Each sync mode: what the guest wrote and synced is in the host file after the VM ends.
# The fourth disk asks for O_DIRECT (in a lab on tmpfs it falls back, with one warning).
register block_sync_modes
case_block_sync_modes() {
  copy_root root || fail "cannot copy the busybox root"
  for n in 0 1 2 3; do
    dd if=/dev/zero of="d$n.img" bs=1048576 count=4 2>/dev/null || fail "cannot create d$n.img"
  done
  dd if=/dev/urandom of=root/pattern bs=4096 count=64 2>/dev/null
  cat >root/e2e.sh <<'EOF'
for d in vda vdb vdc vdd; do
  echo "<$d cache=$(cat /sys/block/$d/queue/write_cache)>"
  dd if=/pattern of=/dev/$d bs=4096 seek=16 conv=fsync 2>/dev/null || exit 10
done
echo "<guest done>"
EOF
  guest s run --log-level=2 \
    --disk="none:raw:sync-none:$PWD/d0.img" \
    --disk="relaxed:raw:sync-relaxed:$PWD/d1.img" \
    --disk="full:raw:sync-full:$PWD/d2.img" \
    --disk="direct:raw:direct,sync-full:$PWD/d3.img" \
    --root="$PWD/root" -- /bin/sh /e2e.sh
  expect_line s "<guest done>"
  # KRUN_SYNC_NONE offers no VIRTIO_BLK_F_FLUSH (Linux then sends none: write through);
  # RELAXED and FULL offer it (write back: the guest's fsync sends a flush).
  expect_line s "<vda cache=write through>"
  expect_line s "<vdb cache=write back>"
  expect_line s "<vdc cache=write back>"
  expect_line s "<vdd cache=write back>"
  expect_rc s 0
  for n in 0 1 2 3; do
    dd if="d$n.img" of="got$n" bs=4096 skip=16 count=64 2>/dev/null
    cmp -s root/pattern "got$n" || fail "disk d$n.img lacks what the guest wrote"
  done
}

# A missing file, an unknown format, a duplicate id fail at the setter; a corrupt qcow2
# header fails the start with EINVAL and a line naming the file. Nothing boots.
register block_errors
case_block_errors() {
  : >plain.img
  printf 'QFI\373garbage that is no qcow2 header at all................' >bad.qcow2
  set -- \
    "--disk=d0:raw:-:$PWD/missing.img|vmtest: krun_add_disk3: -2 (No such file or directory)" \
    "--disk=d0:ext9:-:$PWD/plain.img|vmtest: krun_add_disk3: -22 (Invalid argument)"
  i=0
  for spec in "$@"; do
    i=$((i + 1))
    opt=${spec%%|*}
    want=${spec#*|}
    timeout -k 10 "$VM_TIMEOUT" "$VMTEST" run "$opt" -- /bin/true </dev/null >"e$i.out" 2>"e$i.err"
    rc=$?
    [ "$rc" -eq 2 ] || fail "$opt: exit $rc, expected 2: $(excerpt "e$i.err")"
    printf '%s\n' "$want" >"e$i.want"
    cmp -s "e$i.want" "e$i.err" || fail "$opt: stderr '$(excerpt "e$i.err")', expected '$want'"
  done
  timeout -k 10 "$VM_TIMEOUT" "$VMTEST" run "--disk=d0:raw:-:$PWD/plain.img" \
    "--disk=d0:raw:-:$PWD/plain.img" -- /bin/true </dev/null >dup.out 2>dup.err
  printf 'vmtest: krun_add_disk3: -17 (File exists)\n' >dup.want
  cmp -s dup.want dup.err || fail "duplicate id: stderr '$(excerpt dup.err)'"
  mkdir -p root
  timeout -k 10 "$VM_TIMEOUT" "$VMTEST" start-error "--disk=bad:qcow2:-:$PWD/bad.qcow2" \
    --root="$PWD/root" </dev/null >bad.out 2>bad.err
  rc=$?
  [ "$rc" -eq 0 ] || fail "corrupt qcow2: vmtest exit $rc: $(excerpt bad.err)"
  expect_file_line bad.out 'krun_start_enter: -22 (Invalid argument)'
  has bad.err "bad\\.qcow2" || fail "the start error does not name the file: $(excerpt bad.err)"
}

expect_file_line() {
  grep -a -q -x -F -e "$2" "$1" || fail "no line '$2' in $1: $(excerpt "$1")"
}

# An ext4 image $1 of the busybox root with /etc/marker ("on the disk root").
make_root_image() {
  need_tool mke2fs
  copy_root rootsrc || fail "cannot copy the busybox root"
  printf 'on the disk root\n' >rootsrc/etc/marker
  # The workload: its root filesystem, a file of the image, a write, a status.
  cat >rootsrc/e2e.sh <<'SCRIPT'
echo "<rootfs=$(awk '$2 == "/" {print $3}' /proc/mounts)>"
echo "<marker=$(cat /etc/marker)>"
printf 'from the workload\n' >/written || exit 11
exit 7
SCRIPT
  dd if=/dev/zero of="$1" bs=1048576 count=0 seek=64 2>/dev/null || fail "cannot create $1"
  "$TOOLS/mke2fs" -q -F -t ext4 -d rootsrc "$1" >mke2fs.log 2>&1 ||
    fail "mke2fs of the root failed: $(excerpt mke2fs.log)"
}

check_disk_root() {
  expect_line "$1" "<rootfs=ext4>"
  expect_line "$1" "<marker=on the disk root>"
  expect_rc "$1" 7
}

# boxlite's boot: a qcow2 disk (krun_add_disk2 style), krun_set_root_disk_remount with ext4.
register block_remount_root
case_block_remount_root() {
  need_tool qemu-img
  need_tool debugfs
  make_root_image root.img
  "$TOOLS/qemu-img" convert -f raw -O qcow2 root.img root.qcow2 >qi.log 2>&1 ||
    fail "qemu-img convert: $(excerpt qi.log)"
  guest rm run --disk="root0:qcow2:-:$PWD/root.qcow2" --root-disk-remount=/dev/vda:ext4 \
    -- /bin/sh /e2e.sh
  check_disk_root rm
  "$TOOLS/qemu-img" check root.qcow2 >check.log 2>&1 || fail "qemu-img check: $(excerpt check.log)"
  "$TOOLS/qemu-img" convert -f qcow2 -O raw root.qcow2 flat.img >qi.log 2>&1 ||
    fail "qemu-img convert back: $(excerpt qi.log)"
  image_cat flat.img /written >written.txt
  printf 'from the workload\n' >want.txt
  cmp -s want.txt written.txt || fail "/written in the image is '$(excerpt written.txt)'"
}

# krun_set_root_disk: the same boot, the filesystem type probed.
register block_root_disk_probed
case_block_root_disk_probed() {
  need_tool debugfs
  make_root_image root.img
  guest rd run --root-disk="$PWD/root.img" -- /bin/sh /e2e.sh
  check_disk_root rd
  image_cat root.img /written >written.txt
  printf 'from the workload\n' >want.txt
  cmp -s want.txt written.txt || fail "/written in the image is '$(excerpt written.txt)'"
}

# The VMM killed with SIGKILL while the guest writes: a KRUN_SYNC_FULL raw disk has what the
# guest wrote (O_DIRECT, never synced), a qcow2 disk the guest had synced before it went on
# writing passes `qemu-img check` and holds the synced data, and a qcow2 disk the guest
# never flushed (O_DIRECT writes into new clusters) passes `qemu-img check` too.
register block_sigkill
case_block_sigkill() {
  need_tool qemu-img
  copy_root root || fail "cannot copy the busybox root"
  dd if=/dev/zero of=full.img bs=1048576 count=4 2>/dev/null || fail "cannot create full.img"
  "$TOOLS/qemu-img" create -f qcow2 q.qcow2 16M >qi.log 2>&1 || fail "qemu-img: $(excerpt qi.log)"
  "$TOOLS/qemu-img" create -f qcow2 nf.qcow2 16M >qi.log 2>&1 || fail "qemu-img: $(excerpt qi.log)"
  dd if=/dev/urandom of=root/pattern bs=4096 count=64 2>/dev/null
  cat >root/e2e.sh <<'SCRIPT'
dd if=/pattern of=/dev/vda bs=4096 seek=16 oflag=direct 2>/dev/null || exit 10
# conv=fsync: fsync on the device is what sends the flush (sync(2) writes a raw device's
# cache back but flushes nothing).
dd if=/pattern of=/dev/vdb bs=4096 seek=16 conv=fsync 2>/dev/null || exit 11
dd if=/pattern of=/dev/vdc bs=4096 seek=16 oflag=direct 2>/dev/null || exit 12
dd if=/pattern of=/dev/vdc bs=4096 seek=2048 oflag=direct 2>/dev/null || exit 13
echo "<written>"
i=0
while :; do
  dd if=/dev/urandom of=/dev/vdb bs=4096 seek=$((1024 + i % 2048)) count=1 2>/dev/null
  i=$((i + 1))
done
SCRIPT
  vm k run --pid-file="$PWD/k.pid" --disk="full:raw:sync-full:$PWD/full.img" \
    --disk="q:qcow2:-:$PWD/q.qcow2" --disk="nf:qcow2:-:$PWD/nf.qcow2" --root="$PWD/root" \
    -- /bin/sh /e2e.sh &
  bg=$!
  n=0
  until has k.out '^<written>' || [ "$n" -ge 120 ]; do sleep 1; n=$((n + 1)); done
  has k.out '^<written>' || { kill -KILL "$(cat k.pid)" 2>/dev/null; wait "$bg"; fail "the guest never wrote: $(excerpt k.err)"; }
  sleep 1
  kill -KILL "$(cat k.pid)" || fail "cannot kill the VMM"
  wait "$bg"
  dd if=full.img of=got bs=4096 skip=16 count=64 2>/dev/null
  cmp -s root/pattern got || fail "the sync-full disk lacks what the guest wrote before SIGKILL"
  # 0: clean; 3: only leaked clusters (allocated, unreferenced: space, never data, lost).
  "$TOOLS/qemu-img" check q.qcow2 >check.log 2>&1
  rc=$?
  [ "$rc" -eq 0 ] || [ "$rc" -eq 3 ] ||
    fail "qemu-img check after SIGKILL: exit $rc: $(excerpt check.log)"
  "$TOOLS/qemu-img" convert -f qcow2 -O raw q.qcow2 q.raw >qi.log 2>&1 ||
    fail "qemu-img convert: $(excerpt qi.log)"
  dd if=q.raw of=gotq bs=4096 skip=16 count=64 2>/dev/null
  cmp -s root/pattern gotq || fail "the qcow2 disk lacks what the guest synced before SIGKILL"
  "$TOOLS/qemu-img" check nf.qcow2 >check-nf.log 2>&1
  rc=$?
  [ "$rc" -eq 0 ] || [ "$rc" -eq 3 ] ||
    fail "qemu-img check of the never-flushed qcow2 after SIGKILL: exit $rc: $(excerpt check-nf.log)"
}

# A vmdk (monolithicFlat: imago reads flat extents) is served read-only: the guest reads it.
register block_vmdk
case_block_vmdk() {
  need_tool qemu-img
  copy_root root || fail "cannot copy the busybox root"
  make_ext4 disk.img
  "$TOOLS/qemu-img" convert -f raw -O vmdk -o subformat=monolithicFlat disk.img disk.vmdk \
    >qi.log 2>&1 || fail "qemu-img convert to vmdk: $(excerpt qi.log)"
  cat >root/e2e.sh <<'SCRIPT'
echo "<ro=$(cat /sys/block/vda/ro)>"
mkdir -p /mnt/d && mount -t ext4 -o ro,noload /dev/vda /mnt/d || exit 10
echo "<hello=$(cat /mnt/d/hello.txt)>"
umount /mnt/d
echo "<discard_max=$(cat /sys/block/vda/queue/discard_max_bytes)>"
if blkdiscard /dev/vda 2>/dev/null; then echo "<blkdiscard allowed>"; else echo "<blkdiscard refused>"; fi
SCRIPT
  before=$(sha256sum <disk-flat.vmdk)
  guest v run --disk="v0:vmdk:ro:$PWD/disk.vmdk" --root="$PWD/root" -- /bin/sh /e2e.sh
  expect_line v "<ro=1>"
  expect_line v "<hello=from the host>"
  # No DISCARD on a vmdk (read-only, and imago has no vmdk discard): refused, extent unchanged.
  expect_line v "<discard_max=0>"
  expect_line v "<blkdiscard refused>"
  expect_rc v 0
  [ "$(sha256sum <disk-flat.vmdk)" = "$before" ] || fail "the vmdk's flat extent changed"
}
