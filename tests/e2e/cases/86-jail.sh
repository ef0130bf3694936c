# Issue #18: the share jail under race. For a minute a guest swaps a directory with a symlink
# to / (rename, rename, rename) while another guest loop reads and writes through the swapped
# name, through `..` chains, through symlinks the host left in the share (absolute and
# relative, both aimed outside it) and through /proc/self/fd. A canary file beside the share
# on the host must never be read (its text never reaches the guest) nor written (its bytes
# and its mtime are unchanged after the run), and no file outside the share appears.

register jail_race_canary
case_jail_race_canary() {
  copy_root root || fail "cannot copy the busybox root"
  printf 'CANARY-OUTSIDE-THE-SHARE\n' >canary
  touch -d '2001-02-03 04:05:06' canary
  before=$(stat -c '%s %Y %i' canary)
  ls -a . | grep -v -x -e 'outside\..*' -e want -e 'jail\..*' >outside.before
  mkdir root/race
  # Symlinks the host made, aimed outside the share: the guest's VFS resolves them in the
  # guest, where the host path does not exist and `..` stops at the share's root.
  ln -s "$PWD" root/race/hostabs
  ln -s ../../.. root/race/hostrel
  cat >root/e2e.sh <<'EOS'
cd /race || exit 10
mkdir d && echo inside >d/f || exit 11
ln -s / l || exit 12
ln -s ../../../../.. up || exit 13
end=$(($(date +%s) + 60))
(
  while [ "$(date +%s)" -lt "$end" ]; do
    mv d t 2>/dev/null; mv l d 2>/dev/null; mv d l 2>/dev/null; mv t d 2>/dev/null
  done
) &
swapper=$!
n=0
seen=0
exec 3</race
while [ "$(date +%s)" -lt "$end" ]; do
  for p in d/f d/canary d/../canary d/../../canary d/../../../canary up/canary l/../canary \
    hostabs/canary hostrel/canary hostrel/../canary /proc/self/fd/3/../canary \
    /proc/self/cwd/../../canary /../../canary; do
    case "$(cat "$p" 2>/dev/null)" in *CANARY*) seen=$((seen + 1)) ;; esac
    echo guest-wrote >>"$p" 2>/dev/null
  done
  n=$((n + 1))
done
wait $swapper
echo "<rounds=$((n > 0))>"
echo "<canary-seen=$seen>"
EOS
  VM_TIMEOUT=200
  guest jail run --root="$PWD/root" -- /bin/sh /e2e.sh
  expect_rc jail 0
  expect_line jail '<rounds=1>'
  expect_line jail '<canary-seen=0>'
  printf 'CANARY-OUTSIDE-THE-SHARE\n' >want
  cmp -s want canary || fail "the canary outside the share changed: $(od -c canary | head -3)"
  [ "$(stat -c '%s %Y %i' canary)" = "$before" ] || fail "the canary's size, mtime or inode changed"
  ls -a . | grep -v -x -e 'outside\..*' -e want -e 'jail\..*' >outside.now
  diff outside.before outside.now >outside.diff ||
    fail "files appeared beside the share: $(excerpt outside.diff)"
  # What the guest wrote landed inside (root/canary comes from the writes through `..`).
  has root/canary '^guest-wrote$' || fail "no guest write reached the share's own root/canary"
}
