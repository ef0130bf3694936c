# Issue #5 smoke test: with no network configured the implicit vsock device hijacks the
# guest's inet sockets (TSI), so a guest `wget` of the host's 127.0.0.1 reaches a server on
# the host, and init has configured dummy0 (203.0.113.1/24) as upstream's does.

register_split vsock_tsi_smoke
case_vsock_tsi_smoke() {
  command -v busybox >/dev/null 2>&1 && busybox httpd --help >/dev/null 2>&1 ||
    skip "no busybox httpd on this host"
  mkdir www
  head -c 100000 /dev/urandom >www/file
  want=$(md5sum <www/file | cut -d' ' -f1)
  port=18735
  busybox httpd -f -p "127.0.0.1:$port" -h "$PWD/www" &
  httpd=$!
  # The case runs in its own subshell: stop the server however it ends.
  trap 'kill "$httpd" 2>/dev/null' EXIT
  guest tsi run --root="$(guest_root)" -- /bin/sh -c \
    "wget -q -O - http://127.0.0.1:$port/file | md5sum; ip -4 addr show dummy0"
  expect_rc tsi 0
  has tsi.txt "^$want " || fail "the guest did not get the file's bytes: $(excerpt tsi.txt)"
  has tsi.txt "inet 203\.0\.113\.1/24" || fail "dummy0 is not configured: $(excerpt tsi.txt)"
}
