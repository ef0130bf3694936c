# Issue #12 (and item 0 of #10): the machine the guest sees. A CMOS RTC answers at 0x70/0x71
# (the rtc_cmos probe no longer gives up as "broken", and the clock reads the host's time);
# CPUID has the TSC-deadline timer, the hypervisor bit and KVM's paravirt leaves (the guest
# picks kvm-clock), hides SVM/VMX unless krun_set_nested_virt(ctx, true), and describes a
# topology that matches the vCPU count.

# The words of the guest's first /proc/cpuinfo "flags" line (printed as <flags=...>).
guest_flags() { sed -n 's/^<flags=\(.*\)>$/\1/p' "$1.txt"; }

# has_word WORDS WORD: WORD is one of the blank-separated WORDS.
has_word() { case " $1 " in *" $2 "*) return 0 ;; esac; return 1; }

FLAGS_CMD='f=$(grep -m1 "^flags" /proc/cpuinfo); echo "<flags=${f#*: }>"'

register machine_rtc
case_machine_rtc() {
  r=$(guest_root) || fail "no busybox root for the guest"
  before=$(date +%s)
  guest rtc run --root="$r" -- /bin/sh -c 'dmesg | grep -i rtc;
    echo "<name=$(cat /sys/class/rtc/rtc0/name)>";
    echo "<rtc=$(cat /sys/class/rtc/rtc0/since_epoch)>"'
  after=$(date +%s)
  expect_rc rtc 0
  ! has rtc.txt 'rtc_cmos.*(broken|not accessible)' ||
    fail "the guest's rtc_cmos probe failed: $(grep -a -m1 'rtc_cmos' rtc.txt)"
  has rtc.txt 'rtc_cmos rtc_cmos: registered as rtc0' ||
    fail "no 'rtc_cmos rtc_cmos: registered as rtc0' in the guest's dmesg: $(excerpt rtc.txt)"
  expect_line rtc "<name=rtc_cmos rtc_cmos>"
  t=$(sed -n 's/^<rtc=\([0-9][0-9]*\)>$/\1/p' rtc.txt)
  [ -n "$t" ] || fail "no <rtc=SECONDS> line: $(excerpt rtc.txt)"
  # The guest read its RTC between $before and $after on the host's clock; allow a minute of
  # slack either side for the RTC's whole-second steps and a slow lab.
  [ "$t" -ge $((before - 60)) ] && [ "$t" -le $((after + 60)) ] ||
    fail "guest RTC reads $t s since the epoch, host time was $before..$after"
}

register machine_cpuid
case_machine_cpuid() {
  r=$(guest_root) || fail "no busybox root for the guest"
  guest cpu run --root="$r" -- /bin/sh -c "$FLAGS_CMD"'
    echo "<clocksource=$(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)>"'
  expect_rc cpu 0
  flags=$(guest_flags cpu)
  [ -n "$flags" ] || fail "no <flags=...> line: $(excerpt cpu.txt)"
  for want in tsc_deadline_timer hypervisor; do
    has_word "$flags" "$want" || fail "the guest's CPU flags lack $want: $flags"
  done
  for unwanted in svm vmx; do
    ! has_word "$flags" "$unwanted" ||
      fail "the guest sees $unwanted without krun_set_nested_virt: $flags"
  done
  expect_line cpu "<clocksource=kvm-clock>"
}

register machine_nested
case_machine_nested() {
  want=""
  for m in kvm_amd:svm kvm_intel:vmx; do
    p=/sys/module/${m%%:*}/parameters/nested
    [ -r "$p" ] || continue
    case $(cat "$p") in 1 | Y) want=${m#*:} ;; esac
  done
  [ -n "$want" ] || skip "the host's KVM does not allow nesting (kvm_amd/kvm_intel nested parameter off or module absent)"
  r=$(guest_root) || fail "no busybox root for the guest"
  guest nest run --root="$r" --nested -- /bin/sh -c "$FLAGS_CMD"
  expect_rc nest 0
  flags=$(guest_flags nest)
  [ -n "$flags" ] || fail "no <flags=...> line: $(excerpt nest.txt)"
  has_word "$flags" "$want" ||
    fail "krun_set_nested_virt(true) on a host that allows nesting: no $want flag: $flags"
}

register machine_topology_2cpu
case_machine_topology_2cpu() {
  r=$(guest_root) || fail "no busybox root for the guest"
  guest topo run --root="$r" --cpus=2 -- /bin/sh -c '
    dmesg | grep -E "CPU topo|smpboot"
    echo "<processors=$(grep -c ^processor /proc/cpuinfo)>"
    grep -E "^(physical id|siblings|core id|cpu cores|apicid|initial apicid)" /proc/cpuinfo
    echo "<online=$(cat /sys/devices/system/cpu/online)>"
    for c in 0 1; do
      t=/sys/devices/system/cpu/cpu$c/topology
      echo "<cpu$c threads=$(cat $t/thread_siblings_list) cores=$(cat $t/core_siblings_list) core_id=$(cat $t/core_id) package=$(cat $t/physical_package_id)>"
    done'
  expect_rc topo 0
  expect_line topo "<processors=2>"
  expect_line topo "<online=0-1>"
  expect_line topo "<cpu0 threads=0 cores=0-1 core_id=0 package=0>"
  expect_line topo "<cpu1 threads=1 cores=0-1 core_id=1 package=0>"
  printf 'physical id\t: 0\nsiblings\t: 2\ncore id\t\t: %s\ncpu cores\t: 2\napicid\t\t: %s\ninitial apicid\t: %s\n' \
    0 0 0 >expected.txt
  printf 'physical id\t: 0\nsiblings\t: 2\ncore id\t\t: %s\ncpu cores\t: 2\napicid\t\t: %s\ninitial apicid\t: %s\n' \
    1 1 1 >>expected.txt
  grep -a -E '^(physical id|siblings|core id|cpu cores|apicid|initial apicid)' topo.txt >got.txt
  cmp -s expected.txt got.txt ||
    fail "/proc/cpuinfo topology differs: expected $(tr '\t\n' ' |' <expected.txt) got $(tr '\t\n' ' |' <got.txt)"
}


# Issue #16 item 5: krun_split_irqchip(ctx, true) puts the IOAPIC in the VMM (version 0x20,
# KVM's reads 0x11) with no PIC or PIT. The guest's boot log names the IOAPIC it found and the
# missing PIC; moving the root share's interrupt to vCPU 1 (the IOAPIC entry's destination
# changes, so the VMM replaces the MSI route) keeps its interrupts coming, now on CPU1. The
# in-kernel run is the control. KRUN_E2E_SPLIT_IRQCHIP=1 is how the CASE+split runs ask
# vmtest for the split irqchip, so this case goes through it too.
SPLIT_CMD='dmesg | sed "s/^\[[^]]*\] /<kmsg> /" | grep -E "IOAPIC\[0\]|legacy PIC"
  d=$(ls -d /sys/bus/virtio/drivers/virtiofs/virtio* | head -n 1); d=${d##*/}
  irq=$(grep " $d\$" /proc/interrupts | cut -d: -f1 | tr -d " ")
  echo 2 >/proc/irq/$irq/smp_affinity || echo "<no affinity>"
  c1() { grep "^ *$irq:" /proc/interrupts | awk "{print \$3}"; }
  before=$(c1)
  cat /bin/busybox /bin/busybox >/dev/null; ls -lR /bin >/dev/null
  echo "<irq=$irq cpu1 $before -> $(c1)>"
  echo "<xt-pic lines=$(grep -c XT-PIC /proc/interrupts)>"'

# The CPU1 counts of the <irq=N cpu1 BEFORE -> AFTER> line of $1.txt grew.
cpu1_grew() {
  l=$(sed -n 's/^<irq=[0-9]* cpu1 \([0-9]*\) -> \([0-9]*\)>$/\1 \2/p' "$1.txt")
  [ -n "$l" ] || fail "no <irq=N cpu1 BEFORE -> AFTER> line: $(excerpt "$1.txt")"
  set -- $l
  [ "$2" -gt "$1" ] || fail "the root share's interrupts did not reach CPU1 after its affinity moved there: $1 -> $2"
}

register machine_split_irqchip
case_machine_split_irqchip() {
  r=$(guest_root) || fail "no busybox root for the guest"
  export KRUN_E2E_SPLIT_IRQCHIP=1
  guest split run --root="$r" --cpus=2 -- /bin/sh -c "$SPLIT_CMD"
  unset KRUN_E2E_SPLIT_IRQCHIP
  expect_rc split 0
  expect_line split "<kmsg> IOAPIC[0]: apic_id 2, version 32, address 0xfec00000, GSI 0-23"
  expect_line split "<kmsg> Using NULL legacy PIC"
  expect_line split "<xt-pic lines=0>"
  cpu1_grew split
  guest kern run --root="$r" --cpus=2 -- /bin/sh -c "$SPLIT_CMD"
  expect_rc kern 0
  expect_line kern "<kmsg> IOAPIC[0]: apic_id 2, version 17, address 0xfec00000, GSI 0-23"
  ! has kern.txt "legacy PIC" || fail "the in-kernel irqchip run found no PIC: $(grep -a 'legacy PIC' kern.txt)"
  expect_line kern "<xt-pic lines=1>"
  cpu1_grew kern
}
