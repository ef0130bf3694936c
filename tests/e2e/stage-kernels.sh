#!/bin/sh
# stage-kernels.sh DIR: the guest kernels of cases/16-machine2.sh (krun_set_kernel), from the
# lab's own Debian kernel (`krunlab env`: KRUNLAB_KERNEL, a bzImage):
#   DIR/bzImage       that kernel as it is
#   DIR/vmlinux       its ELF vmlinux: the bzImage's payload, decompressed
#   DIR/vmlinux.zst   that vmlinux, zstd-compressed
# A file that cannot be made (no lab kernel, no lz4 or zstd here) is left out with a note on
# stderr; the cases that need it skip.
set -eu
dir=$1
krunlab=${KRUNLAB:-$(dirname "$0")/../lab/krunlab}
kernel=$("$krunlab" env | sed -n 's/^KRUNLAB_KERNEL=//p')
say() { echo "stage-kernels: $*" >&2; }
[ -f "$kernel" ] || { say "no lab kernel ($kernel): no kernels staged"; exit 0; }
mkdir -p "$dir"
cp "$kernel" "$dir/bzImage"
# Boot protocol: setup_sects at 0x1f1 (0 means 4), payload_offset and payload_length (le32)
# at 0x248 and 0x24c, the payload starting at the protected-mode code, (setup_sects+1)*512.
u8() { od -An -tu1 -j "$1" -N1 "$kernel" | tr -d ' '; }
u32() { od -An -tu4 -j "$1" -N4 "$kernel" | tr -d ' '; }
sects=$(u8 $((0x1f1)))
[ "$sects" -ne 0 ] || sects=4
start=$(((sects + 1) * 512 + $(u32 $((0x248)))))
len=$(u32 $((0x24c)))
magic=$(od -An -tx1 -j "$start" -N4 "$kernel" | tr -d ' ')
case $magic in
  02214c18) unpack="lz4 -dc" ;;
  1f8b*) unpack="gzip -dc" ;;
  fd377a58) unpack="xz -dc" ;;
  28b52ffd) unpack="zstd -dc" ;;
  *) say "unknown payload compression (magic $magic): no vmlinux"; exit 0 ;;
esac
command -v "${unpack%% *}" >/dev/null || { say "no ${unpack%% *}: no vmlinux"; exit 0; }
# (lz4 warns about the size the kernel build appends to the stream.)
tail -c +$((start + 1)) "$kernel" | head -c "$len" | $unpack >"$dir/vmlinux" 2>/dev/null || true
# The payload must have been an ELF vmlinux.
[ "$(head -c 4 "$dir/vmlinux" | od -An -tx1 | tr -d ' ')" = 7f454c46 ] ||
  { say "the payload is not an ELF file: no vmlinux"; rm -f "$dir/vmlinux"; exit 0; }
command -v zstd >/dev/null || { say "no zstd: no vmlinux.zst"; exit 0; }
zstd -q -3 -c "$dir/vmlinux" >"$dir/vmlinux.zst"
