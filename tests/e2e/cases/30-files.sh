# Issue #4: the virtio-fs shares. What the guest does to files in a share is exactly what the
# host sees afterwards; a read-only share refuses writes with EROFS; the guest can never reach
# a host path outside the shared directory. Each case works on its own copy of the busybox
# root and runs a script it writes there (/e2e.sh), so nothing depends on long command lines.

# sha256 of stdin, hex only.
sum_of() { sha256sum | cut -d' ' -f1; }
sum_file() { sha256sum <"$1" | cut -d' ' -f1; }

register_split files_ops
case_files_ops() {
  copy_root root || fail "cannot copy the busybox root"
  d=root/data
  mkdir "$d"
  printf 'rename me\n' >"$d/to-rename"
  printf 'first\n' >"$d/to-append"
  i=0
  while [ "$i" -lt 100 ]; do printf '0123456789abcdef'; i=$((i + 1)); done >"$d/to-truncate"
  printf 'delete me\n' >"$d/to-delete"
  mkdir "$d/dir-to-remove"
  dd if=/dev/urandom of="$d/from-host" bs=1k count=300 2>/dev/null
  cat >root/e2e.sh <<'EOF'
cd /data || exit 10
echo "<from-host=$(sha256sum from-host | cut -d' ' -f1)>"
printf 'written by the guest\n' >new-file || exit 11
mv to-rename renamed || exit 12
printf 'second\n' >>to-append || exit 13
truncate -s 10 to-truncate || exit 14
rm to-delete || exit 15
rmdir dir-to-remove || exit 16
mkdir -p d1/d2/d3 && printf 'deep\n' >d1/d2/d3/leaf || exit 17
mkdir made && mv renamed made/moved || exit 18
ln -s made/moved sym-rel && ln -s /data/new-file sym-abs || exit 19
ln new-file hard-link || exit 20
dd if=/dev/zero of=sparse bs=1 count=1 seek=1048575 2>/dev/null || exit 21
chmod 0751 new-file || exit 22
echo "<guest-links=$(stat -c %h new-file)>"
echo "<guest done>"
EOF
  guest ops run --root="$PWD/root" -- /bin/sh /e2e.sh
  expect_line ops "<from-host=$(sum_file "$d/from-host")>"
  expect_rc ops 0
  expect_line ops "<guest done>"
  expect_line ops "<guest-links=2>"

  [ "$(sum_file "$d/new-file")" = "$(printf 'written by the guest\n' | sum_of)" ] ||
    fail "new-file on the host: wrong content '$(head -c 80 "$d/new-file")'"
  [ ! -e "$d/to-rename" ] || fail "to-rename still exists on the host after mv"
  [ ! -e "$d/renamed" ] || fail "renamed still exists on the host after mv to made/moved"
  [ "$(sum_file "$d/made/moved" 2>/dev/null)" = "$(printf 'rename me\n' | sum_of)" ] ||
    fail "made/moved on the host: missing or wrong content"
  [ "$(sum_file "$d/to-append")" = "$(printf 'first\nsecond\n' | sum_of)" ] ||
    fail "to-append on the host is '$(tr '\n' '|' <"$d/to-append")', expected 'first|second|'"
  [ "$(stat -c %s "$d/to-truncate")" = 10 ] && [ "$(cat "$d/to-truncate")" = 0123456789 ] ||
    fail "to-truncate on the host has $(stat -c %s "$d/to-truncate") bytes, expected 10 ('0123456789')"
  [ ! -e "$d/to-delete" ] || fail "to-delete still exists on the host after rm"
  [ ! -e "$d/dir-to-remove" ] || fail "dir-to-remove still exists on the host after rmdir"
  [ -d "$d/d1/d2/d3" ] || fail "d1/d2/d3 is not a directory on the host"
  [ "$(cat "$d/d1/d2/d3/leaf" 2>/dev/null)" = deep ] || fail "d1/d2/d3/leaf: missing or wrong"
  [ -L "$d/sym-rel" ] && [ "$(readlink "$d/sym-rel")" = made/moved ] ||
    fail "sym-rel on the host: not a symlink to 'made/moved' ($(readlink "$d/sym-rel"))"
  [ -L "$d/sym-abs" ] && [ "$(readlink "$d/sym-abs")" = /data/new-file ] ||
    fail "sym-abs on the host: not a symlink to '/data/new-file' ($(readlink "$d/sym-abs"))"
  [ "$(stat -c %h "$d/new-file")" = 2 ] ||
    fail "new-file has $(stat -c %h "$d/new-file") links on the host, expected 2"
  [ "$(stat -c %i "$d/new-file")" = "$(stat -c %i "$d/hard-link" 2>/dev/null)" ] ||
    fail "hard-link is not the same inode as new-file on the host"
  [ "$(stat -c %s "$d/sparse")" = 1048576 ] ||
    fail "sparse has $(stat -c %s "$d/sparse") bytes on the host, expected 1048576"
  [ "$(stat -c %a "$d/new-file")" = 751 ] ||
    fail "new-file has mode $(stat -c %a "$d/new-file") on the host, expected 751"
  # Nothing else appeared or stayed.
  (cd "$d" && find . | sort) >listing.txt
  printf '%s\n' . ./d1 ./d1/d2 ./d1/d2/d3 ./d1/d2/d3/leaf ./from-host ./hard-link ./made \
    ./made/moved ./new-file ./sparse ./sym-abs ./sym-rel ./to-append ./to-truncate |
    sort >want-listing.txt
  cmp -s listing.txt want-listing.txt ||
    fail "the share holds other files than expected: $(diff want-listing.txt listing.txt | grep '^[-+]\.' | tr '\n' ' ')"
}

register_split files_readonly_share
case_files_readonly_share() {
  copy_root root || fail "cannot copy the busybox root"
  mkdir ro
  printf 'original\n' >ro/keep
  mkdir ro/subdir
  cat >root/e2e.sh <<'EOF'
mkdir -p /mnt/ro
mount -t virtiofs e2e-ro /mnt/ro || { echo "<mount failed>"; exit 10; }
echo "<read=$(cat /mnt/ro/keep)>"
echo changed >/mnt/ro/keep; echo "<write=$?>"
echo new >/mnt/ro/new-file; echo "<create=$?>"
mkdir /mnt/ro/new-dir; echo "<mkdir=$?>"
rm /mnt/ro/keep; echo "<rm=$?>"
rmdir /mnt/ro/subdir; echo "<rmdir=$?>"
mv /mnt/ro/keep /mnt/ro/moved; echo "<mv=$?>"
ln -s keep /mnt/ro/link; echo "<symlink=$?>"
touch /mnt/ro/keep; echo "<touch=$?>"
echo "<guest done>"
EOF
  guest ro run --root="$PWD/root" --virtiofs="e2e-ro:$PWD/ro:ro" -- /bin/sh /e2e.sh
  expect_rc ro 0
  expect_line ro "<read=original>"
  expect_line ro "<guest done>"
  for op in write create mkdir rm rmdir mv symlink touch; do
    ! has ro.txt "^<$op=0>" || fail "'$op' succeeded on the read-only share"
  done
  n=$(grep -a -c 'Read-only file system' ro.txt)
  [ "$n" -ge 8 ] || fail "only $n of 8 refused writes say 'Read-only file system' (EROFS): $(excerpt ro.txt 600)"
  [ "$(cat ro/keep)" = original ] || fail "the host file changed to '$(cat ro/keep)'"
  [ "$(ls ro | tr '\n' ' ')" = "keep subdir " ] || fail "the read-only share now holds: $(ls ro | tr '\n' ' ')"
}

register_split files_64mib
case_files_64mib() {
  copy_root root || fail "cannot copy the busybox root"
  cat >root/e2e.sh <<'EOF'
dd if=/dev/urandom of=/big.bin bs=1M count=64 2>/dev/null || exit 10
echo "<sum=$(sha256sum /big.bin | cut -d' ' -f1)>"
EOF
  guest big run --root="$PWD/root" --mem=512 -- /bin/sh /e2e.sh
  expect_rc big 0
  want=$(sed -n 's/^<sum=\([0-9a-f]*\)>$/\1/p' big.txt)
  [ -n "$want" ] || fail "the guest printed no checksum: $(excerpt big.txt)"
  [ "$(stat -c %s root/big.bin 2>/dev/null)" = 67108864 ] ||
    fail "the host sees $(stat -c %s root/big.bin 2>/dev/null) bytes, expected 67108864"
  got=$(sum_file root/big.bin)
  [ "$got" = "$want" ] || fail "sha256 on the host $got differs from the guest's $want"
}

register_split escape_share
case_escape_share() {
  secret="host-secret-$$-$(date +%s)"
  # The share is $PWD/up/case/root; a marker file sits on each of the three levels above it,
  # and symlinks the host placed in the share point out of it, absolute and relative.
  mkdir -p up/case
  copy_root up/case/root || fail "cannot copy the busybox root"
  r=$PWD/up/case/root
  for o in up/case up .; do echo "$secret" >"$o/outside-marker"; done
  mkdir "$r/sub" "$r/sub/deeper"
  # A positive control: the same paths reach a marker inside the share (/.. is / there),
  # so the reads below do work and the check is not vacuous.
  echo "inside-$secret" >"$r/inside-marker"
  ln -s "$PWD" "$r/esc-abs-dir"
  ln -s "$PWD/outside-marker" "$r/esc-abs-file"
  ln -s /etc "$r/esc-etc"
  ln -s ../.. "$r/esc-up"
  ln -s ../outside-marker "$r/esc-up-file"
  ln -s ../../outside-marker "$r/sub/esc-up-deep"
  printf "HOSTDIR='%s'\n" "$PWD" >"$r/e2e.sh"
  cat >>"$r/e2e.sh" <<'EOF'
for p in /../outside-marker /../../outside-marker /../../../outside-marker \
  /../../../../../../../../outside-marker "$HOSTDIR/outside-marker" \
  /esc-abs-dir/outside-marker /esc-abs-file /esc-up/outside-marker /esc-up/../outside-marker \
  /esc-up-file /sub/esc-up-deep /sub/../../outside-marker /sub/deeper/../../../outside-marker \
  /esc-etc/../../outside-marker /esc-up/esc-up/../../outside-marker; do
  cat "$p" 2>/dev/null && echo "<read $p>"
done
( cd /sub/deeper && cat ../../../outside-marker ../../../../outside-marker 2>/dev/null )
ls -a /.. /../.. /esc-up /esc-abs-dir 2>&1
# `..` through a bind mount of a directory of the share.
mkdir -p /mnt/bind
mount --bind /sub /mnt/bind || echo "<bind failed>"
for p in /mnt/bind/../outside-marker /mnt/bind/../../outside-marker /mnt/bind/esc-up-deep \
  /mnt/bind/deeper/../../../outside-marker /mnt/bind/../../../../outside-marker; do
  cat "$p" 2>/dev/null && echo "<read $p>"
done
( cd /mnt/bind/deeper && cat ../../../outside-marker ../../../../outside-marker 2>/dev/null )
ls -a /mnt/bind/.. /mnt/bind/../.. 2>&1
for p in /../inside-marker /esc-up/inside-marker /sub/deeper/../../../inside-marker \
  /mnt/bind/deeper/../../../inside-marker /mnt/bind/../../inside-marker; do
  echo "<control $p: $(cat "$p" 2>&1)>"
done
# Writing through the escapes must not create anything outside the share.
echo pwned >/esc-up/pwned-1 2>/dev/null
echo pwned >/esc-up-file 2>/dev/null
echo pwned >/../pwned-2 2>/dev/null
echo pwned >/mnt/bind/../../pwned-3 2>/dev/null
echo pwned >/esc-abs-dir/pwned-4 2>/dev/null
echo "<guest done>"
EOF
  guest esc run --root="$r" -- /bin/sh /e2e.sh
  expect_line esc "<guest done>"
  for p in /../inside-marker /esc-up/inside-marker /sub/deeper/../../../inside-marker \
    /mnt/bind/deeper/../../../inside-marker /mnt/bind/../../inside-marker; do
    expect_line esc "<control $p: inside-$secret>"
  done
  if grep -a -v '^<control ' esc.txt | grep -a -q -F -e "$secret"; then
    fail "the guest read a host file outside the share: $(grep -a -v '^<control ' esc.txt | grep -a -B2 -F -e "$secret" | tr '\n' '|' | head -c 400)"
  fi
  ! has esc.txt '^<read ' || fail "the guest read: $(grep -a '^<read ' esc.txt | tr '\n' ' ')"
  for o in up/case up .; do
    [ "$(cat "$o/outside-marker")" = "$secret" ] || fail "the guest overwrote $PWD/$o/outside-marker"
    for n in 1 2 3 4; do
      [ ! -e "$o/pwned-$n" ] || fail "the guest created $PWD/$o/pwned-$n outside the share"
    done
  done
  expect_rc esc 0
}
