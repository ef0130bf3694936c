# Issue #4: launching the way crun does (the root as a "/dev/root" virtio-fs share and the
# workload in the root's /.krun_config.json, no krun_set_exec), and a second VM from a fresh
# process after a first one, with nothing left behind on the host.

register crun_style
case_crun_style() {
  copy_root root || fail "cannot copy the busybox root"
  mkdir -p root/srv/app
  # A full OCI runtime config as crun writes it (crun makes it read-only).
  cat >root/.krun_config.json <<'EOF'
{
  "ociVersion": "1.0.2-dev",
  "process": {
    "terminal": false,
    "user": {"uid": 0, "gid": 0},
    "args": ["/bin/sh", "-c", "echo \"<args=$0|$1|$#>\"; echo \"<cwd=$(pwd)>\"; echo \"<env=$E2E_FROM_CONFIG>\"; echo \"<path=$PATH>\"; exit 3", "arg zero", "arg one"],
    "env": [
      "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
      "TERM=xterm",
      "E2E_FROM_CONFIG=from the config ü",
      "HOSTNAME=crun-e2e"
    ],
    "cwd": "/srv/app",
    "capabilities": {
      "bounding": ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_KILL", "CAP_SETGID", "CAP_SETUID"],
      "effective": ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_KILL", "CAP_SETGID", "CAP_SETUID"],
      "permitted": ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_KILL", "CAP_SETGID", "CAP_SETUID"]
    },
    "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1048576, "soft": 1048576}],
    "noNewPrivileges": true,
    "oomScoreAdj": 0
  },
  "root": {"path": "/var/lib/containers/storage/overlay/abc/merged", "readonly": false},
  "hostname": "crun-e2e",
  "mounts": [
    {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
    {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
    {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
    {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
    {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536000"]}
  ],
  "annotations": {"io.container.manager": "libpod", "run.oci.handler": "krun"},
  "linux": {
    "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
    "maskedPaths": ["/proc/acpi", "/proc/kcore", "/proc/keys"],
    "readonlyPaths": ["/proc/asound", "/proc/bus", "/proc/fs"]
  }
}
EOF
  chmod 0444 root/.krun_config.json
  guest crun run --root-virtiofs="$PWD/root" --mem=512
  expect_line crun "<args=arg zero|arg one|1>"
  expect_line crun "<cwd=/srv/app>"
  expect_line crun "<env=from the config ü>"
  expect_line crun "<path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin>"
  expect_rc crun 3
}

register second_vm
case_second_vm() {
  copy_root root || fail "cannot copy the busybox root"
  mkdir tmp
  export TMPDIR="$PWD/tmp"
  (cd root && find . | sort) >before.txt
  ls -a /dev/shm >shm-before.txt 2>/dev/null
  # Two VMs, one after the other, each from a fresh vmtest process; the second reads what
  # the first wrote.
  guest vm1 run --root="$PWD/root" -- /bin/sh -c \
    'echo "<first vm>"; echo from-the-first-vm >/persisted'
  expect_rc vm1 0
  expect_line vm1 "<first vm>"
  guest vm2 run --root="$PWD/root" -- /bin/sh -c \
    'echo "<second vm: $(cat /persisted)>"; exit 5'
  expect_line vm2 "<second vm: from-the-first-vm>"
  expect_rc vm2 5
  # The root holds exactly what it held plus the guest's file: no init.krun, no
  # .krun_exec.json, no temporary files.
  (cd root && find . | sort) >after.txt
  echo ./persisted >>before.txt
  sort before.txt >want.txt
  cmp -s want.txt after.txt ||
    fail "the VMs left files in the root dir: $(diff want.txt after.txt | grep '^[-+]\.' | tr '\n' ' ')"
  [ -z "$(ls -A tmp)" ] || fail "the VMs left files in TMPDIR: $(ls -A tmp | tr '\n' ' ')"
  ls -a /dev/shm >shm-after.txt 2>/dev/null
  cmp -s shm-before.txt shm-after.txt ||
    fail "the VMs left files in /dev/shm: $(diff shm-before.txt shm-after.txt | grep '^+[^+]' | tr '\n' ' ')"
}
