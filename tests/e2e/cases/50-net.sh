# Issue #5: networking without a network device. With TSI (the implicit vsock device) the
# guest's inet sockets become host sockets: it reaches servers on the host's 127.0.0.1 and
# its listeners appear on mapped host ports. Vsock ports bridged to host unix sockets carry
# bulk data both ways, under credit flow control, with several connections at once.
#
# Host and guest sides both use netio (tests/e2e/guest/netio.c, static: it runs in the busybox
# guest root as /bin/netio). Data is generated from a seed and both ends print
# "<sent|recv|xfer BYTES HASH>"; `netio hash BYTES SEED` gives the value to expect. Host-side
# servers run in the background and are killed when the case ends, whatever its outcome.

NETIO=${NETIO:-$HERE/netio}
NET_PIDS=""

# A private busybox root with netio in it.
net_root() {
  copy_root "$1" || fail "cannot copy the busybox root"
  cp "$NETIO" "$1/bin/netio" || fail "cannot copy netio into the guest root"
}

# Remember a background process to kill when the case ends; install the trap once.
net_bg() {
  [ -n "$NET_PIDS" ] || trap net_cleanup EXIT
  NET_PIDS="$NET_PIDS $1"
}

net_cleanup() {
  for _p in $NET_PIDS; do kill "$_p" 2>/dev/null; done
  # A VM still running (its case failed early): kill it through its pid file.
  for _f in ./*.pid; do
    [ -s "$_f" ] && kill -KILL "$(cat "$_f")" 2>/dev/null
  done
  return 0
}

# vm_bg NAME VMTEST-ARGS...: start a VM in the background (pid file NAME.pid, VM process id
# in BG_PID); vm_wait NAME: wait for it, set $RC and make guest()'s checks.
vm_bg() {
  _n=$1
  shift
  rm -f "$_n.vmrc" "$_n.pid"
  _m=$1
  shift
  (
    vm "$_n" "$_m" --pid-file="$PWD/$_n.pid" "$@"
    echo "$RC" >"$_n.vmrc"
  ) &
  BG_PID=$!
  net_bg "$BG_PID"
}

vm_wait() {
  wait "$BG_PID"
  RC=$(cat "$1.vmrc" 2>/dev/null) || RC=124
  [ -n "$RC" ] || RC=124
  rm -f "$1.pid"
  guest_checks "$1"
}

# wait_for FILE ERE SECS: until FILE has a match, for at most SECS; false on time-out or when
# the background VM ended without it.
wait_for() {
  _i=$(($3 * 5))
  while [ "$_i" -gt 0 ]; do
    has "$1" "$2" && return 0
    if [ -n "${BG_PID:-}" ] && ! kill -0 "$BG_PID" 2>/dev/null; then
      has "$1" "$2"
      return
    fi
    sleep 0.2
    _i=$((_i - 1))
  done
  return 1
}

net_hash() { "$NETIO" hash "$1" "$2" | sed 's/^<data [0-9]* \(.*\)>$/\1/'; }

vm_rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null; }

# (busybox 1.35's wget crashes with -T: guests bound it with timeout(1) where needed.)
# A file of a few hundred KiB served by busybox httpd on the host's 127.0.0.1:PORT; checks
# from the host side first that the server answers (so a guest failure is the guest's).
net_httpd() {
  mkdir -p www
  dd if=/dev/urandom of=www/blob bs=1k count=384 2>/dev/null || fail "cannot write www/blob"
  httpd -f -p "127.0.0.1:$1" -h "$PWD/www" &
  net_bg $!
  _i=0
  until wget -q -O host.blob "http://127.0.0.1:$1/blob" 2>/dev/null; do
    _i=$((_i + 1))
    [ "$_i" -lt 25 ] || fail "busybox httpd on the host's 127.0.0.1:$1 does not answer"
    sleep 0.2
  done
  cmp -s host.blob www/blob || fail "the host's own wget got a different body (httpd problem)"
}

register_split net_wget
case_net_wget() {
  net_root root
  net_httpd 18080
  want=$(sha256sum <www/blob | cut -d' ' -f1)
  guest wget run --root="$PWD/root" -- /bin/sh -c \
    'wget -q -O /tmp/blob http://127.0.0.1:18080/blob; echo "<wget=$?>";
     echo "<size=$(wc -c </tmp/blob)>"; echo "<sum=$(sha256sum </tmp/blob | cut -d" " -f1)>"'
  expect_line wget "<wget=0>"
  expect_line wget "<size=$(wc -c <www/blob)>"
  expect_line wget "<sum=$want>"
  expect_rc wget 0
}

register_split net_udp_echo
case_net_udp_echo() {
  net_root root
  "$NETIO" udp-echo 18081 >echo.txt 2>&1 &
  net_bg $!
  wait_for echo.txt '<udp-listening>' 5 || fail "the host UDP echo server did not start: $(excerpt echo.txt)"
  msg="e2e-udp-$$-round-trip"
  guest udp run --root="$PWD/root" -- /bin/netio udp-send 127.0.0.1 18081 "$msg"
  expect_line udp "<udp-reply $msg>"
  expect_rc udp 0
}

# The guest also listens on port 81, which the map does not name: with a map, only mapped
# ports are exposed (upstream), so the host's 127.0.0.1:81 must refuse.
register_split net_port_map
case_net_port_map() {
  net_root root
  msg="e2e-port-map-$$"
  vm_bg pm run --root="$PWD/root" --port-map=8080:80 -- /bin/sh -c \
    'nc -l -p 81 </dev/null >/tmp/got81 & n=$!; sleep 1; echo "<ready>"
     nc -l -p 80 </dev/null >/tmp/got; echo "<nc=$?>"; echo "<got=$(cat /tmp/got)>"
     kill $n; echo "<got81=$(cat /tmp/got81)>"'
  wait_for pm.out '<ready>' 60 || fail "the guest never started: $(excerpt pm.err)"
  # The host port exists once the guest listens: retry the connection for a while.
  timeout 60 "$NETIO" connect tcp:127.0.0.1:8080 --retry=30 msg "$msg" >host.txt 2>&1 ||
    fail "the host could not send to 127.0.0.1:8080: $(excerpt host.txt)"
  # Port 81 has been listening in the guest for a while now.
  if timeout 20 "$NETIO" connect tcp:127.0.0.1:81 msg "not-for-81" >host81.txt 2>&1; then
    fail "the unmapped guest port 81 was reachable on the host's 127.0.0.1:81"
  fi
  vm_wait pm
  expect_line pm "<got=$msg>"
  expect_line pm "<nc=0>"
  expect_line pm "<got81=>"
  expect_rc pm 0
}

BIG=67108864

# listen=false: the guest connects to vsock port 5001, the VMM to the host's unix listener.
register_split net_vsock_guest_to_host
case_net_vsock_guest_to_host() {
  net_root root
  h=$(net_hash "$BIG" 11)
  "$NETIO" listen "unix:$PWD/h.sock" recv >host.txt 2>&1 &
  net_bg $!
  wait_for host.txt '<listening>' 5 || fail "the host listener did not start: $(excerpt host.txt)"
  guest up run --root="$PWD/root" --vsock-port="5001:$PWD/h.sock" -- \
    /bin/netio connect vsock:2:5001 send "$BIG" 11
  expect_line up "<sent $BIG $h>"
  grep -q -x -F "<recv $BIG $h>" host.txt ||
    fail "the host received '$(grep '<recv' host.txt)', expected '<recv $BIG $h>'"
  expect_rc up 0
}

# listen=true: the VMM listens on the unix path; the host connects and sends to the guest.
register_split net_vsock_host_to_guest
case_net_vsock_host_to_guest() {
  net_root root
  h=$(net_hash "$BIG" 12)
  vm_bg down run --root="$PWD/root" --vsock-port="5002:$PWD/g.sock:listen" -- \
    /bin/netio listen vsock:5002 recv
  wait_for down.out '<listening>' 60 || fail "the guest listener did not start: $(excerpt down.out)"
  [ -S g.sock ] || fail "the VMM did not create the listening socket g.sock"
  timeout 100 "$NETIO" connect "unix:$PWD/g.sock" --retry=10 send "$BIG" 12 >host.txt 2>&1 ||
    fail "the host sender failed: $(excerpt host.txt)"
  vm_wait down
  expect_line down "<recv $BIG $h>"
  grep -q -x -F "<sent $BIG $h>" host.txt || fail "the host sender says '$(excerpt host.txt)'"
  expect_rc down 0
}

# A guest that accepts and then does not read: the host keeps pushing into the listen=true
# bridge; the VMM's resident memory must stay within a small bound (vsock credit stops the
# flow), and once the guest reads again every byte arrives.
register_split net_vsock_backpressure
case_net_vsock_backpressure() {
  net_root root
  push=268435456
  hold=30
  h=$(net_hash "$push" 13)
  vm_bg bp run --root="$PWD/root" --vsock-port="5003:$PWD/bp.sock:listen" -- \
    /bin/netio listen vsock:5003 hold "$hold"
  wait_for bp.out '<listening>' 60 || fail "the guest listener did not start: $(excerpt bp.out)"
  pid=$(cat bp.pid 2>/dev/null)
  rss0=$(vm_rss_kib "$pid")
  [ -n "$rss0" ] || fail "no VmRSS for the VMM process '$pid'"
  timeout 300 "$NETIO" connect "unix:$PWD/bp.sock" --retry=10 send "$push" 13 >host.txt 2>&1 &
  sender=$!
  net_bg "$sender"
  wait_for bp.out '<holding>' 30 || fail "the guest did not accept the connection: $(excerpt bp.out)"
  max=$rss0
  i=0
  while [ "$i" -lt $((hold - 5)) ] && kill -0 "$sender" 2>/dev/null; do
    r=$(vm_rss_kib "$pid")
    [ -n "$r" ] && [ "$r" -gt "$max" ] && max=$r
    sleep 1
    i=$((i + 1))
  done
  ! has bp.out '<recv ' || fail "the guest finished reading before its hold ended"
  kill -0 "$sender" 2>/dev/null ||
    fail "the host sender ended while the guest was not reading: $(excerpt host.txt)"
  growth=$((max - rss0))
  echo "#   note: net_vsock_backpressure: VMM VmRSS ${rss0} KiB before, ${max} KiB at most while the guest held (+${growth} KiB)"
  [ "$growth" -lt 65536 ] ||
    fail "the VMM's VmRSS grew by ${growth} KiB (from $rss0 to $max) while the guest did not read"
  wait "$sender" || fail "the host sender failed after the guest read again: $(excerpt host.txt)"
  vm_wait bp
  expect_line bp "<recv $push $h>"
  expect_rc bp 0
}

# listen=true with 4 host clients at once, each echoing its own payload through the guest.
register_split net_vsock_concurrent_listen
case_net_vsock_concurrent_listen() {
  net_root root
  vm_bg cl run --root="$PWD/root" --vsock-port="5004:$PWD/c.sock:listen" -- \
    /bin/netio listen vsock:5004 --count=4 echo
  wait_for cl.out '<listening>' 60 || fail "the guest listener did not start: $(excerpt cl.out)"
  pids=""
  for i in 1 2 3 4; do
    timeout 100 "$NETIO" connect "unix:$PWD/c.sock" --retry=10 xfer 524288 $((20 + i)) \
      >"c$i.txt" 2>&1 &
    pids="$pids $!"
  done
  for p in $pids; do wait "$p"; done
  for i in 1 2 3 4; do
    want="<xfer 524288 $(net_hash 524288 $((20 + i)))>"
    grep -q -x -F "$want" "c$i.txt" ||
      fail "host client $i got '$(excerpt "c$i.txt")', expected '$want'"
  done
  vm_wait cl
  expect_rc cl 0
}

# listen=false with 4 guest clients at once to one host unix listener that echoes.
register_split net_vsock_concurrent_connect
case_net_vsock_concurrent_connect() {
  net_root root
  "$NETIO" listen "unix:$PWD/e.sock" --count=4 echo >host.txt 2>&1 &
  net_bg $!
  wait_for host.txt '<listening>' 5 || fail "the host listener did not start: $(excerpt host.txt)"
  guest cc run --root="$PWD/root" --vsock-port="5005:$PWD/e.sock" -- /bin/sh -c \
    'for i in 1 2 3 4; do /bin/netio connect vsock:2:5005 xfer 524288 $((30 + i)) >/tmp/x$i 2>&1 & done
     wait; for i in 1 2 3 4; do echo "<$i $(cat /tmp/x$i)>"; done'
  for i in 1 2 3 4; do
    expect_line cc "<$i <xfer 524288 $(net_hash 524288 $((30 + i)))>>"
  done
  expect_rc cc 0
}

# krun_disable_implicit_vsock + krun_add_vsock(0): no TSI, so the guest cannot reach the host's
# HTTP server (net_wget shows it can with TSI); a vsock port bridge still works.
register_split net_tsi_disabled
case_net_tsi_disabled() {
  net_root root
  net_httpd 18083
  "$NETIO" listen "unix:$PWD/n.sock" echo >host.txt 2>&1 &
  net_bg $!
  wait_for host.txt '<listening>' 5 || fail "the host listener did not start: $(excerpt host.txt)"
  guest nt run --root="$PWD/root" --disable-implicit-vsock --add-vsock=0 \
    --vsock-port="5006:$PWD/n.sock" -- /bin/sh -c \
    'timeout 20 wget -q -O /tmp/blob http://127.0.0.1:18083/blob; echo "<wget=$?>";
     /bin/netio connect vsock:2:5006 xfer 65536 41; echo "<netio=$?>"'
  has nt.txt '^<wget=[0-9]+>$' || fail "the guest's wget did not finish: $(excerpt nt.txt)"
  ! has nt.txt '^<wget=0>$' || fail "the guest's wget reached the host's server with TSI disabled"
  expect_line nt "<xfer 65536 $(net_hash 65536 41)>"
  expect_line nt "<netio=0>"
  expect_rc nt 0
}

# krun_set_tsi_scope (microsandbox's fork): the guest's TSI interface carries the given IP,
# with the subnet's prefix when the IP lies in it (else /32); scope 1 lets guest sockets reach
# only that subnet (a refused connect is EACCES, "Permission denied"); and with an IP, a guest
# listener is exposed on the host only when bound to that IP or the wildcard.
register_split net_tsi_scope_ip
case_net_tsi_scope_ip() {
  net_root root
  net_httpd 18084
  # The subnet holds the IP but not the host's 127.0.0.1: the fetch is refused.
  guest in run --root="$PWD/root" --tsi-scope=1:10.0.2.15:10.0.2.0/24 -- /bin/sh -c \
    'echo "<$(ip -4 addr show dev dummy0 | grep -o "inet [0-9./]*")>"
     timeout 20 wget -q -O /tmp/blob http://127.0.0.1:18084/blob 2>/tmp/err; echo "<wget=$?>"
     echo "<err=$(cat /tmp/err)>"'
  expect_line in "<inet 10.0.2.15/24>"
  expect_line in "<wget=1>"
  expect_line in "<err=wget: can't connect to remote host (127.0.0.1): Permission denied>"
  # The subnet is the host's loopback, which the IP is not in: /32, and the fetch works; the
  # guest listens on 127.0.0.1:8282 (not its IP: not exposed) and on its IP's :8283 (exposed
  # on the host's wildcard, so the host reaches it through 127.0.0.1).
  vm_bg out run --root="$PWD/root" --tsi-scope=1:10.0.2.15:127.0.0.0/8 -- /bin/sh -c \
    'echo "<$(ip -4 addr show dev dummy0 | grep -o "inet [0-9./]*")>"
     wget -q -O /tmp/blob http://127.0.0.1:18084/blob; echo "<wget=$?>"
     echo "<sum=$(sha256sum </tmp/blob | cut -d" " -f1)>"
     /bin/netio listen tcp:127.0.0.1:8282 recv >/tmp/l82 2>&1 & n=$!
     sleep 1; echo "<ready>"
     /bin/netio listen tcp:10.0.2.15:8283 recv; echo "<netio=$?>"
     kill $n 2>/dev/null; echo "<l82=$(grep -c "<recv" /tmp/l82)>"'
  wait_for out.out '<ready>' 60 || fail "the guest never got to its listeners: $(excerpt out.err)"
  timeout 60 "$NETIO" connect tcp:127.0.0.1:8283 --retry=30 send 65536 77 >host.txt 2>&1 ||
    fail "the host could not reach the guest's listener on its TSI IP: $(excerpt host.txt)"
  if timeout 20 "$NETIO" connect tcp:127.0.0.1:8282 send 16 1 >host82.txt 2>&1; then
    fail "the guest's listener on 127.0.0.1 (not its TSI IP) was exposed on the host"
  fi
  vm_wait out
  expect_line out "<inet 10.0.2.15/32>"
  expect_line out "<wget=0>"
  expect_line out "<sum=$(sha256sum <www/blob | cut -d' ' -f1)>"
  expect_line out "<recv 65536 $(net_hash 65536 77)>"
  expect_line out "<netio=0>"
  expect_line out "<l82=0>"
  expect_rc out 0
}
