# Issue #9: byte-exact stdio. The caller's stdio are pipes or files here (not terminals), so
# the workload's fds 0, 1, 2 are the krun-stdin/krun-stdout/krun-stderr console ports and the
# bytes arrive unchanged: no \r added, nothing of the kernel console mixed in.

MIB4=4194304

register console_stdout_4mib
case_console_stdout_4mib() {
  copy_root root || fail "cannot copy the guest root"
  head -c $MIB4 /dev/urandom >root/rand
  timeout -k 10 "$VM_TIMEOUT" "$VMTEST" run --root="$PWD/root" -- /bin/cat /rand \
    </dev/null 2>big.err | cat >big.out
  _e=$(vmtest_error big.err)
  [ -z "$_e" ] || fail "$_e"
  [ "$(wc -c <big.out)" -eq $MIB4 ] || fail "got $(wc -c <big.out) bytes through the pipe, expected $MIB4"
  cmp -s root/rand big.out || fail "the bytes differ: $(cmp root/rand big.out 2>&1 | head -c 200)"
}

register console_stdout_stderr_files
case_console_stdout_stderr_files() {
  r=$(guest_root) || fail "no busybox root for the guest"
  timeout -k 10 "$VM_TIMEOUT" "$VMTEST" run --root="$r" -- /bin/sh -c \
    'printf "one\ntwo\r\nno newline"; printf "err one\n\tx" >&2; exit 3' \
    </dev/null >two.out 2>two.err
  RC=$?
  [ "$RC" -eq 3 ] || fail "exit status $RC, expected 3: $(excerpt two.err)"
  printf 'one\ntwo\r\nno newline' | cmp -s - two.out || fail "stdout is not exact: $(od -c two.out | head -5)"
  # The VMM logs nothing at the default level, so stderr holds the guest's bytes alone.
  printf 'err one\n\tx' | cmp -s - two.err || fail "stderr is not exact: $(od -c two.err | head -5)"
}

register console_stdin_4mib
case_console_stdin_4mib() {
  r=$(guest_root) || fail "no busybox root for the guest"
  head -c $MIB4 /dev/urandom >rand
  # sha256sum ends only if the end of the host's stdin reaches the guest as end of file.
  timeout -k 10 "$VM_TIMEOUT" "$VMTEST" run --root="$r" -- /bin/sh -c \
    'sha256sum; echo "<eof seen>"' <rand >in.out 2>in.err
  RC=$?
  timed_out "$RC" && fail "the guest never saw the end of its stdin (timed out)"
  [ "$RC" -eq 0 ] || fail "exit status $RC: $(excerpt in.err)"
  { sha256sum <rand; echo "<eof seen>"; } | cmp -s - in.out ||
    fail "the guest read other bytes: $(head -c 200 in.out) vs $(sha256sum <rand)"
}

register console_many_runs
# The issue's figure is 200 VMs of 200 lines; a lab boot takes seconds, so 12 VMs here.
case_console_many_runs() {
  r=$(guest_root) || fail "no busybox root for the guest"
  seq 1 200 | sed 's/^/line /' >expected
  i=1
  while [ "$i" -le 12 ]; do
    timeout -k 10 "$VM_TIMEOUT" "$VMTEST" run --root="$r" -- /bin/sh -c \
      'i=1; while [ $i -le 200 ]; do echo "line $i"; i=$((i+1)); done' \
      </dev/null 2>"many$i.err" | cat >"many$i.out"
    cmp -s expected "many$i.out" ||
      fail "run $i: output differs ($(wc -c <"many$i.out") bytes, expected $(wc -c <expected)): $(vmtest_error "many$i.err")"
    i=$((i + 1))
  done
}
