#!/bin/sh
# ABI tests against an installed libkrun: tests/abi/run.sh PREFIX [LIBDIR]
#   PREFIX/include/libkrun.h, LIBDIR/libkrun.so*, LIBDIR/pkgconfig/libkrun.pc (LIBDIR
#   defaults to PREFIX/lib). Needs cc, pkg-config, nm, and for the krun-sys consumer cargo
#   and libclang (set SKIP_KRUN_SYS=1 to skip that part).
# 1. the C conformance test (bad arguments -> exact errnos), built with -Wall -Werror;
# 2. nm -D: the exported krun_* and krunrs_* names equal tests/abi/symbols.txt (upstream's
#    72) plus tests/abi/extensions.txt (this implementation's extensions, krunrs_*);
# 3. the krun-sys consumer (bindgen over the installed header).
set -eu
[ $# -ge 1 ] || { echo "usage: $0 PREFIX [LIBDIR]" >&2; exit 2; }
prefix=$(cd "$1" && pwd)
libdir=${2:-$prefix/lib}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export PKG_CONFIG_PATH="$libdir/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
export LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

echo "== C ABI conformance"
# shellcheck disable=SC2046
cc -Wall -Werror -std=gnu11 -o "$work/abi_conformance" "$here/abi_conformance.c" \
    $(pkg-config --cflags --libs libkrun)
"$work/abi_conformance"

echo "== exported symbols"
lib="$libdir/libkrun.so.1"
[ -e "$lib" ] || lib="$libdir/libkrun.so"
nm -D --defined-only "$lib" | awk '{print $NF}' | grep -E '^krun(rs)?_' | sort -u > "$work/exported.txt"
{ cat "$here/symbols.txt"; grep -v '^#' "$here/extensions.txt"; } | grep . | sort -u > "$work/expected.txt"
if ! diff -u "$work/expected.txt" "$work/exported.txt"; then
    echo "FAIL: exported krun_*/krunrs_* symbols differ from tests/abi/symbols.txt + extensions.txt" >&2
    exit 1
fi
echo "ok: $(grep -c '^krun_' "$work/exported.txt") krun_* symbols and $(grep -c '^krunrs_' "$work/exported.txt") extension(s), as listed"
soname=$(readelf -d "$lib" 2>/dev/null | sed -n 's/.*SONAME.*\[\(.*\)\]/\1/p')
if [ -n "$soname" ] && [ "$soname" != "libkrun.so.1" ]; then
    echo "FAIL: SONAME is $soname, not libkrun.so.1" >&2
    exit 1
fi

if [ "${SKIP_KRUN_SYS:-0}" = 1 ]; then
    echo "== krun-sys consumer skipped (SKIP_KRUN_SYS=1)"
    exit 0
fi
echo "== krun-sys consumer"
CARGO_TARGET_DIR="${KRUN_SYS_TARGET_DIR:-$root/target/krun-sys-consumer}" \
    cargo run --quiet --manifest-path "$root/tests/krun-sys-consumer/Cargo.toml"
