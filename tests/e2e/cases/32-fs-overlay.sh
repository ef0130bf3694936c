# Issue #15: virtual files and directories in shares (krun_fs_add_overlay_file/_dir), a share
# with no host directory (NullFs, krun_add_virtiofs3 with a NULL path) and the permission
# semantics of krun_add_virtiofs4. Every guest runs a script it is given as a file.

sum_file() { sha256sum <"$1" | cut -d' ' -f1; }

# Upstream's augmentfs scenario: the root is NullFs and everything in it is injected: init
# (one-shot), the static workload (busybox), a script and a config file (persistent), and
# /dev, /proc, /sys as virtual directories for init to mount on.
register_split fs_augment_nullfs_root
case_fs_augment_nullfs_root() {
  bb=$(guest_root)/bin/busybox
  [ -x "$bb" ] || fail "no busybox in the guest root"
  i=0
  while [ "$i" -lt 1500 ]; do printf 'line %05d of the injected config\n' "$i"; i=$((i + 1)); done >app.conf
  len=$(wc -c <app.conf)
  cat >e2e.sh <<'EOF2'
b=/bin/busybox
for spec in 0:64 4090:13 40000:4096 $(($1 - 7)):100; do
  off=${spec%:*} n=${spec#*:}
  echo "<at-$off=$($b dd if=/etc/app.conf bs=1 skip=$off count=$n 2>/dev/null | $b sha256sum | $b cut -d' ' -f1)>"
done
echo "<whole=$($b sha256sum /etc/app.conf | $b cut -d' ' -f1)>"
echo "<size=$($b stat -c %s /etc/app.conf)>"
$b awk '$2 == "/dev" || $2 == "/proc" || $2 == "/sys" { print "<mount " $2 " " $3 ">" }' /proc/mounts
echo "<root=$($b ls -a / | $b tr '\n' ' ')>"
echo "<etc=$($b ls -l /etc/app.conf | $b cut -c1-10)>"
echo x >>/etc/app.conf 2>/dev/null || echo "<append refused>"
$b touch /new-file 2>/dev/null || echo "<create refused>"
$b rm /etc/app.conf 2>/dev/null || echo "<rm refused>"
exit 7
EOF2
  guest aug run --disable-implicit-init --fs-null=/dev/root --overlay-init=/dev/root \
    --overlay-dir=/dev/root:dev:040755 --overlay-dir=/dev/root:proc:040555 \
    --overlay-dir=/dev/root:sys:040555 --overlay-dir=/dev/root:bin:040755 \
    --overlay-dir=/dev/root:etc:040755 \
    --overlay-file="/dev/root:bin/busybox:$bb:0100755" \
    --overlay-file="/dev/root:e2e.sh:$PWD/e2e.sh:0100644" \
    --overlay-file="/dev/root:etc/app.conf:$PWD/app.conf:0100644" \
    -- /bin/busybox sh /e2e.sh "$len"
  expect_rc aug 7
  for spec in 0:64 4090:13 40000:4096 $((len - 7)):100; do
    off=${spec%:*} n=${spec#*:}
    want=$(dd if=app.conf bs=1 skip="$off" count="$n" 2>/dev/null | sha256sum | cut -d' ' -f1)
    expect_line aug "<at-$off=$want>"
  done
  expect_line aug "<whole=$(sum_file app.conf)>"
  expect_line aug "<size=$len>"
  expect_line aug "<mount /dev devtmpfs>"
  expect_line aug "<mount /proc proc>"
  expect_line aug "<mount /sys sysfs>"
  # init.krun was one-shot: gone once the kernel looked it up to run it.
  expect_line aug "<root=. .. bin dev e2e.sh etc proc sys >"
  expect_line aug "<etc=-rw-r--r-->"
  expect_line aug "<append refused>"
  expect_line aug "<create refused>"
  expect_line aug "<rm refused>"
}

# A virtual file hides a host file of the same name (which stays as it was) next to the host
# directory's other files, and a virtual directory holds a virtual file.
register_split fs_overlay_shadows_host_file
case_fs_overlay_shadows_host_file() {
  copy_root root || fail "cannot copy the busybox root"
  printf 'host version\n' >root/etc/shadowed
  printf 'host neighbour\n' >root/etc/neighbour
  before=$(sum_file root/etc/shadowed)
  printf 'virtual version\n' >virtual.txt
  printf 'deep\n' >deep.txt
  cat >root/e2e.sh <<'EOF2'
echo "<shadowed=$(cat /etc/shadowed)>"
echo "<neighbour=$(cat /etc/neighbour)>"
echo "<count=$(ls /etc | grep -c '^shadowed$')>"
echo "<deep=$(cat /etc/vdir/inner)>"
echo "<vdir=$(ls -a /etc/vdir | tr '\n' ' ')>"
echo changed >/etc/shadowed 2>/dev/null || echo "<write refused>"
rm -f /etc/shadowed 2>/dev/null || echo "<rm refused>"
mv /etc/shadowed /etc/moved 2>/dev/null || echo "<mv refused>"
echo "<after=$(cat /etc/shadowed)>"
EOF2
  guest shadow run --root="$PWD/root" \
    --overlay-file="/dev/root:etc/shadowed:$PWD/virtual.txt:0100444" \
    --overlay-dir=/dev/root:etc/vdir:040755 \
    --overlay-file="/dev/root:etc/vdir/inner:$PWD/deep.txt:0644" \
    -- /bin/sh /e2e.sh
  expect_rc shadow 0
  expect_line shadow "<shadowed=virtual version>"
  expect_line shadow "<neighbour=host neighbour>"
  expect_line shadow "<count=1>"
  expect_line shadow "<deep=deep>"
  expect_line shadow "<vdir=. .. inner >"
  expect_line shadow "<write refused>"
  expect_line shadow "<rm refused>"
  expect_line shadow "<mv refused>"
  expect_line shadow "<after=virtual version>"
  [ "$(sum_file root/etc/shadowed)" = "$before" ] ||
    fail "the host file changed: '$(head -c 80 root/etc/shadowed)'"
  [ ! -e root/etc/moved ] && [ ! -e root/etc/vdir ] ||
    fail "the guest's changes reached the host: $(ls root/etc | tr '\n' ' ')"
}

# krun_add_virtiofs4: semantics 0 shows the host owner, 1 (LinuxSimplified) shows the guest
# process as the owner and keeps the host owner on chown, while permission bits stay the
# host's both ways; any other value is refused with EINVAL before anything boots.
register_split fs_semantics
case_fs_semantics() {
  [ "$(id -u)" = 0 ] || skip "needs root to give the host files another owner"
  mkdir complete simplified
  for d in complete simplified; do
    printf 'x\n' >"$d/f"
    chown 1234:2345 "$d/f" && chmod 0640 "$d/f" || fail "cannot prepare $d/f"
  done
  vm bad run --virtiofs4="bad:$PWD/complete:2" -- /bin/true
  [ "$RC" -eq 2 ] && has bad.err '^vmtest: krun_add_virtiofs4: -22 ' ||
    fail "semantics 2: exit $RC, $(excerpt bad.err)"
  cat >e2e.sh <<'EOF2'
mkdir -p /mnt/c /mnt/s
mount -t virtiofs complete /mnt/c && mount -t virtiofs simplified /mnt/s || exit 10
echo "<complete=$(stat -c '%u:%g %a' /mnt/c/f)>"
echo "<simplified=$(stat -c '%u:%g %a' /mnt/s/f)>"
chown 77:88 /mnt/s/f; echo "<chown=$?>"
chmod 0604 /mnt/s/f; echo "<chmod=$?>"
echo "<simplified-after=$(stat -c '%u:%g %a' /mnt/s/f)>"
EOF2
  copy_root root || fail "cannot copy the busybox root"
  cp e2e.sh root/e2e.sh
  guest sem run --root="$PWD/root" --virtiofs4="complete:$PWD/complete:0" \
    --virtiofs4="simplified:$PWD/simplified:1" -- /bin/sh /e2e.sh
  expect_rc sem 0
  expect_line sem "<complete=1234:2345 640>"
  expect_line sem "<simplified=0:0 640>"
  expect_line sem "<chown=0>"
  expect_line sem "<chmod=0>"
  expect_line sem "<simplified-after=0:0 604>"
  [ "$(stat -c '%u:%g %a' simplified/f)" = "1234:2345 604" ] ||
    fail "host file after the guest's chown/chmod: $(stat -c '%u:%g %a' simplified/f), expected 1234:2345 604"
}

# Every file of layer directory $1 with its mode and checksum, one line each (what must not
# change in a lower layer).
layer_state() {
  (cd "$1" && find . -print | sort | while read -r f; do
    if [ -f "$f" ] && [ ! -L "$f" ]; then
      echo "$f $(stat -c %a "$f") $(sha256sum <"$f" | cut -d' ' -f1)"
    else
      echo "$f $(stat -c %a "$f")"
    fi
  done)
}

# krun_set_overlayfs_root from three layers (lowest first): the guest sees their union; a
# write or chmod of a lower file copies it up into the top layer; a delete leaves an OCI
# whiteout there; whiteouts and opaque markers already in the top layer hide lower entries;
# the lower layers stay as they were; a second boot over the same layers sees the changes.
register_split fs_overlay_root_layers
case_fs_overlay_root_layers() {
  copy_root base || fail "cannot copy the busybox root"
  mkdir -p base/data/dir base/data/opq middle/data top/data/opq
  printf 'base\n' >base/data/base.txt
  printf 'gone\n' >base/data/gone.txt
  printf 'from base\n' >base/data/shadow.txt
  printf 'inner\n' >base/data/dir/inner
  printf 'old\n' >base/data/opq/old
  printf 'mid\n' >middle/data/mid.txt
  printf 'from middle\n' >middle/data/shadow.txt
  printf 'hidden\n' >middle/data/hidden.txt
  chmod 0644 middle/data/mid.txt
  printf 'top\n' >top/data/top.txt
  : >top/data/.wh.hidden.txt
  : >top/data/opq/.wh..wh..opq
  printf 'new\n' >top/data/opq/new
  cat >base/boot1.sh <<'EOF2'
echo "<data=$(ls /data | tr '\n' ' ')>"
echo "<shadow=$(cat /data/shadow.txt)>"
echo "<opq=$(ls -A /data/opq | tr '\n' ' ')>"
echo "<inner=$(cat /data/dir/inner)>"
echo appended >>/data/base.txt || exit 11
chmod 0600 /data/mid.txt || exit 12
rm /data/gone.txt || exit 13
mkdir /data/newdir && echo made >/data/newdir/f || exit 14
echo more >>/data/shadow.txt && rm /data/shadow.txt || exit 15
mv /data/dir/inner /data/inner-moved || exit 16
echo "<base=$(cat /data/base.txt | tr '\n' ' ')>"
echo "<mid=$(stat -c %a /data/mid.txt)>"
[ -e /data/gone.txt ] || echo "<gone is gone>"
echo "<after=$(ls /data | tr '\n' ' ')>"
EOF2
  cat >base/boot2.sh <<'EOF2'
echo "<base=$(cat /data/base.txt | tr '\n' ' ')>"
echo "<mid=$(stat -c %a /data/mid.txt) $(cat /data/mid.txt)>"
[ -e /data/gone.txt ] || echo "<gone is gone>"
echo "<f=$(cat /data/newdir/f)>"
echo "<moved=$(cat /data/inner-moved)>"
echo "<dir=$(ls -A /data/dir | tr '\n' ' ')>"
echo "<data=$(ls /data | tr '\n' ' ')>"
EOF2
  layer_state base >base-before.txt
  layer_state middle >middle-before.txt
  layers="$PWD/base:$PWD/middle:$PWD/top"

  guest boot1 run --overlay-root="$layers" -- /bin/sh /boot1.sh
  expect_rc boot1 0
  expect_line boot1 "<data=base.txt dir gone.txt mid.txt opq shadow.txt top.txt >"
  expect_line boot1 "<shadow=from middle>"
  expect_line boot1 "<opq=new >"
  expect_line boot1 "<inner=inner>"
  expect_line boot1 "<base=base appended >"
  expect_line boot1 "<mid=600>"
  expect_line boot1 "<gone is gone>"
  expect_line boot1 "<after=base.txt dir inner-moved mid.txt newdir opq top.txt >"

  layer_state base | diff base-before.txt - >base-diff.txt ||
    fail "the lowest layer changed: $(tr '\n' ' ' <base-diff.txt)"
  layer_state middle | diff middle-before.txt - >middle-diff.txt ||
    fail "the middle layer changed: $(tr '\n' ' ' <middle-diff.txt)"
  [ "$(cat top/data/base.txt 2>/dev/null | tr '\n' ' ')" = "base appended " ] ||
    fail "base.txt was not copied up with the guest's write: top has '$(cat top/data/base.txt 2>&1)'"
  [ "$(stat -c %a top/data/mid.txt 2>/dev/null) $(cat top/data/mid.txt 2>/dev/null)" = "600 mid" ] ||
    fail "mid.txt was not copied up by the chmod: top has $(ls -l top/data | tr '\n' ' ')"
  [ -f top/data/.wh.gone.txt ] && [ ! -s top/data/.wh.gone.txt ] ||
    fail "no empty whiteout .wh.gone.txt in the top layer: $(ls -A top/data | tr '\n' ' ')"
  [ "$(cat top/data/newdir/f 2>/dev/null)" = made ] || fail "newdir/f is not in the top layer"
  # Written (copied up) and then deleted: the whiteout must still be there.
  [ -f top/data/.wh.shadow.txt ] && [ ! -e top/data/shadow.txt ] ||
    fail "no whiteout for the copied-up and deleted shadow.txt: $(ls -A top/data | tr '\n' ' ')"
  [ -f top/data/dir/.wh.inner ] && [ "$(cat top/data/inner-moved 2>/dev/null)" = inner ] ||
    fail "mv of a lower file: top has $(cd top/data && find . | sort | tr '\n' ' ')"

  guest boot2 run --overlay-root="$layers" -- /bin/sh /boot2.sh
  expect_rc boot2 0
  expect_line boot2 "<base=base appended >"
  expect_line boot2 "<mid=600 mid>"
  expect_line boot2 "<gone is gone>"
  expect_line boot2 "<f=made>"
  expect_line boot2 "<moved=inner>"
  expect_line boot2 "<dir=>"
  expect_line boot2 "<data=base.txt dir inner-moved mid.txt newdir opq top.txt >"
  layer_state base | cmp -s base-before.txt - && layer_state middle | cmp -s middle-before.txt - ||
    fail "a lower layer changed during the second boot"
}
