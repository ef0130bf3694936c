# Issue #17: the Rust API's custom backends and devices through the builder, driven by
# backends_lab (crates/krun-vm/examples/backends_lab.rs, staged by tests/e2e/run). The
# program prints one line per fact; the cases compare them and the files exactly.

# backends_lab NAME ARGS...: run backends_lab under a timeout; stdout in NAME.txt, stderr
# in NAME.lab.err, status in $RC. The VM's own stdio go to NAME.out and NAME.err.
backends_lab() {
  _name=$1
  shift
  timeout -k 10 "$VM_TIMEOUT" "$HERE/backends_lab" "$@" </dev/null >"$_name.txt" 2>"$_name.lab.err"
  RC=$?
  timed_out "$RC" && fail "backends_lab $1 did not end in time: $(excerpt "$_name.txt") $(excerpt "$_name.lab.err")"
  [ "$RC" -eq 0 ] || fail "backends_lab $1 exited $RC: $(excerpt "$_name.lab.err")"
}

# same FILE: FILE equals FILE.want byte for byte.
same() {
  cmp -s "$1" "$1.want" || fail "$1 is '$(excerpt "$1" 300)', expected '$(excerpt "$1.want" 300)'"
}

register rust_api_memfs_share
case_rust_api_memfs_share() {
  root=$(guest_root) || fail "no guest root"
  backends_lab memfs memfs "$root" "$PWD"
  expect_line memfs "memfs: exited with status 3"
  # What the guest read from the tree, listed and read back after its own writes.
  printf 'hello from rust\ndeep\n/mnt:\ngdir\nhello.txt\nnew.txt\nsub\n\n/mnt/sub:\nguest wrote this\n' >memfs.out.want
  same memfs.out
  # What the guest wrote, as the tree holds it after the run.
  expect_line memfs "tree: /gdir/ /gdir/f /hello.txt /new.txt /sub/"
  printf 'guest wrote this\n' >mem/new.txt.want
  same mem/new.txt
  printf 'hello from rust\nmore' >mem/hello.txt.want
  same mem/hello.txt
  printf 'x' >mem/gdir/f.want
  same mem/gdir/f
}

register rust_api_net_backend_arp
case_rust_api_net_backend_arp() {
  root=$(guest_root) || fail "no guest root"
  backends_lab arp arp "$root" "$PWD"
  expect_line arp "arp: exited with status 4"
  # The guest's ARP request as the peer saw it, field by field.
  expect_line arp "arp request: dst=ff:ff:ff:ff:ff:ff src=02:4b:52:55:4e:01 type=0806 htype=1 ptype=0800 hlen=6 plen=4 oper=1 sha=02:4b:52:55:4e:01 spa=10.0.2.15 tha=00:00:00:00:00:00 tpa=10.0.2.2"
  expect_line arp "echo requests: 1"
  # The peer's answers reached the guest: the ping succeeded and its ARP table holds the
  # peer's MAC as a complete entry (flags 0x2).
  printf 'ping=0\n10.0.2.2 0x2 02:00:00:00:00:02 eth0\n' >arp.out.want
  same arp.out
}

register rust_api_disk
case_rust_api_disk() {
  root=$(guest_root) || fail "no guest root"
  printf 'host-disk-bytes!' >disk.img && dd if=/dev/zero of=disk.img bs=1024 count=0 seek=1024 2>/dev/null ||
    fail "cannot create disk.img"
  backends_lab disk disk "$root" "$PWD/disk.img" "$PWD"
  expect_line disk "disk: exited with status 5"
  printf '<serial=disk0>\nhost-disk-bytes!\ndd=0\n' >disk.out.want
  same disk.out
  dd if=disk.img of=sector1 bs=512 skip=1 count=1 2>/dev/null
  head -c 16 sector1 >written
  printf 'written-by-guest' >written.want
  same written
  [ "$(wc -c <disk.img)" -eq 1048576 ] || fail "disk.img is $(wc -c <disk.img) bytes, not 1 MiB"
}

register rust_api_net_unixgram
case_rust_api_net_unixgram() {
  root=$(guest_root) || fail "no guest root"
  backends_lab gram gram "$root" "$PWD"
  expect_line gram "gram: exited with status 4"
  expect_line gram "arp request: dst=ff:ff:ff:ff:ff:ff src=02:4b:52:55:4e:01 type=0806 htype=1 ptype=0800 hlen=6 plen=4 oper=1 sha=02:4b:52:55:4e:01 spa=10.0.2.15 tha=00:00:00:00:00:00 tpa=10.0.2.2"
  expect_line gram "echo requests: 1"
  printf 'ping=0\n10.0.2.2 0x2 02:00:00:00:00:02 eth0\n' >gram.out.want
  same gram.out
}

register rust_api_virtual_file_read_only_share
case_rust_api_virtual_file_read_only_share() {
  root=$(guest_root) || fail "no guest root"
  mkdir -p data && printf 'host share bytes\n' >data/host.txt
  backends_lab files files "$root" "$PWD/data" "$PWD"
  expect_line files "files: exited with status 6"
  printf 'virtual bytes\nhost share bytes\ntouch: /mnt/new.txt: Read-only file system\ntouch=1\n' >files.out.want
  same files.out
  [ ! -e data/new.txt ] || fail "the read-only share got data/new.txt"
  [ ! -e "$root/etc/krun-motd" ] || fail "the virtual file reached the host root"
}

register rust_api_overlay_root
case_rust_api_overlay_root() {
  root=$(guest_root) || fail "no guest root"
  mkdir -p top
  backends_lab layers layers "$root" "$PWD/top" "$PWD"
  expect_line layers "layers: exited with status 8"
  printf 'top bytes\n/bin/busybox\n' >layers.out.want
  same layers.out
  # The write went to the top layer; the lower one (the shared guest root) is untouched.
  printf 'top bytes\n' >top/made-in-guest.want
  same top/made-in-guest
  [ ! -e "$root/made-in-guest" ] || fail "the write reached the lower layer"
}

register rust_api_device_panic
case_rust_api_device_panic() {
  root=$(guest_root) || fail "no guest root"
  # BrokenPeer panics in FrameBackend::receive on the guest's first IPv4 frame (its ping):
  # the net0 worker catches it, the VM stops, run returns VmError::Device naming net0, and
  # the program goes on with its threads back to the count before the VM.
  backends_lab panic panic "$root" "$PWD"
  expect_line panic "panic: run: device net0 failed, the VM was stopped: the device worker panicked: BrokenPeer cannot take IPv4 frames"
  expect_line panic "after: this process goes on"
  # The guest got as far as the ping, and no further: the VM was stopped, not left waiting.
  printf 'pinging\n' >panic.out.want
  same panic.out
  before=$(sed -n 's/^threads before: //p' panic.txt) after=$(sed -n 's/^threads after: //p' panic.txt)
  [ -n "$before" ] && [ "$before" = "$after" ] || fail "threads before/after: '$before'/'$after': $(excerpt panic.txt)"
  echo "# threads $before -> $after"
}
