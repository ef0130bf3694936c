# Issue #17: the Rust API (crates/krun-vm) in one process, through vm_api_lab (its example
# crates/krun-vm/examples/vm_api_lab.rs, staged by tests/e2e/run). The program prints one
# line per fact; the cases compare them and the guests' files exactly.

# api_lab NAME ARGS...: run vm_api_lab under a timeout; stdout in NAME.txt, stderr in
# NAME.err, status in $RC. The VMs' own stdio go to files in the case directory.
api_lab() {
  _name=$1
  shift
  timeout -k 10 "${API_LAB_TIMEOUT:-$VM_TIMEOUT}" "$HERE/vm_api_lab" "$@" </dev/null \
    >"$_name.txt" 2>"$_name.err"
  RC=$?
  timed_out "$RC" && fail "vm_api_lab $1 did not end in time: $(excerpt "$_name.txt") $(excerpt "$_name.err")"
  [ "$RC" -eq 0 ] || fail "vm_api_lab $1 exited $RC: $(excerpt "$_name.err")"
}

# file_is FILE TEXT: FILE holds exactly TEXT and a newline.
file_is() {
  printf '%s\n' "$2" >"$1.want"
  cmp -s "$1" "$1.want" || fail "$1 is '$(excerpt "$1" 200)', expected '$2'"
}

# field NAME LINE_PREFIX KEY: the value of KEY=VALUE on the line of NAME.txt starting so.
field() {
  grep -a "^$2" "$1.txt" | head -n 1 | tr ' ' '\n' | sed -n "s/^$3=//p"
}

register rust_api_two_vms_concurrent
case_rust_api_two_vms_concurrent() {
  copy_root root_a || fail "cannot copy the guest root"
  copy_root root_b || fail "cannot copy the guest root"
  # Each guest marks its own root: separate roots, and the marks cannot cross.
  api_lab both concurrent "$PWD/root_a" "$PWD/root_b" "$PWD"
  expect_line both "a: exited with status 3"
  expect_line both "b: exited with status 5"
  expect_line both "overlap: yes"
  file_is a.out out-a
  file_is a.err err-a
  file_is b.out out-b
  file_is b.err err-b
  [ "$(field both before: threads)" = "$(field both after: threads)" ] ||
    fail "threads before and after differ: $(excerpt both.txt)"
  file_is root_a/mark a
  file_is root_b/mark b
}

register rust_api_sequential_releases
case_rust_api_sequential_releases() {
  root=$(guest_root) || fail "no guest root"
  API_LAB_TIMEOUT=500 api_lab seq sequential "$root" 5 "$PWD"
  for i in 1 2 3 4 5; do
    grep -a -q "^run$i: exited with status $i fds=" seq.txt ||
      fail "no line 'run$i: exited with status $i fds=...': $(excerpt seq.txt)"
    [ "$i" -eq 1 ] || file_is "run$i.out" "run$i"
  done
  # run1 had workdir /tmp, uid 1234, gid 4321 and RLIMIT_NOFILE 100:200.
  file_is run1.out "run1 /tmp 1234:4321 100"
  fd0=$(field seq before: fds) t0=$(field seq before: threads)
  fd1=$(field seq run1: fds) t1=$(field seq run1: threads) rss1=$(field seq run1: rss_kib)
  fd3=$(field seq run5: fds) t3=$(field seq run5: threads) rss3=$(field seq run5: rss_kib)
  [ -n "$fd0" ] && [ -n "$fd3" ] && [ -n "$rss3" ] || fail "missing figures: $(excerpt seq.txt)"
  # One fd may stay: the process-wide SIGINT eventfd the consoles share (terminal.rs).
  [ "$fd1" -eq "$fd3" ] || fail "fds after run 1: $fd1, after run 5: $fd3"
  [ "$fd1" -ge "$fd0" ] && [ "$fd1" -le $((fd0 + 1)) ] || fail "fds before: $fd0, after run 1: $fd1"
  [ "$t0" -eq "$t1" ] && [ "$t1" -eq "$t3" ] || fail "threads before/after run 1/run 5: $t0/$t1/$t3"
  [ "$rss3" -le $((rss1 + 16384)) ] || fail "RSS grew from $rss1 KiB after run 1 to $rss3 KiB after run 5"
  echo "# fds $fd0 -> $fd1 -> $fd3, threads $t0 -> $t1 -> $t3, RSS $rss1 -> $rss3 KiB"
}

# Issue #17's figure: 1000 short VMs in a row in one process through the Rust API. Not in the
# default list: at about 5 s a VM in the lab, 1000 take 85 minutes, past a lab boot's 2400 s
# (run it by name with KRUN_E2E_LAB_TIMEOUT=6000, or fewer runs with KRUN_E2E_SOAK_RUNS).
# Every run must end with its own status and stdout; fds and threads after the last run equal
# those after the first, and RSS grows by at most 16 MiB. Progress goes to the console every
# 50 runs, so the lab's stall watchdog sees it alive.
case_rust_api_1000_runs() {
  root=$(guest_root) || fail "no guest root"
  n=${KRUN_E2E_SOAK_RUNS:-1000}
  timeout -k 10 $((n * 100 + 60)) "$HERE/vm_api_lab" soak "$root" "$n" "$PWD" </dev/null >soak.txt
  RC=$?
  timed_out "$RC" && fail "vm_api_lab soak did not end in time: $(excerpt soak.txt)"
  [ "$RC" -eq 0 ] || fail "vm_api_lab soak exited $RC: $(excerpt soak.txt)"
  fd1=$(field soak "run1: fds" fds) t1=$(field soak "run1: fds" threads) rss1=$(field soak "run1: fds" rss_kib)
  fdn=$(field soak "run$n: fds" fds) tn=$(field soak "run$n: fds" threads) rssn=$(field soak "run$n: fds" rss_kib)
  secs=$(field soak "run$n: fds" secs)
  [ -n "$fd1" ] && [ -n "$fdn" ] && [ -n "$rssn" ] || fail "missing figures: $(excerpt soak.txt)"
  echo "# $n runs in ${secs}s: fds $fd1 -> $fdn, threads $t1 -> $tn, RSS $rss1 -> $rssn KiB"
  grep -a -E "^run[0-9]+: (FAILED|  )" soak.txt | head -n 20 | sed "s/^/#   /"
  grep -a -q -x -F "soak: runs=$n failed=0 " soak.txt || fail "$(grep -a '^soak: ' soak.txt)"
  [ "$fdn" -eq "$fd1" ] && [ "$tn" -eq "$t1" ] || fail "fds $fd1 -> $fdn, threads $t1 -> $tn"
  [ "$rssn" -le $((rss1 + 16384)) ] || fail "RSS grew from $rss1 KiB after run 1 to $rssn KiB"
}

register rust_api_stop_handle
case_rust_api_stop_handle() {
  root=$(guest_root) || fail "no guest root"
  copy_root keep || fail "cannot copy the guest root"
  api_lab stop stop "$root" "$PWD/keep" "$PWD"
  expect_line stop "stop before run: stopped on request"
  expect_line stop "early outcome: Some(Ended(Stopped))"
  expect_line stop "dropped outcome: Some(NotRun)"
  expect_line stop "guests started: yes"
  expect_line stop "still running: yes"
  expect_line stop "stop while running: stopped on request"
  expect_line stop "late outcome: Some(Ended(Stopped))"
  expect_line stop "stopped within 30s: yes"
  # Stopping one VM leaves the other running: it ends by itself, with its own status.
  expect_line stop "other still running: yes"
  expect_line stop "other: exited with status 9"
  file_is late.out started
  file_is keep.out started
  fd0=$(field stop before: fds) t0=$(field stop before: threads)
  fd1=$(field stop after: fds) t1=$(field stop after: threads)
  [ "$t0" -eq "$t1" ] || fail "threads before: $t0, after: $t1"
  [ "$fd1" -ge "$fd0" ] && [ "$fd1" -le $((fd0 + 1)) ] || fail "fds before: $fd0, after: $fd1"
}

register rust_api_shutdown_request
case_rust_api_shutdown_request() {
  root=$(guest_root) || fail "no guest root"
  api_lab term shutdown "$root" "$PWD"
  expect_line term "guest started: yes"
  expect_line term "ended within 60s: yes"
  expect_line term "shutdown: exited with status 42"
  printf 'started\ngot-term\n' >term.want
  cmp -s term.out term.want || fail "term.out is '$(excerpt term.out 200)', expected started, got-term"
}
