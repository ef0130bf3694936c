# Issue #17: the C extension krunrs_start_return (declared in include/libkrun.h, outside
# upstream's 72 functions): it runs a context's VM and returns the workload's status, and
# the calling C program goes on. tests/e2e/c_return.c runs three VMs in a row and prints its
# fd and thread counts around each; the guests' stdout is its stdout. The third ends while
# its guest's TSI connect is still under way on the host (a listener whose accept queue is
# full): the call returns all the same, with no thread or socket of it left.

register c_return_status_and_release
case_c_return_status_and_release() {
  root=$(guest_root) || fail "no guest root"
  timeout -k 10 "$VM_TIMEOUT" "$HERE/c_return" "$root" </dev/null >cret.out 2>cret.err
  RC=$?
  timed_out "$RC" && fail "c_return did not end in time: $(excerpt cret.out) $(excerpt cret.err)"
  [ "$RC" -eq 0 ] || fail "c_return exited $RC: $(excerpt cret.out) $(excerpt cret.err)"
  # num LINE_START FDS|THREADS: a figure of the line of cret.out that starts so.
  num() { grep -a "^$1 fds=" cret.out | head -n 1 | tr ' ' '\n' | sed -n "s/^$2=//p"; }
  f0=$(num 'vm1: before' fds) t0=$(num 'vm1: before' threads)
  f1=$(num 'vm1: returned 7' fds) t1=$(num 'vm1: returned 7' threads)
  f2=$(num 'vm2: before' fds) t2=$(num 'vm2: before' threads)
  f3=$(num 'vm2: returned 3' fds) t3=$(num 'vm2: returned 3' threads)
  f4=$(num 'vm3: before' fds) t4=$(num 'vm3: before' threads)
  f5=$(num 'vm3: returned 4' fds) t5=$(num 'vm3: returned 4' threads)
  [ -n "$f0" ] && [ -n "$f1" ] && [ -n "$f2" ] && [ -n "$f3" ] && [ -n "$t3" ] &&
    [ -n "$f4" ] && [ -n "$f5" ] && [ -n "$t5" ] ||
    fail "missing lines or figures: $(excerpt cret.out)"
  # Every byte: the guests' own stdout between the program's lines, the statuses 7 and 3,
  # the consumed context refused with -ENOENT, the program's last line.
  printf '%s\n' "vm1: before fds=$f0 threads=$t0" hi "vm1: returned 7 fds=$f1 threads=$t1" \
    "vm2: before fds=$f2 threads=$t2" there "vm2: returned 3 fds=$f3 threads=$t3" \
    "vm3: before fds=$f4 threads=$t4" "vm3: returned 4 fds=$f5 threads=$t5" \
    "vm3: connect under way during the run: seen; after it: 0" \
    "consumed ctx: -2" done >cret.want
  cmp -s cret.out cret.want || fail "stdout is '$(excerpt cret.out)', expected '$(excerpt cret.want)'"
  [ "$t1" -eq "$t0" ] && [ "$t3" -eq "$t2" ] || fail "threads before/after: vm1 $t0/$t1, vm2 $t2/$t3"
  [ "$f3" -eq "$f2" ] || fail "fds before/after vm2: $f2/$f3"
  [ "$t5" -eq "$t4" ] && [ "$f5" -eq "$f4" ] ||
    fail "vm3, ended with a connect under way: threads $t4/$t5, fds $f4/$f5"
  # The first VM may leave one fd: the process-wide SIGINT eventfd the consoles share
  # (vmm terminal.rs), created once per process and reused by every later VM.
  [ "$f1" -ge "$f0" ] && [ "$f1" -le $((f0 + 1)) ] || fail "fds before/after vm1: $f0/$f1"
  echo "# fds $f0 -> $f1 (vm1), $f2 -> $f3 (vm2), $f4 -> $f5 (vm3); threads $t0 -> $t1, $t2 -> $t3, $t4 -> $t5"
}
