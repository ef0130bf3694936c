#!/bin/sh
# guest.sh "DIRS": the guest side of tests/posix/run. Runs every pjdfstest .t file of the
# directories DIRS (under /pjd/tests), each in a fresh directory of the root share, and
# prints "@@t FILE OK NOTOK" for each file and "@@f FILE <the not ok line>" for each failed
# assertion. The suite mostly sleeps (to see timestamps move), so JOBS directories (default
# 4) run at a time, each in its own subshell; each group's reports are printed when it ends.
PJD=${PJD:-/pjd}
WORK=${WORK:-/pjdwork}
JOBS=${JOBS:-4}
mkdir -p "$WORK" || exit 1
run_dir() {
  for t in "$PJD"/tests/"$1"/*.t; do
    [ -f "$t" ] || continue
    w=$WORK/$1-${t##*/}
    mkdir -p "$w" && cd "$w" || return 1
    out=$(sh "$t" 2>/dev/null)
    ok=$(printf '%s\n' "$out" | grep -c '^ok')
    nok=$(printf '%s\n' "$out" | grep -c '^not ok')
    echo "@@t $t $ok $nok"
    printf '%s\n' "$out" | grep '^not ok' | sed "s|^|@@f $t |"
    cd / && rm -rf "$w"
  done
}
set -- $1
while [ $# -gt 0 ]; do
  group=""
  while [ $# -gt 0 ] && [ "$(echo $group | wc -w)" -lt "$JOBS" ]; do
    run_dir "$1" >"$WORK/$1.report" 2>&1 &
    group="$group $1"
    shift
  done
  wait
  for d in $group; do
    cat "$WORK/$d.report"
  done
done
echo "@@done"
