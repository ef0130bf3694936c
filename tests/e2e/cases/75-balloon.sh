# virtio-balloon free page reporting (issue #16 item 2): memory the guest frees goes back to
# the host. Uses vm_bg/vm_wait/wait_for/vm_rss_kib from cases/50-net.sh (sourced before this
# file) and tests/e2e/guest/memhog.c, static, as /bin/memhog in the guest root.

MEMHOG=${MEMHOG:-$HERE/memhog}

# Centiseconds since the lab host booted: sub-second timing in busybox sh.
balloon_now_cs() { awk '{ split($1, t, "."); print t[1] * 100 + substr(t[2] "00", 1, 2) }' /proc/uptime; }

# The guest shows its balloon device bound to virtio_balloon with the features upstream
# negotiates (STATS_VQ 1, FREE_PAGE_HINT 3, REPORTING 5, VERSION_1 32), then allocates and
# touches 200 MiB, holds them, frees them and waits. The VMM's VmRSS, sampled while the guest
# holds the memory, must fall by at least 150 MiB within 10 s of the free; the note gives the
# lowest VmRSS of the 20 s after the free.
register balloon_free_page_reporting_rss
case_balloon_free_page_reporting_rss() {
  copy_root root || fail "cannot copy the busybox root"
  cp "$MEMHOG" root/bin/memhog || fail "cannot copy memhog into the guest root"
  want=$(feature_bits 1 3 5 32)
  vm_bg hog run --mem=768 --root="$PWD/root" -- /bin/sh -c \
    'for d in /sys/bus/virtio/devices/*; do
       [ "$(cat $d/device)" = 0x0005 ] || continue
       echo "<balloon $(basename "$(readlink $d/driver)") $(cat $d/features)>"
     done
     exec /bin/memhog 200 4 25'
  wait_for hog.out '<touched 200>' 120 || fail "the guest never touched its memory: $(excerpt hog.out) $(excerpt hog.err)"
  pid=$(cat hog.pid 2>/dev/null)
  peak=$(vm_rss_kib "$pid")
  [ -n "$peak" ] || fail "no VmRSS for the VMM process '$pid'"
  wait_for hog.out '<freed 200>' 60 || fail "the guest never freed its memory: $(excerpt hog.out)"
  t0=$(balloon_now_cs)
  low=$peak
  took=""
  while [ $(($(balloon_now_cs) - t0)) -lt 2000 ]; do
    r=$(vm_rss_kib "$pid")
    [ -n "$r" ] || break
    [ "$r" -lt "$low" ] && low=$r
    # The time it took to fall by 150 MiB; then on, for the figure after the free.
    if [ -z "$took" ] && [ $((peak - low)) -ge 153600 ]; then
      took=$(($(balloon_now_cs) - t0))
    fi
    sleep 0.2
  done
  drop=$((peak - low))
  echo "#   note: balloon_free_page_reporting_rss: VMM VmRSS ${peak} KiB holding 200 MiB, ${low} KiB at least in the 20 s after the free (-${drop} KiB), ${took:+-150 MiB after $((took / 100)).$((took % 100 / 10)) s}"
  vm_wait hog
  expect_line hog "<balloon virtio_balloon $want>"
  expect_line hog "<touched 200>"
  expect_line hog "<freed 200>"
  expect_line hog "<done>"
  expect_rc hog 0
  [ -n "$took" ] || fail "the VMM's VmRSS fell by only ${drop} KiB (from $peak to $low) in 20 s after the guest freed 200 MiB"
  [ "$took" -le 1000 ] || fail "the VMM's VmRSS fell by ${drop} KiB, but only after $((took / 100)) s (want <= 10 s)"
}
