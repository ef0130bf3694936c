# Issue #10: what is not built is refused at the setter (and the guest keeps what it had),
# what the setter can check is refused there with its errno, and a failing start says why
# on stderr even when the caller never configured logging.

# The legacy passt setter takes an fd (0 here, /dev/null) and returns 0; the VM cannot start
# with it, since it is no socket: krun_start_enter fails with -ENOTSOCK and says why on
# stderr (issue 14; before, the setter was refused and TSI stayed on).
register net_passt_fd_not_a_socket
case_net_passt_fd_not_a_socket() {
  mkdir root
  timeout -k 10 "$VM_TIMEOUT" "$VMTEST" start-error --try-net=passt:0 --root="$PWD/root" \
    -- /bin/true </dev/null >passt.out 2>passt.err
  rc=$?
  [ "$rc" -eq 0 ] || fail "krun_start_enter did not fail: exit $rc $(excerpt passt.out) $(excerpt passt.err)"
  printf 'krun_set_passt_fd: 0 (no error)\nkrun_start_enter: -88 (Socket operation on non-socket)\n' >want.out
  cmp -s want.out passt.out || fail "stdout is '$(excerpt passt.out)', expected the setter's 0 and -ENOTSOCK"
  has passt.err 'cannot use socket fd 0' || fail "the error line does not name the fd: $(excerpt passt.err)"
}

# Setters refuse what they can check, before any VM exists: the errno is the cause's
# (--mem=1: libkrunfw, loaded by krun_create_ctx, says its kernel needs more). Nothing boots
# here. vmtest prints the failing call and exits 2; with default logging the
# library itself prints nothing for a setter (the caller has the errno).
register setter_errnos
case_setter_errnos() {
  mkdir share
  : >plainfile
  tag37=ttttttttttttttttttttttttttttttttttttt
  set -- \
    "--root=$PWD/missing|vmtest: krun_set_root: -2 (No such file or directory)" \
    "--root=$PWD/plainfile|vmtest: krun_set_root: -20 (Not a directory)" \
    "--virtiofs=data:$PWD/missing|vmtest: krun_add_virtiofs: -2 (No such file or directory)" \
    "--virtiofs=$tag37:$PWD/share|vmtest: krun_add_virtiofs: -22 (Invalid argument)" \
    "--uid=4294967295|vmtest: krun_setuid: -22 (Invalid argument)" \
    "--env=NOEQUALS|vmtest: krun_set_exec: -22 (Invalid argument)" \
    "--cpus=255|vmtest: krun_set_vm_config: -22 (Invalid argument)" \
    "--mem=1|vmtest: krun_set_vm_config: -22 (Invalid argument)"
  i=0
  for spec in "$@"; do
    i=$((i + 1))
    opt=${spec%%|*}
    want=${spec#*|}
    timeout -k 10 "$VM_TIMEOUT" "$VMTEST" run "$opt" -- /bin/true </dev/null \
      >"s$i.out" 2>"s$i.err"
    rc=$?
    [ "$rc" -eq 2 ] || fail "$opt: exit $rc, expected 2 (a refused setter): $(excerpt "s$i.err")"
    printf '%s\n' "$want" >"s$i.want"
    cmp -s "s$i.want" "s$i.err" || fail "$opt: stderr is '$(excerpt "s$i.err")', expected '$want'"
  done
}

# libkrunfw cannot be found at start (LD_LIBRARY_PATH has only libkrun), and the caller set
# no log level: exactly one line on stderr, naming the cause; the errno is ENOENT.
register start_error_default_log
case_start_error_default_log() {
  hide_krunfw nofw
  mkdir root
  env -u RUST_LOG LD_LIBRARY_PATH="$PWD/nofw" timeout -k 10 "$VM_TIMEOUT" "$VMTEST" \
    start-error --root="$PWD/root" </dev/null >nofw.out 2>nofw.err
  rc=$?
  timed_out "$rc" && fail "did not end within ${VM_TIMEOUT}s"
  [ "$rc" -ne 2 ] || fail "$(vmtest_error nofw.err) (exit $rc)"
  [ "$rc" -eq 0 ] || fail "krun_start_enter did not return a negative errno: $(excerpt nofw.out) (exit $rc)"
  printf 'krun_start_enter: -2 (No such file or directory)\n' >want.out
  cmp -s want.out nofw.out || fail "stdout is '$(excerpt nofw.out)', expected -ENOENT"
  lines=$(wc -l <nofw.err)
  [ "$lines" -eq 1 ] || fail "$lines lines on stderr, expected exactly 1: $(excerpt nofw.err)"
  has nofw.err '^libkrun: krun_start_enter: cannot start the VM: cannot load the guest kernel: cannot load libkrunfw\.so\.5 .*No such file or directory$' ||
    fail "the stderr line does not name the missing libkrunfw.so.5: $(excerpt nofw.err)"
}
