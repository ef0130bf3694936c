/*
 * grambridge: the host peer of the unixgram e2e cases (tests/e2e/cases/55-virtio-net.sh), a
 * stand-in for gvproxy: it binds a unix datagram socket and bridges its datagrams, one
 * Ethernet frame each, to a tap interface and back.
 *
 *   grambridge [--vfkit] SOCKET TAP
 *
 * Prints "<gram-listening>" once SOCKET is bound. The first datagram's sender becomes the
 * peer. With --vfkit that first datagram must be vfkit's magic "VFKT": it prints
 * "<vfkit-magic>" and goes on, or "<no-vfkit-magic LEN>" and exits 1. Runs until killed.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static void die(const char *what)
{
    fprintf(stderr, "grambridge: %s: %s\n", what, strerror(errno));
    exit(1);
}

int main(int argc, char **argv)
{
    int vfkit = 0;
    if (argc > 1 && strcmp(argv[1], "--vfkit") == 0) {
        vfkit = 1;
        argv++;
        argc--;
    }
    if (argc != 3) {
        fprintf(stderr, "usage: grambridge [--vfkit] SOCKET TAP\n");
        return 2;
    }
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    snprintf(ifr.ifr_name, IFNAMSIZ, "%s", argv[2]);
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
    int tap = open("/dev/net/tun", O_RDWR);
    if (tap < 0 || ioctl(tap, TUNSETIFF, &ifr) < 0)
        die("tap");

    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", argv[1]);
    unlink(sa.sun_path);
    int sock = socket(AF_UNIX, SOCK_DGRAM, 0);
    if (sock < 0 || bind(sock, (struct sockaddr *)&sa, sizeof sa) < 0)
        die("bind");
    int big = 4 << 20;
    setsockopt(sock, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    setsockopt(sock, SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    printf("<gram-listening>\n");
    fflush(stdout);

    static unsigned char buf[70000];
    struct sockaddr_un peer;
    socklen_t peer_len = sizeof peer;
    ssize_t n = recvfrom(sock, buf, sizeof buf, 0, (struct sockaddr *)&peer, &peer_len);
    if (n < 0)
        die("recvfrom");
    if (vfkit) {
        if (n != 4 || memcmp(buf, "VFKT", 4) != 0) {
            printf("<no-vfkit-magic %zd>\n", n);
            return 1;
        }
        printf("<vfkit-magic>\n");
        fflush(stdout);
    } else if (write(tap, buf, (size_t)n) < 0) {
        die("tap write");
    }
    if (connect(sock, (struct sockaddr *)&peer, peer_len) < 0)
        die("connect to the peer");

    struct pollfd fds[2] = {{.fd = sock, .events = POLLIN}, {.fd = tap, .events = POLLIN}};
    for (;;) {
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            die("poll");
        }
        if (fds[0].revents & POLLIN) {
            n = recv(sock, buf, sizeof buf, 0);
            if (n > 0 && write(tap, buf, (size_t)n) < 0 && errno != EIO)
                die("tap write");
        }
        if (fds[1].revents & POLLIN) {
            n = read(tap, buf, sizeof buf);
            if (n > 0 && send(sock, buf, (size_t)n, 0) < 0 && errno != ECONNREFUSED &&
                errno != ENOBUFS && errno != EAGAIN)
                die("send");
        }
    }
}
