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
# Environment: BENCH_FS_MIB (sequential read, default 256), BENCH_WRITE_MIB (sequential
# write, default 32: our writes ran at ~1 MiB/s in the lab), BENCH_FILES (metadata walk,
# default 10000), BENCH_NET_MIB (each way, default 64), BENCH_MEM (guest MiB, default 256),
# KRUN_BENCH_ROOTFS (a busybox root; default $KRUNLAB_ROOTFS), BENCH_VM_TIMEOUT (default 300).
set -u

HERE=$(cd "$(dirname "$0")" && pwd)
ROUNDS=$1 OURS=$2 REF=$3
FS_MIB=${BENCH_FS_MIB:-256}
WRITE_MIB=${BENCH_WRITE_MIB:-32}
FILES=${BENCH_FILES:-10000}
NET_MIB=${BENCH_NET_MIB:-64}
MEM=${BENCH_MEM:-256}
VM_TIMEOUT=${BENCH_VM_TIMEOUT:-300}
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
printf '%s\n' "$FS_CMD" >"$ROOT/bench-fs.sh"
printf '%s\n' "$NET_CMD" >"$ROOT/bench-net.sh"

# one LIB ROUND NAME MARK -- CMD...: one VM; its benchrun figures as NAME_*.
one() {
  lib=$1 round=$2 name=$3 mark=$4
  shift 5
  case $lib in ours) dir=$OURS ;; *) dir=$REF ;; esac
  out=$WORK/$lib-$round-$name.out
  res=$(LD_LIBRARY_PATH="$dir${BASE_LD:+:$BASE_LD}" "$HERE/benchrun" "$out" "$mark" "$VM_TIMEOUT" -- \
    "$HERE/vmtest" run --cpus=1 --mem="$MEM" --root="$ROOT" -- "$@")
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

r=1
while [ "$r" -le "$ROUNDS" ]; do
  if [ $((r % 2)) -eq 1 ]; then order="ours ref"; else order="ref ours"; fi
  for lib in $order; do
    one "$lib" "$r" true "" -- /bin/true
  done
  for lib in $order; do
    one "$lib" "$r" echo "@@first-byte@@" -- /bin/printf "@@first%sbyte@@\n" -
  done
  for lib in $order; do
    one "$lib" "$r" fs "@@m meta_files" -- /bin/sh /bench-fs.sh
  done
  for lib in $order; do
    "$HERE/netio" listen tcp:127.0.0.1:18301 send $((NET_MIB * 1048576)) 5 >"$WORK/net-in.txt" 2>&1 &
    p1=$!
    "$HERE/netio" listen tcp:127.0.0.1:18302 recv >"$WORK/net-out.txt" 2>&1 &
    p2=$!
    one "$lib" "$r" net "@@m net_out_s" -- /bin/sh /bench-net.sh
    kill "$p1" "$p2" 2>/dev/null
    wait "$p1" "$p2" 2>/dev/null
  done
  r=$((r + 1))
done
echo "bench: done"
