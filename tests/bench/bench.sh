#!/bin/sh
# bench.sh: the lab (or a KVM host) side of `make bench`. POSIX sh, busybox is enough.
#
#   sh bench.sh ROUNDS OURS_LIBDIR REF_LIBDIR
#
# Each round runs every workload with our library and then with the reference (the order
# alternates per round), each through the same client (vmtest, which links libkrun.so.1 and
# gets either library from LD_LIBRARY_PATH), measured by benchrun. Prints one line per figure:
#   "@@bench LIB ROUND NAME VALUE"
# and the raw output of a failed run. tests/bench/run makes the table.
#
# Environment: BENCH_BLK_MIB (virtio-blk sequential write then read of a raw disk, O_DIRECT in
# the guest, default 128), BENCH_RAND_SECS (then 4 KiB O_DIRECT random reads of that disk for
# this many seconds, by 1 and by 4 jobs: randread, tests/e2e/guest/randread.c; default 10),
# BENCH_FS_MIB (sequential read, default 256), BENCH_WRITE_MIB (sequential write, default 32:
# our writes ran at ~1 MiB/s in the lab), BENCH_FILES (metadata walk,
# default 10000), BENCH_NET_MIB (each way, default 64), BENCH_MEM (guest MiB, default 256),
# BENCH_DAX_MIB (the file read with dd from a share with and without a DAX window, default
# 256), BENCH_DAX_MMAP_MIB (the file touched page by page through mmap, default 64),
# BENCH_ONLY (the workloads to run, of: true echo fs dax blk net balloon; default all),
# KRUN_BENCH_ROOTFS (a busybox root; default $KRUNLAB_ROOTFS), BENCH_VM_TIMEOUT (default 300).
set -u

HERE=$(cd "$(dirname "$0")" && pwd)
ROUNDS=$1 OURS=$2 REF=$3
FS_MIB=${BENCH_FS_MIB:-256}
WRITE_MIB=${BENCH_WRITE_MIB:-32}
FILES=${BENCH_FILES:-10000}
NET_MIB=${BENCH_NET_MIB:-64}
MEM=${BENCH_MEM:-256}
BLK_MIB=${BENCH_BLK_MIB:-128}
RAND_SECS=${BENCH_RAND_SECS:-10}
VM_TIMEOUT=${BENCH_VM_TIMEOUT:-300}
DAX_MIB=${BENCH_DAX_MIB:-256}
DAX_MMAP_MIB=${BENCH_DAX_MMAP_MIB:-64}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/krun-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
ROOT=$WORK/root
BASE_LD=${LD_LIBRARY_PATH:-}

# Both passthrough file systems keep one host fd per guest inode in use: with the lab's
# default limits (1024 soft, 4096 hard) upstream's walk of 10 000 files saw only ~900 of them
# and ours ~4000 (it raises the soft limit to the hard one). Raise both for both.
if ! ulimit -n 65536 2>/dev/null; then
  ulimit -S -n "$(ulimit -H -n)" 2>/dev/null
  echo "bench: cannot raise RLIMIT_NOFILE to 65536 (now $(ulimit -n)): the metadata walk may see fewer files"
fi

# A private copy of the guest root (the fs figures write into it), with netio and the
# metadata tree: FILES empty files, 100 per directory.
cp -a "${KRUN_BENCH_ROOTFS:-$KRUNLAB_ROOTFS}" "$ROOT" || exit 1
cp "$HERE/netio" "$ROOT/bin/netio" || exit 1
cp "$HERE/memhog" "$ROOT/bin/memhog" || exit 1
cp "$HERE/randread" "$ROOT/bin/randread" || exit 1
cp "$HERE/daxmap" "$ROOT/bin/daxmap" || exit 1
mkdir -p "$ROOT/bdata" "$ROOT/meta"
# The file the guests read, written here (not through virtio-fs).
dd if=/dev/zero of="$ROOT/bdata/r" bs=1M count="$FS_MIB" 2>/dev/null || exit 1
d=0
while [ $((d * 100)) -lt "$FILES" ]; do
  mkdir "$ROOT/meta/$d"
  (cd "$ROOT/meta/$d" && seq 1 100 | xargs touch)
  d=$((d + 1))
done
echo "bench: $(find "$ROOT/meta" -type f | wc -l) files in the metadata tree, ${FS_MIB} MiB read, ${WRITE_MIB} MiB written, ${NET_MIB} MiB each way, ${MEM} MiB guests, $ROUNDS rounds"

# Guest-side timing: /proc/uptime (10 ms steps), so the figures exclude boot.
T='u() { read a b </proc/uptime; echo $a; }; d() { awk "BEGIN { printf \"%.2f\", $2 - $1 }"; }'
FS_CMD="$T"'
t0=$(u); dd if=/dev/zero of=/bdata/w bs=1M count='"$WRITE_MIB"' 2>/dev/null && sync; t1=$(u); rm -f /bdata/w
echo 3 >/proc/sys/vm/drop_caches
t2=$(u); dd if=/bdata/r of=/dev/null bs=1M 2>/dev/null; t3=$(u)
echo 3 >/proc/sys/vm/drop_caches
t4=$(u); n=$(find /meta -type f -exec stat -c %s {} + | wc -l); t5=$(u)
echo "@@m fs_write_s $(d $t0 $t1)"; echo "@@m fs_read_s $(d $t2 $t3)"
echo "@@m meta_walk_s $(d $t4 $t5)"; echo "@@m meta_files $n"'
NET_CMD="$T"'
t0=$(u); netio connect tcp:127.0.0.1:18301 --retry=20 recv; t1=$(u)
t2=$(u); netio connect tcp:127.0.0.1:18302 --retry=20 send '"$((NET_MIB * 1048576))"' 7; t3=$(u)
echo "@@m net_in_s $(d $t0 $t1)"; echo "@@m net_out_s $(d $t2 $t3)"'
# Scripts in the root rather than in argv: the exec arguments may travel on the guest kernel's
# command line, which is no place for newlines and quotes.
BLK_CMD="$T"'
t0=$(u); dd if=/dev/zero of=/dev/vda bs=1M count='"$BLK_MIB"' oflag=direct 2>/dev/null || exit 1; t1=$(u)
t2=$(u); dd if=/dev/vda of=/dev/null bs=1M count='"$BLK_MIB"' iflag=direct 2>/dev/null || exit 1; t3=$(u)
echo "@@m blk_write_s $(d $t0 $t1)"; echo "@@m blk_read_s $(d $t2 $t3)"
# IOPS as randread measured them (its own clock, CLOCK_MONOTONIC).
for j in 1 4; do
  r=$(randread /dev/vda '"$RAND_SECS"' $j) || exit 1
  echo "$r"; echo "@@m blk_randread_iops_j$j ${r##*iops=}"
done'
# DAX: the same host directory as two shares, "dax" with a window (mounted dax=always) and
# "nodax" without; cold guest caches for each read. A library whose "dax" share does not
# mount with DAX (statx shows no DAX attribute) reports dax_mount 0 and no DAX figures.
DAX_CMD="$T"'
mkdir -p /mnt/d /mnt/n
mount -t virtiofs nodax /mnt/n || exit 1
dax=0
mount -t virtiofs -o dax=always dax /mnt/d 2>/dev/null && daxmap isdax /mnt/d/r | grep -q "=1>" && dax=1
echo "@@m dax_mount $dax"
echo 3 >/proc/sys/vm/drop_caches
t0=$(u); dd if=/mnt/n/r of=/dev/null bs=1M 2>/dev/null || exit 1; t1=$(u)
echo 3 >/proc/sys/vm/drop_caches
t2=$(u); daxmap touch /mnt/n/m >/dev/null || exit 1; t3=$(u)
echo "@@m nodax_read_s $(d $t0 $t1)"; echo "@@m nodax_mmap_s $(d $t2 $t3)"
if [ $dax = 1 ]; then
  echo 3 >/proc/sys/vm/drop_caches
  t4=$(u); dd if=/mnt/d/r of=/dev/null bs=1M 2>/dev/null || exit 1; t5=$(u)
  echo 3 >/proc/sys/vm/drop_caches
  t6=$(u); daxmap touch /mnt/d/m >/dev/null || exit 1; t7=$(u)
  echo "@@m dax_read_s $(d $t4 $t5)"; echo "@@m dax_mmap_s $(d $t6 $t7)"
fi
echo "@@m dax_done 1"'
mkdir -p "$WORK/dax"
dd if=/dev/zero of="$WORK/dax/r" bs=1M count="$DAX_MIB" 2>/dev/null || exit 1
dd if=/dev/zero of="$WORK/dax/m" bs=1M count="$DAX_MMAP_MIB" 2>/dev/null || exit 1
printf '%s\n' "$DAX_CMD" >"$ROOT/bench-dax.sh"
printf '%s\n' "$BLK_CMD" >"$ROOT/bench-blk.sh"
printf '%s\n' "$FS_CMD" >"$ROOT/bench-fs.sh"
printf '%s\n' "$NET_CMD" >"$ROOT/bench-net.sh"

# one LIB ROUND NAME MARK -- CMD...: one VM; its benchrun figures as NAME_*.
one() {
  lib=$1 round=$2 name=$3 mark=$4
  shift 5
  case $lib in ours) dir=$OURS ;; *) dir=$REF ;; esac
  out=$WORK/$lib-$round-$name.out
  res=$(LD_LIBRARY_PATH="$dir${BASE_LD:+:$BASE_LD}" "$HERE/benchrun" "$out" "$mark" "$VM_TIMEOUT" -- \
    "$HERE/vmtest" run --cpus=1 --mem="$MEM" --root="$ROOT" ${VM_EXTRA:-} -- "$@")
  st=$(echo "$res" | sed -n 's/.*status=\([0-9-]*\).*/\1/p')
  if [ "$st" != 0 ] || { [ -n "$mark" ] && ! grep -q "$mark" "$out"; }; then
    echo "bench: $lib $name (round $round) failed: $res; its output:"
    tail -n 15 "$out" | sed 's/^/bench:   /'
    return 1
  fi
  for kv in $res; do
    k=${kv%%=*} v=${kv#*=}
    [ "$k" = status ] || echo "@@bench $lib $round ${name}_$k $v"
  done
  grep -a '^@@m ' "$out" | tr -d '\r' | while read -r _ k v; do echo "@@bench $lib $round $k $v"; done
}

# Centiseconds since boot, for the balloon's timing.
now_cs() { awk '{ split($1, t, "."); print t[1] * 100 + substr(t[2] "00", 1, 2) }' /proc/uptime; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null; }

# balloon LIB ROUND: free page reporting. The guest (768 MiB) touches 200 MiB, holds them 4 s,
# frees them and waits 25 s; the VMM's VmRSS while it holds (balloon_held_kb), the lowest within
# 20 s after the free (balloon_after_kb), and the seconds until it had fallen by 150 MiB
# (balloon_drop_s; none when it never did).
balloon() {
  lib=$1 round=$2
  case $lib in ours) dir=$OURS ;; *) dir=$REF ;; esac
  out=$WORK/$lib-$round-balloon.out pidf=$WORK/balloon.pid
  rm -f "$pidf"
  LD_LIBRARY_PATH="$dir${BASE_LD:+:$BASE_LD}" timeout "$VM_TIMEOUT" "$HERE/vmtest" run --cpus=1 \
    --mem=768 --root="$ROOT" --pid-file="$pidf" -- /bin/memhog 200 4 25 >"$out" 2>&1 </dev/null &
  vp=$!
  i=0
  until grep -q '<touched 200>' "$out" 2>/dev/null; do
    i=$((i + 1))
    if [ "$i" -gt 600 ] || ! kill -0 "$vp" 2>/dev/null; then
      echo "bench: $lib balloon (round $round) failed: the guest never touched its memory; its output:"
      tail -n 15 "$out" | sed 's/^/bench:   /'
      wait "$vp"
      return 1
    fi
    sleep 0.2
  done
  pid=$(cat "$pidf" 2>/dev/null)
  held=$(rss_kb "$pid")
  until grep -q '<freed 200>' "$out" 2>/dev/null || ! kill -0 "$vp" 2>/dev/null; do sleep 0.2; done
  t0=$(now_cs) low=$held took=""
  while [ $(($(now_cs) - t0)) -lt 2000 ]; do
    rss=$(rss_kb "$pid") # not $r: that is the round loop's
    [ -n "$rss" ] || break
    [ "$rss" -lt "$low" ] && low=$rss
    if [ -z "$took" ] && [ $((held - low)) -ge 153600 ]; then took=$(($(now_cs) - t0)); fi
    sleep 0.2
  done
  wait "$vp"
  st=$?
  if [ "$st" != 0 ] || ! grep -q '<done>' "$out"; then
    echo "bench: $lib balloon (round $round) failed: status $st; its output:"
    tail -n 15 "$out" | sed 's/^/bench:   /'
    return 1
  fi
  echo "@@bench $lib $round balloon_held_kb $held"
  echo "@@bench $lib $round balloon_after_kb $low"
  [ -z "$took" ] || echo "@@bench $lib $round balloon_drop_s $((took / 100)).$((took % 100 / 10))"
}

# want WORKLOAD: whether BENCH_ONLY (when set) names it.
want() { case " ${BENCH_ONLY:-$1} " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

r=1
while [ "$r" -le "$ROUNDS" ]; do
  if [ $((r % 2)) -eq 1 ]; then order="ours ref"; else order="ref ours"; fi
  for lib in $order; do
    want true || break
    one "$lib" "$r" true "" -- /bin/true
  done
  for lib in $order; do
    want echo || break
    one "$lib" "$r" echo "@@first-byte@@" -- /bin/printf "@@first%sbyte@@\n" -
  done
  for lib in $order; do
    want fs || break
    one "$lib" "$r" fs "@@m meta_files" -- /bin/sh /bench-fs.sh
  done
  for lib in $order; do
    want dax || break
    # A 512 MiB window, upstream's size for the root.
    VM_EXTRA="--virtiofs2=dax:$WORK/dax:536870912 --virtiofs=nodax:$WORK/dax" \
      one "$lib" "$r" dax "@@m dax_done" -- /bin/sh /bench-dax.sh
  done
  for lib in $order; do
    want blk || break
    # A fresh sparse raw disk per run, so both libraries write to unallocated blocks.
    rm -f "$WORK/blk.img" && dd if=/dev/zero of="$WORK/blk.img" bs=1M count=0 seek="$BLK_MIB" 2>/dev/null
    VM_EXTRA="--disk=bench0:raw:-:$WORK/blk.img" one "$lib" "$r" blk "@@m blk_randread_iops_j4" -- /bin/sh /bench-blk.sh
  done
  for lib in $order; do
    want net || break
    "$HERE/netio" listen tcp:127.0.0.1:18301 send $((NET_MIB * 1048576)) 5 >"$WORK/net-in.txt" 2>&1 &
    p1=$!
    "$HERE/netio" listen tcp:127.0.0.1:18302 recv >"$WORK/net-out.txt" 2>&1 &
    p2=$!
    one "$lib" "$r" net "@@m net_out_s" -- /bin/sh /bench-net.sh
    kill "$p1" "$p2" 2>/dev/null
    wait "$p1" "$p2" 2>/dev/null
  done
  for lib in $order; do
    want balloon || break
    balloon "$lib" "$r"
  done
  r=$((r + 1))
done
echo "bench: done"
