# Issue #18: an untrusted guest cannot hurt the host. A guest that opens files on the
# virtio-fs root without limit gets EMFILE from the VMM's fd budget (docs/limits.md), the
# VMM's own fd count stays under RLIMIT_NOFILE, and the share still works once the guest lets
# go of its files.

# How many fds process PID holds.
ut_count_fds() { ls "/proc/$1/fd" 2>/dev/null | wc -l; }

# Waits (up to 120 s) for the line pattern $2 in $1 while the background VM $3 runs;
# succeeds once it is there.
await_marker() {
  _am=0
  while [ "$_am" -lt 600 ] && ! has "$1" "$2"; do
    kill -0 "$3" 2>/dev/null || break
    sleep 0.2
    _am=$((_am + 1))
  done
  has "$1" "$2"
}

register untrusted_fs_open_flood
case_untrusted_fs_open_flood() {
  copy_root root || fail "cannot copy the busybox root"
  mkdir root/flood
  i=0
  while [ "$i" -lt 1200 ]; do
    : >"root/flood/f$i"
    i=$((i + 1))
  done
  # Names built in the shell, not listed: a READDIRPLUS would look every entry up (an fd
  # each) before tail opens any. Counting uses shell globs, not exec: past the cap even an
  # exec's lookup of /bin/ls may fail.
  cat >root/e2e.sh <<'EOF'
ulimit -n 4096 || exit 10
cd /flood || exit 11
set --
i=0
while [ $i -lt 1200 ]; do set -- "$@" "f$i"; i=$((i + 1)); done
tail -f "$@" >/dev/null 2>/flood.err &
t=$!
n=0
while :; do
  sleep 2 || { j=0; while [ $j -lt 20000 ]; do j=$((j + 1)); done; }
  set -- /proc/$t/fd/*
  [ "$#" = "$n" ] && break
  n=$#
done
echo "<guest-open=$n>"
echo "<holding>"
sleep 20 || { j=0; while [ $j -lt 300000 ]; do j=$((j + 1)); done; }
kill $t
wait $t
echo "<emfile=$(grep -c 'Too many open files' /flood.err)>"
printf 'after the flood\n' >/after.txt || exit 12
echo "<done>"
EOF
  # The VMM raises its soft RLIMIT_NOFILE to the hard limit; 1024 makes the cap 896.
  ulimit -S -n 1024 && ulimit -H -n 1024 || fail "cannot lower RLIMIT_NOFILE"
  (
    vm flood run --root="$PWD/root" --pid-file="$PWD/flood.pid" --rlimit=RLIMIT_NOFILE=4096:4096 \
      -- /bin/sh /e2e.sh
    echo "$RC" >flood.vmrc
  ) &
  bg=$!
  await_marker flood.out '<holding>' "$bg" || { wait "$bg"; fail "the guest did not reach its flood: $(excerpt flood.out)"; }
  pid=$(cat flood.pid 2>/dev/null)
  [ -n "$pid" ] || { wait "$bg"; fail "no pid file from the VMM"; }
  max=0
  while kill -0 "$bg" 2>/dev/null && ! has flood.out '<emfile='; do
    n=$(ut_count_fds "$pid")
    [ "$n" -gt "$max" ] && max=$n
    sleep 0.2
  done
  wait "$bg"
  RC=$(cat flood.vmrc 2>/dev/null) || RC=124
  guest_checks flood
  echo "#   note: untrusted_fs_open_flood: VMM fds at most $max; guest $(grep -a -o '<guest-open=[0-9]*>' flood.txt)"
  expect_rc flood 0
  expect_line flood '<done>'
  has flood.txt '^<emfile=[1-9][0-9]*>' || fail "the guest never got EMFILE: $(excerpt flood.txt)"
  [ "$max" -ge 850 ] || fail "the VMM held only $max fds: the flood did not reach the cap"
  [ "$max" -le 912 ] || fail "the VMM held $max fds, past the cap of 896 (+16 of its own)"
  printf 'after the flood\n' >want.txt
  cmp -s want.txt root/after.txt || fail "the share did not work after the flood: $(od -c root/after.txt | head -2)"
}

# A guest that opens vsock connections without limit to a host unix service that accepts
# them all and never reads, and writes into each until its credit is used. The muxer caps
# connections at 2048 (muxer::MAX_CONNECTIONS) and each one's buffered guest data at the
# 256 KiB credit (connection::BUF_ALLOC), so the VMM's VmRSS may grow by at most
#   guest RAM (256 MiB, all of it newly touched at worst)
#   + 2048 x 256 KiB of buffered data (512 MiB)
#   + 2048 x 16 KiB of bookkeeping per connection (32 MiB: the entry, epoll, allocator slack)
# over what it was before the flood (docs/limits.md). The 2049th connect and every one after
# it gets a reset (ECONNRESET) and never reaches the host service; once the guest closed its
# connections, a new one carries 64 KiB again.
UT_VF_CONNS=2048
UT_VF_EXTRA=64
ut_vsock_cleanup() {
  [ -z "${ut_wm0:-}" ] || echo "$ut_wm0" >/proc/sys/net/core/wmem_default 2>/dev/null
  for _p in ${ut_pids:-}; do kill "$_p" 2>/dev/null; done
  [ -s vf.pid ] && kill -KILL "$(cat vf.pid)" 2>/dev/null
  return 0
}

ut_rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null; }

register untrusted_vsock_flood
case_untrusted_vsock_flood() {
  t0=$(date +%s)
  copy_root root || fail "cannot copy the busybox root"
  cp "$HERE/vsockflood" "$HERE/netio" root/bin/ || fail "cannot copy vsockflood and netio into the root"
  # 2048 host sockets for the VMM and as many for the sink.
  ulimit -S -n 8192 2>/dev/null || ulimit -n 8192 2>/dev/null
  [ "$(ulimit -n)" -ge 4608 ] || skip "RLIMIT_NOFILE is $(ulimit -n) here: the VMM and the sink need 2048 fds each"
  trap ut_vsock_cleanup EXIT
  # The smallest socket send buffer for the sockets the VMM opens to the sink, so the data
  # the guest writes stays in the VMM (at most its credit per connection) instead of in
  # the host kernel's unix socket buffers (about 208 KiB each by default).
  small=no
  _w0=$(cat /proc/sys/net/core/wmem_default 2>/dev/null)
  if [ -n "$_w0" ] && echo 4608 >/proc/sys/net/core/wmem_default 2>/dev/null; then
    ut_wm0=$_w0
    small=yes
  fi
  "$HERE/vsockflood" sink "$PWD/sink.sock" >sink.txt 2>&1 &
  sink=$!
  "$HERE/netio" listen "unix:$PWD/after.sock" recv >after.txt 2>&1 &
  ut_pids="$sink $!"
  i=0
  until has sink.txt '<listening>' && has after.txt '<listening>'; do
    i=$((i + 1))
    [ "$i" -lt 50 ] || fail "the host listeners did not start: $(excerpt sink.txt) $(excerpt after.txt)"
    sleep 0.2
  done
  cat >root/e2e.sh <<EOS
/bin/vsockflood flood 6001 $UT_VF_EXTRA 327680 30 2
echo "<flood=\$?>"
/bin/netio connect vsock:2:6002 --retry=60 send 65536 51
echo "<after=\$?>"
EOS
  # Boot, 2112 connects, the fill, the hold, the guest's 8 s close timeout, one more connect.
  VM_TIMEOUT=240
  (
    vm vf run --root="$PWD/root" --pid-file="$PWD/vf.pid" --rlimit=RLIMIT_NOFILE=8192:8192 \
      --vsock-port="6001:$PWD/sink.sock" --vsock-port="6002:$PWD/after.sock" -- /bin/sh /e2e.sh
    echo "$RC" >vf.vmrc
  ) &
  bg=$!
  await_marker vf.out '<ready>' "$bg" || { wait "$bg"; fail "the guest did not start its flood: $(excerpt vf.out) $(excerpt vf.err)"; }
  pid=$(cat vf.pid 2>/dev/null)
  [ -n "$pid" ] || { wait "$bg"; fail "no pid file from the VMM"; }
  t_ready=$(($(date +%s) - t0))
  rss0=$(ut_rss_kib "$pid")
  fd0=$(ut_count_fds "$pid")
  [ -n "$rss0" ] || { wait "$bg"; fail "no VmRSS for the VMM process $pid"; }
  max=$rss0 maxfd=$fd0 hold=""
  while kill -0 "$bg" 2>/dev/null && ! has vf.out '<closed>'; do
    r=$(ut_rss_kib "$pid")
    [ -n "$r" ] && [ "$r" -gt "$max" ] && max=$r
    n=$(ut_count_fds "$pid")
    [ "$n" -gt "$maxfd" ] && maxfd=$n
    [ -n "$hold" ] || ! has vf.out '<holding>' || { hold=$r; t_hold=$(($(date +%s) - t0)); }
    sleep 0.5
  done
  t_closed=$(($(date +%s) - t0))
  wait "$bg"
  t_end=$(($(date +%s) - t0))
  RC=$(cat vf.vmrc 2>/dev/null) || RC=124
  [ -n "$RC" ] || RC=124
  kill -TERM "$sink" 2>/dev/null
  wait "$sink"
  ut_vsock_cleanup
  ut_wm0=""
  guest_checks vf
  written=$(sed -n 's/^<written=\([0-9]*\)>$/\1/p' vf.txt)
  growth=$((max - rss0))
  bound=$((262144 + UT_VF_CONNS * 256 + UT_VF_CONNS * 16))
  echo "#   note: untrusted_vsock_flood: VMM VmRSS ${rss0} KiB before, ${hold:-?} KiB holding, ${max} KiB at most (+${growth} KiB, bound +${bound} KiB); fds ${fd0} -> ${maxfd}; small sndbuf: $small; at ${t_ready}s ready, ${t_hold:-?}s holding, ${t_closed}s closed, ${t_end}s ended;" \
    "guest $(grep -a -o -E '<(open|refused|written|full|connect-secs|fill-secs|pace-waits)=[^>]*>' vf.txt | tr -d '\n'); sink $(grep -a -o '<accepted=[0-9]*>' sink.txt)"
  expect_rc vf 0
  expect_line vf '<flood=0>'
  expect_line vf "<open=$UT_VF_CONNS>"
  expect_line vf "<refused=$UT_VF_EXTRA errno=ECONNRESET>"
  expect_line vf '<mixed-errnos=0>'
  expect_line vf '<write-errors=0>'
  grep -q -x -F "<accepted=$UT_VF_CONNS>" sink.txt ||
    fail "the host service saw $(grep -a -o '<accepted=[0-9]*>' sink.txt), expected $UT_VF_CONNS connections: refused ones must not reach it"
  [ "$growth" -le "$bound" ] ||
    fail "the VMM's VmRSS grew by $growth KiB (from $rss0 to $max), past the bound of $bound KiB"
  [ "$maxfd" -le $((fd0 + UT_VF_CONNS + 16)) ] ||
    fail "the VMM held $maxfd fds, past $fd0 + $UT_VF_CONNS connections (+16)"
  # The flood was real: every connection took its whole credit, and with small send buffers
  # the VMM held it (at least half of it shows in VmRSS).
  expect_line vf "<full=$UT_VF_CONNS>"
  if [ "$small" = yes ]; then
    [ "$growth" -ge $((written / 2048)) ] ||
      fail "the VMM's VmRSS grew by only $growth KiB while the guest had $written bytes in its connections"
  fi
  want="<sent 65536 $("$HERE/netio" hash 65536 51 | sed 's/^<data [0-9]* \(.*\)>$/\1/')>"
  expect_line vf "$want"
  expect_line vf '<after=0>'
  grep -q -x -F "<recv 65536 ${want#<sent 65536 }" after.txt ||
    fail "the host received '$(excerpt after.txt)' after the flood"
}
