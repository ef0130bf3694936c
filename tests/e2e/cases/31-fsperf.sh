# shellcheck shell=sh
# virtio-fs request sizing (issue 12): FUSE_INIT must give the guest 1 MiB writes (max_write,
# MAX_PAGES), so a sequential write is a few large WRITE requests rather than one per 4 KiB
# page; the bytes must still be on the host, exactly, when the VM has ended (no sync in the
# guest script: init's final sync and the write-through cache have to be enough).

register_split fs_large_writes
case_fs_large_writes() {
  copy_root root || fail "cannot copy the busybox root"
  head -c 3145728 /dev/urandom >root/r.bin
  want_r=$(sha256sum <root/r.bin | cut -d' ' -f1)
  cat >root/e2e.sh <<'EOS'
dd if=/dev/urandom of=/w.bin bs=1M count=8 2>/dev/null || exit 10
echo "<w=$(sha256sum /w.bin | cut -d' ' -f1)>"
echo 3 >/proc/sys/vm/drop_caches
echo "<r=$(dd if=/r.bin bs=1M 2>/dev/null | sha256sum | cut -d' ' -f1)>"
EOS
  guest big run --log-level=4 --root="$PWD/root" -- /bin/sh /e2e.sh
  expect_rc big 0
  want=$(sed -n 's/^<w=\([0-9a-f]*\)>$/\1/p' big.out)
  [ -n "$want" ] || fail "the guest printed no checksum: $(excerpt big.out)"
  [ "$(stat -c %s root/w.bin 2>/dev/null)" = 8388608 ] ||
    fail "the host sees $(stat -c %s root/w.bin 2>/dev/null) bytes, expected 8388608"
  got=$(sha256sum <root/w.bin | cut -d' ' -f1)
  [ "$got" = "$want" ] || fail "sha256 on the host $got differs from the guest's $want"
  expect_line big "<r=$want_r>"
  # The worker's summary at the end: "op16:COUNT/BYTES" is FUSE_WRITE (opcode 16).
  stats=$(grep -a 'requests served' big.err | head -n 1)
  [ -n "$stats" ] || fail "no request summary in the log: $(excerpt big.err)"
  writes=$(echo "$stats" | sed -n 's/.* op16:\([0-9]*\)\/\([0-9]*\)B.*/\1/p')
  bytes=$(echo "$stats" | sed -n 's/.* op16:\([0-9]*\)\/\([0-9]*\)B.*/\2/p')
  [ -n "$writes" ] || fail "no WRITE requests counted: $stats"
  [ "$bytes" -ge 8388608 ] || fail "WRITE requests carried $bytes bytes, fewer than the 8 MiB written: $stats"
  # 8 writes of 1 MiB; allow a little splitting, but 4 KiB requests would be 2048.
  [ "$writes" -le 32 ] || fail "$writes WRITE requests for 8 MiB (max_write too small?): $stats"
}
