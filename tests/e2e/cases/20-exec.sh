# Issue #4: the workload set with krun_set_exec & co. runs in the guest (virtio-fs root, our
# init as PID 1); its output reaches the caller and its status becomes the process's status.
# Guest output arrives byte-exact through the krun-stdout/krun-stderr console ports (the
# caller's stdio are not terminals); lines the cases look for are wrapped in <...> so kernel
# or init messages cannot be mistaken for them.

# Most cases use the shared busybox root: they do not write into it.

register_split exec_stdio
case_exec_stdio() {
  r=$(guest_root) || fail "no busybox root for the guest"
  guest io run --root="$r" -- /bin/sh -c 'echo "<to stdout>"; echo "<to stderr>" >&2; exit 0'
  expect_rc io 0
  expect_line io "<to stdout>"
  expect_line io "<to stderr>"
  # As upstream: separate krun-stdout/krun-stderr ports when stdio are not terminals.
  printf '<to stdout>\n' | cmp -s - io.out || fail "stdout holds more than the guest's stdout: $(excerpt io.out)"
  has io.err '<to stderr>' || fail "the guest's stderr did not reach the caller's stderr"
  ! has io.out '<to stderr>' || fail "the guest's stderr reached the caller's stdout"

}

# Exit status N of the workload must be the status of the process that called
# krun_start_enter.
expect_exit() {
  r=$(guest_root) || fail "no busybox root for the guest"
  guest st run --root="$r" -- /bin/sh -c "echo '<exiting $1>'; exit $1"
  expect_line st "<exiting $1>"
  expect_rc st "$1"
}

register exit_1
case_exit_1() { expect_exit 1; }

register exit_7
case_exit_7() { expect_exit 7; }

register exit_255
case_exit_255() { expect_exit 255; }

register exit_signal
case_exit_signal() {
  r=$(guest_root) || fail "no busybox root for the guest"
  guest sig run --root="$r" -- /bin/sh -c 'echo "<killing myself>"; kill -9 $$; echo "<survived>"'
  expect_line sig "<killing myself>"
  ! has sig.txt '<survived>' || fail "the workload survived kill -9"
  expect_rc sig 137
}

register exit_sigterm
case_exit_sigterm() {
  r=$(guest_root) || fail "no busybox root for the guest"
  # 143 = 128 + SIGTERM: a status like any other, not a timeout.
  guest term run --root="$r" -- /bin/sh -c 'echo "<terminating myself>"; kill -TERM $$; sleep 5; echo "<survived>"'
  expect_line term "<terminating myself>"
  ! has term.txt '<survived>' || fail "the workload survived SIGTERM"
  expect_rc term 143
}

register exit_126_not_executable
case_exit_126_not_executable() {
  r=$(guest_root) || fail "no busybox root for the guest"
  # /etc/passwd exists but is not executable.
  guest noexec run --root="$r" -- /etc/passwd
  expect_rc noexec 126
  has noexec.txt '/etc/passwd' || fail "no message naming the program: $(excerpt noexec.txt)"
}

register exit_127_missing
case_exit_127_missing() {
  r=$(guest_root) || fail "no busybox root for the guest"
  guest miss run --root="$r" -- /bin/no-such-program-e2e arg
  expect_rc miss 127
  has miss.txt 'no-such-program-e2e' ||
    fail "no message naming the missing program: $(excerpt miss.txt)"
}

register argv_quoting
case_argv_quoting() {
  r=$(guest_root) || fail "no busybox root for the guest"
  # An empty argument, leading/trailing blanks, both quote kinds, a backslash, shell
  # metacharacters, '--', a KEY=VALUE look-alike and non-ASCII UTF-8: all must arrive as-is.
  set -- 'two words' 'say "hi"' "it's" '' '  padded  ' 'back\slash' '$HOME *' '--' \
    'KEY=value' 'ünïcødé € 日本語' 'tab	inside'
  printf '<%s>\n' "$@" >expected.txt
  guest argv run --root="$r" -- /bin/printf '<%s>\n' "$@"
  expect_rc argv 0
  grep -a '^<' argv.txt >got.txt
  cmp -s expected.txt got.txt ||
    fail "argv differs: expected $(tr '\n' '|' <expected.txt) got $(tr '\n' '|' <got.txt)"
}

register env_from_envp
case_env_from_envp() {
  r=$(guest_root) || fail "no busybox root for the guest"
  # The case runs in its own subshell: exporting here affects only it.
  export KRUN_E2E_LEAK=leaked
  guest env run --root="$r" --env='PATH=/bin:/sbin' \
    --env='E2E_SPACES=bar  baz' --env='E2E_QUOTES=say "hi" '"'"'x'"'" \
    --env='E2E_UTF8=ü€日本' --env='E2E_EQUALS=a=b=c' -- /bin/sh -c \
    'echo "<spaces=$E2E_SPACES>"; echo "<quotes=$E2E_QUOTES>"; echo "<utf8=$E2E_UTF8>";
     echo "<equals=$E2E_EQUALS>"; echo "<leak=${KRUN_E2E_LEAK-unset}>"'
  expect_rc env 0
  expect_line env "<spaces=bar  baz>"
  expect_line env "<quotes=say \"hi\" 'x'>"
  expect_line env "<utf8=ü€日本>"
  expect_line env "<equals=a=b=c>"
  expect_line env "<leak=unset>"
}

register env_inherited
case_env_inherited() {
  r=$(guest_root) || fail "no busybox root for the guest"
  # envp NULL: the guest gets the caller's environment (as upstream).
  export E2E_INHERITED='inherited  value ü'
  guest inh run --root="$r" --inherit-env -- /bin/sh -c \
    'echo "<inherited=${E2E_INHERITED-unset}>"'
  expect_rc inh 0
  expect_line inh "<inherited=inherited  value ü>"
}

register workdir_rlimits
case_workdir_rlimits() {
  r=$(guest_root) || fail "no busybox root for the guest"
  guest wr run --root="$r" --workdir=/var --rlimit=7=1024:2048 --rlimit=6=300:400 -- \
    /bin/sh -c 'echo "<pwd=$(pwd)>"; echo "<nofile=$(ulimit -n):$(ulimit -Hn)>";
                echo "<nproc=$(ulimit -u):$(ulimit -Hu)>"'
  expect_rc wr 0
  expect_line wr "<pwd=/var>"
  expect_line wr "<nofile=1024:2048>"
  expect_line wr "<nproc=300:400>"
}

register setuid_setgid
case_setuid_setgid() {
  [ "$(id -u)" = 0 ] || skip "switching the VMM to uid 1000 needs root"
  # After the switch, uid 1000 must still reach the root directory and (if the VMM opens it
  # after switching, as upstream does) /dev/kvm, as on a host where users may run VMs. The
  # lab is disposable, so open /dev/kvm there; elsewhere do not touch the host's.
  if [ "${KRUNLAB:-}" = 1 ]; then
    chmod 0666 /dev/kvm
  elif ! su -s /bin/sh -c 'test -r /dev/kvm -a -w /dev/kvm' "$(getent passwd 1000 | cut -d: -f1)" 2>/dev/null; then
    skip "uid 1000 cannot open /dev/kvm on this host"
  fi
  chmod o+x "$WORK" "$PWD"
  copy_root root || fail "cannot copy the busybox root"
  mkdir root/share && chmod 0777 root/share
  # krun_setuid/krun_setgid switch the VMM process (as upstream): the guest still runs as
  # root, and what it creates on the share belongs to 1000:1000 on the host.
  guest id run --root="$PWD/root" --uid=1000 --gid=1000 -- /bin/sh -c \
    'echo "<id=$(id -u):$(id -g)>"; echo guest >/share/made-by-guest && mkdir /share/dir-by-guest
     echo "<created=$?>"'
  expect_rc id 0
  expect_line id "<id=0:0>"
  expect_line id "<created=0>"
  [ -f root/share/made-by-guest ] || fail "the file the guest created is not on the host"
  o=$(stat -c '%u:%g' root/share/made-by-guest)
  [ "$o" = 1000:1000 ] || fail "the guest's file is owned by $o on the host, expected 1000:1000"
  o=$(stat -c '%u:%g' root/share/dir-by-guest 2>/dev/null)
  [ "$o" = 1000:1000 ] || fail "the guest's directory is owned by '$o' on the host, expected 1000:1000"
}

register vcpus_ram
case_vcpus_ram() {
  r=$(guest_root) || fail "no busybox root for the guest"
  guest res run --root="$r" --cpus=2 --mem=512 -- /bin/sh -c \
    'echo "<nproc=$(nproc)>"; echo "<mem=$(sed -n "s/^MemTotal: *\([0-9]*\) kB$/\1/p" /proc/meminfo)>"'
  expect_rc res 0
  expect_line res "<nproc=2>"
  kb=$(sed -n 's/^<mem=\([0-9][0-9]*\)>$/\1/p' res.txt)
  [ -n "$kb" ] || fail "no MemTotal from the guest: $(excerpt res.txt)"
  # 512 MiB = 524288 kB; within 10%.
  [ "$kb" -ge 471859 ] && [ "$kb" -le 576716 ] ||
    fail "guest MemTotal is $kb kB, not within 10% of 512 MiB (524288 kB)"
}

register many_args_env
case_many_args_env() {
  r=$(guest_root) || fail "no busybox root for the guest"
  # More than the 32 arguments and 32 environment entries the kernel hands to init.
  set --
  envs=""
  i=1
  while [ "$i" -le 40 ]; do
    set -- "$@" "arg-$i with space"
    envs="$envs --env=E2E_VAR_$i=value-$i"
    i=$((i + 1))
  done
  want_args=$(printf '%s\n' "$@" | md5sum | cut -d' ' -f1)
  want_env=$(i=1; while [ "$i" -le 40 ]; do echo "E2E_VAR_$i=value-$i"; i=$((i + 1)); done |
    sort | md5sum | cut -d' ' -f1)
  # shellcheck disable=SC2086 # $envs is a list of words without blanks
  guest many run --root="$r" --env=PATH=/bin:/sbin $envs -- /bin/sh -c \
    'echo "<argc=$#>"; echo "<args=$(printf "%s\n" "$@" | md5sum | cut -d" " -f1)>"
     echo "<env=$(env | grep "^E2E_VAR_" | sort | md5sum | cut -d" " -f1)>"
     echo "<envc=$(env | grep -c "^E2E_VAR_")>"' sh "$@"
  expect_rc many 0
  expect_line many "<argc=40>"
  expect_line many "<args=$want_args>"
  expect_line many "<envc=40>"
  expect_line many "<env=$want_env>"
}

register args_64k
case_args_64k() {
  r=$(guest_root) || fail "no busybox root for the guest"
  # 1024 arguments of 64 bytes (+ NUL): over 64 KiB, far beyond the kernel command line.
  pad=abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ012345
  set --
  i=1000
  while [ "$i" -lt 2024 ]; do
    set -- "$@" "a$i-$pad"
    i=$((i + 1))
  done
  want=$(printf '%s\n' "$@" | md5sum | cut -d' ' -f1)
  bytes=$(printf '%s\n' "$@" | wc -c)
  guest big run --root="$r" -- /bin/sh -c \
    'echo "<argc=$#>"; echo "<sum=$(printf "%s\n" "$@" | md5sum | cut -d" " -f1)>"' sh "$@"
  expect_rc big 0
  expect_line big "<argc=1024>"
  expect_line big "<sum=$want>"
  [ "$bytes" -ge 65536 ] || fail "test bug: only $bytes bytes of arguments"
}
