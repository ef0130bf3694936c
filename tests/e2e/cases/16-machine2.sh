# Issue #16 (items 1, 3, 4): the rest of the machine. Every VM has a virtio-rng whose
# /dev/hwrng reads the host's getrandom; krun_get_shutdown_eventfd asks the guest for an
# orderly stop; krun_set_kernel boots a kernel from a file.

# Two VMs each read 64 KiB from /dev/hwrng onto the root share: both files are exactly
# 65536 bytes, differ from each other and are not zeros.
register rng_hwrng
case_rng_hwrng() {
  copy_root root || fail "cannot copy the busybox root"
  for n in 1 2; do
    guest "rng$n" run --root="$PWD/root" -- /bin/sh -c "
      echo \"<rng=\$(cat /sys/class/misc/hw_random/rng_current)>\"
      dd if=/dev/hwrng of=/rng$n.bin bs=1k count=64"
    expect_rc "rng$n" 0
    expect_line "rng$n" "<rng=virtio_rng.0>"
    size=$(wc -c <"root/rng$n.bin") || fail "VM $n wrote no /rng$n.bin"
    [ "$size" -eq 65536 ] || fail "VM $n read $size bytes from /dev/hwrng, expected 65536: $(excerpt "rng$n.txt")"
  done
  ! cmp -s root/rng1.bin root/rng2.bin || fail "two VMs read the same 64 KiB from /dev/hwrng"
  head -c 65536 /dev/zero >zeros.bin
  ! cmp -s root/rng1.bin zeros.bin || fail "/dev/hwrng read zeros"
}

# krun_get_shutdown_eventfd: the guest workload creates /ready on its root share, then
# vmtest's helper writes 1 to the eventfd. Init sends SIGTERM: a shell that traps it prints
# and exits 3, and the VM ends with 3; a plain `sleep` dies of it: 143.
register shutdown_eventfd_trap
case_shutdown_eventfd_trap() {
  copy_root root || fail "cannot copy the busybox root"
  guest trap run --root="$PWD/root" --shutdown-on="$PWD/root/ready" -- /bin/sh -c '
    trap "echo got SIGTERM; exit 3" TERM
    touch /ready
    sleep 1000 &
    wait'
  expect_rc trap 3
  expect_line trap "got SIGTERM"
  # "Within a few seconds" of the request, on a lab that is 10-50x slower than hardware.
  [ -f root/ready.sent ] || fail "the helper never wrote to the eventfd"
  took=$(($(date +%s) - $(stat -c %Y root/ready.sent)))
  [ "$took" -le 30 ] || fail "the VM ended ${took}s after the shutdown request"
}

register shutdown_eventfd_default
case_shutdown_eventfd_default() {
  copy_root root || fail "cannot copy the busybox root"
  guest plain run --root="$PWD/root" --shutdown-on="$PWD/root/ready" -- /bin/sh -c '
    touch /ready; exec sleep 1000'
  expect_rc plain 143
}

# krun_set_kernel: the lab's own Debian kernel (staged by tests/e2e/stage-kernels.sh) boots
# with a busybox initramfs whose /init writes to the 8250 serial console (ttyS0, a tty: its
# lines end in \r\n) and reboots; with no root share there is no exit code, so the VM ends
# with status 1. The marker is assembled in the guest, so the kernel's echo of its command
# line cannot fake it.
KERNELS=$HERE/kernels
SERIAL_LINE='<from the Debian kernel on ttyS0>'
KERNEL_CMDLINE='console=ttyS0 reboot=k panic=-1 quiet'

# What /init does on ttyS0 before it reboots: the marker and the kernel release.
INIT_BODY='echo "<from the Debian kernel" "on ttyS0>"
echo "<release=$(/bin/busybox uname -r)>"'

# make_initramfs FILE [BODY]: a newc cpio with busybox and an /init that runs BODY (default
# INIT_BODY) with ttyS0 as its stdio, then reboots.
make_initramfs() {
  rm -rf ir && mkdir -p ir/bin ir/dev ir/proc ir/sys || return 1
  cp /bin/busybox ir/bin/busybox && ln -s busybox ir/bin/sh || return 1
  printf '#!/bin/sh\n/bin/busybox mount -t devtmpfs devtmpfs /dev\nexec </dev/ttyS0 >/dev/ttyS0 2>&1\n%s\n/bin/busybox reboot -f\n' \
    "${2:-$INIT_BODY}" >ir/init
  chmod 755 ir/init && (cd ir && find . | cpio -o -H newc 2>/dev/null) >"$1"
}

# boot_kernel NAME FILE FORMAT: boot FILE (KRUN_KERNEL_FORMAT_* FORMAT) with the initramfs,
# the serial console on stdout; checks the marker and the release of the lab's kernel.
boot_kernel() {
  make_initramfs initramfs.cpio || fail "cannot build the initramfs"
  vm "$1" run --serial=0:1 --kernel="$2" --kernel-format="$3" \
    --initramfs="$PWD/initramfs.cpio" --kernel-cmdline="$KERNEL_CMDLINE"
  guest_checks "$1"
  expect_rc "$1" 1
  grep -a -q -x -F "$(printf '%s\r' "$SERIAL_LINE")" "$1.out" ||
    fail "no '$SERIAL_LINE' line (with the tty's \\r) on the serial console: $(excerpt "$1.txt")"
  grep -a -q -x -F "$(printf '<release=%s>\r' "$(uname -r)")" "$1.out" ||
    fail "the guest's kernel release is not the lab's $(uname -r): $(excerpt "$1.txt")"
}

register kernel_bzimage_serial
case_kernel_bzimage_serial() {
  [ -f "$KERNELS/bzImage" ] || skip "no staged lab kernel (tests/e2e/stage-kernels.sh)"
  boot_kernel bz "$KERNELS/bzImage" 0
}

register kernel_gzip_bzimage
case_kernel_gzip_bzimage() {
  [ -f "$KERNELS/bzImage" ] || skip "no staged lab kernel (tests/e2e/stage-kernels.sh)"
  gzip -1 -c "$KERNELS/bzImage" >bzImage.gz || fail "cannot gzip the kernel"
  boot_kernel gz "$PWD/bzImage.gz" 4
}

register kernel_zstd_elf_vmlinux
case_kernel_zstd_elf_vmlinux() {
  [ -f "$KERNELS/vmlinux.zst" ] || skip "no staged vmlinux.zst (stage-kernels.sh needs zstd and the payload's decompressor)"
  boot_kernel elf "$KERNELS/vmlinux.zst" 5
}

# A bzImage declared as an ELF vmlinux: krun_start_enter fails with EINVAL and one line
# naming the file and the declared format.
register kernel_wrong_format_einval
case_kernel_wrong_format_einval() {
  [ -f "$KERNELS/bzImage" ] || skip "no staged lab kernel (tests/e2e/stage-kernels.sh)"
  vm wrong start-error --kernel="$KERNELS/bzImage" --kernel-format=1
  [ "$RC" -eq 0 ] || fail "vmtest start-error exited $RC: $(excerpt wrong.out) $(excerpt wrong.err)"
  printf 'krun_start_enter: -22 (Invalid argument)\n' | cmp -s - wrong.out ||
    fail "expected -EINVAL from krun_start_enter: $(excerpt wrong.out)"
  want="the kernel $KERNELS/bzImage is not KRUN_KERNEL_FORMAT_ELF (an ELF vmlinux): it is a bzImage"
  [ "$(grep -a -c -F -e "$want" wrong.err)" -eq 1 ] ||
    fail "no single line saying '$want': $(excerpt wrong.err)"
}

register kernel_elf_vmlinux
case_kernel_elf_vmlinux() {
  [ -f "$KERNELS/vmlinux" ] || skip "no staged vmlinux (stage-kernels.sh needs the payload's decompressor, lz4 for Debian's)"
  boot_kernel vmlinux "$KERNELS/vmlinux" 1
}

# The UART's input side with a kernel that has the driver: the guest prompts on ttyS0, the
# host writes a line to the serial input fd (a FIFO, fed once the prompt is out) and the
# guest prints what it read.
register kernel_serial_input
case_kernel_serial_input() {
  [ -f "$KERNELS/bzImage" ] || skip "no staged lab kernel (tests/e2e/stage-kernels.sh)"
  make_initramfs initramfs.cpio 'echo "<ready for" "input>"; read -r line; echo "<read $line>"' ||
    fail "cannot build the initramfs"
  mkfifo serial.in
  (i=0
    while ! grep -q '<ready for input>' serial.out 2>/dev/null; do
      sleep 0.2; i=$((i + 1)); [ $i -lt 600 ] || exit 0
    done
    printf 'hello serial\n'; sleep 60) >serial.in &
  feeder=$!
  vm sin run --serial=3:4 --kernel="$KERNELS/bzImage" --kernel-format=0 \
    --initramfs="$PWD/initramfs.cpio" --kernel-cmdline="$KERNEL_CMDLINE" 3<serial.in 4>serial.out
  kill $feeder 2>/dev/null
  guest_checks sin
  expect_rc sin 1
  grep -a -q -x -F "$(printf '<read hello serial>\r')" serial.out ||
    fail "the guest did not read the line from the serial input: $(excerpt serial.out)"
}

# krun_set_smbios_oem_strings (issue #16 item 6): the lab's Debian kernel (CONFIG_DMI,
# CONFIG_DMI_SYSFS, CONFIG_DMIID built in) finds our SMBIOS tables in the BIOS area. The
# raw type 11 entry it exports is exactly: type 11, length 5, handle 2, the string count,
# each string with its NUL, one more NUL. The type 1 manufacturer shows in
# /sys/class/dmi/id.
SMBIOS_OEM1='io.systemd.credential:greeting=hello world'
SMBIOS_OEM2='second=2'
SMBIOS_OEM3='ünïcödé ☃'
register smbios_oem_strings_debian_kernel
case_smbios_oem_strings_debian_kernel() {
  [ -f "$KERNELS/bzImage" ] || skip "no staged lab kernel (tests/e2e/stage-kernels.sh)"
  make_initramfs initramfs.cpio '/bin/busybox mount -t sysfs sysfs /sys
echo "<raw=$(/bin/busybox od -An -tx1 -v /sys/firmware/dmi/entries/11-0/raw | /bin/busybox tr -d " \n")>"
echo "<vendor=$(/bin/busybox cat /sys/class/dmi/id/sys_vendor)>"
echo "<product=$(/bin/busybox cat /sys/class/dmi/id/product_name)>"' ||
    fail "cannot build the initramfs"
  vm oem run --serial=0:1 --kernel="$KERNELS/bzImage" --kernel-format=0 \
    --initramfs="$PWD/initramfs.cpio" --kernel-cmdline="$KERNEL_CMDLINE" \
    --smbios-oem="$SMBIOS_OEM1" --smbios-oem="$SMBIOS_OEM2" --smbios-oem="$SMBIOS_OEM3"
  guest_checks oem
  expect_rc oem 1
  want=$({ printf '\013\005\002\000\003'; printf '%s\000' "$SMBIOS_OEM1" "$SMBIOS_OEM2" "$SMBIOS_OEM3"
    printf '\000'; } | od -An -tx1 -v | tr -d ' \n')
  grep -a -q -x -F "$(printf '<raw=%s>\r' "$want")" oem.out ||
    fail "the guest's /sys/firmware/dmi/entries/11-0/raw is not $want: $(excerpt oem.txt)"
  grep -a -q -x -F "$(printf '<vendor=Libkrun>\r')" oem.out ||
    fail "the guest's DMI sys_vendor is not Libkrun: $(excerpt oem.txt)"
  grep -a -q -x -F "$(printf '<product=libkrun Virtual Machine>\r')" oem.out ||
    fail "the guest's DMI product_name is not 'libkrun Virtual Machine': $(excerpt oem.txt)"
}

# libkrunfw's kernel is built without CONFIG_DMI: with OEM strings set, the guest has no
# /sys/firmware/dmi (if a libkrunfw update brings DMI, this case says so: then read the
# strings back here too). The VM still boots and runs its workload.
register smbios_oem_strings_libkrunfw_no_dmi
case_smbios_oem_strings_libkrunfw_no_dmi() {
  copy_root root || fail "cannot copy the busybox root"
  guest nodmi run --root="$PWD/root" --smbios-oem="$SMBIOS_OEM1" -- /bin/sh -c '
    if [ -e /sys/firmware/dmi ]; then echo "<dmi=present>"; else echo "<dmi=absent>"; fi'
  expect_rc nodmi 0
  expect_line nodmi "<dmi=absent>"
}

# A string that cannot be stored is refused by the setter with -EINVAL: an empty one (an
# SMBIOS string set cannot hold it; the count and size limits are unit-tested).
register smbios_oem_strings_refused
case_smbios_oem_strings_refused() {
  vm empty start-error --smbios-oem=a --smbios-oem=
  [ "$RC" -eq 2 ] || fail "vmtest exited $RC with an empty OEM string: $(excerpt empty.err)"
  grep -a -q -F 'krun_set_smbios_oem_strings: -22 ' empty.err ||
    fail "no -EINVAL for an empty OEM string: $(excerpt empty.err)"
}
