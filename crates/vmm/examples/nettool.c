/*
 * nettool: a tiny static socket tool for vsock/TSI checks, usable in the guest (busybox has
 * no AF_VSOCK) and on the lab host. Every stream mode gets one connected socket, writes MSG
 * (if given; "-": all of stdin), shuts down its write side, then copies what it receives to
 * stdout until EOF.
 *
 *   nettool vsock-connect CID PORT [MSG]
 *   nettool vsock-listen PORT [MSG]        accept one connection
 *   nettool unix-connect PATH [MSG]
 *   nettool unix-listen PATH [MSG]         accept one connection (PATH is replaced)
 *   nettool udp-echo PORT                  echo datagrams on 127.0.0.1:PORT forever
 *   nettool udp-send IP PORT MSG           send one datagram, print the reply (5 s timeout)
 *
 * Build: cc -static -O2 -o nettool nettool.c
 * Exit status: 0, or 1 with "nettool: CALL: ERROR" on stderr.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/vm_sockets.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

static void die(const char *what)
{
    fprintf(stderr, "nettool: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void talk(int fd, const char *msg)
{
    char buf[65536];
    ssize_t n;
    if (msg && strcmp(msg, "-") == 0) {
        while ((n = read(0, buf, sizeof buf)) > 0) {
            ssize_t off = 0;
            while (off < n) {
                ssize_t w = write(fd, buf + off, (size_t)(n - off));
                if (w < 0)
                    die("write");
                off += w;
            }
        }
        if (n < 0)
            die("read stdin");
    } else if (msg) {
        size_t len = strlen(msg), off = 0;
        while (off < len) {
            n = write(fd, msg + off, len - off);
            if (n < 0)
                die("write");
            off += (size_t)n;
        }
    }
    if (shutdown(fd, SHUT_WR) < 0)
        die("shutdown");
    while ((n = read(fd, buf, sizeof buf)) > 0) {
        if (write(1, buf, (size_t)n) != n)
            die("write stdout");
    }
    if (n < 0)
        die("read");
    close(fd);
}

static int accept_one(int fd, struct sockaddr *addr, socklen_t len)
{
    if (bind(fd, addr, len) < 0)
        die("bind");
    if (listen(fd, 4) < 0)
        die("listen");
    int c = accept(fd, NULL, NULL);
    if (c < 0)
        die("accept");
    close(fd);
    return c;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: see the comment at the top of nettool.c\n");
        return 2;
    }
    const char *mode = argv[1];
    if (strncmp(mode, "vsock-", 6) == 0) {
        struct sockaddr_vm a = {.svm_family = AF_VSOCK};
        int fd = socket(AF_VSOCK, SOCK_STREAM, 0);
        if (fd < 0)
            die("socket(AF_VSOCK)");
        if (strcmp(mode, "vsock-connect") == 0 && argc >= 4) {
            a.svm_cid = (unsigned)atoi(argv[2]);
            a.svm_port = (unsigned)atoi(argv[3]);
            if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0)
                die("connect");
            talk(fd, argc > 4 ? argv[4] : NULL);
        } else {
            a.svm_cid = VMADDR_CID_ANY;
            a.svm_port = (unsigned)atoi(argv[2]);
            talk(accept_one(fd, (struct sockaddr *)&a, sizeof a), argc > 3 ? argv[3] : NULL);
        }
    } else if (strncmp(mode, "unix-", 5) == 0) {
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        snprintf(a.sun_path, sizeof a.sun_path, "%s", argv[2]);
        int fd = socket(AF_UNIX, SOCK_STREAM, 0);
        if (fd < 0)
            die("socket(AF_UNIX)");
        if (strcmp(mode, "unix-connect") == 0) {
            if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0)
                die("connect");
            talk(fd, argc > 3 ? argv[3] : NULL);
        } else {
            unlink(argv[2]);
            talk(accept_one(fd, (struct sockaddr *)&a, sizeof a), argc > 3 ? argv[3] : NULL);
        }
    } else if (strcmp(mode, "udp-echo") == 0) {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        int fd = socket(AF_INET, SOCK_DGRAM, 0);
        if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0)
            die("udp bind");
        for (;;) {
            char buf[65536];
            struct sockaddr_storage from;
            socklen_t flen = sizeof from;
            ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &flen);
            if (n < 0)
                die("recvfrom");
            if (sendto(fd, buf, (size_t)n, 0, (struct sockaddr *)&from, flen) < 0)
                die("sendto");
        }
    } else if (strcmp(mode, "udp-send") == 0 && argc >= 5) {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[3]))};
        if (inet_pton(AF_INET, argv[2], &a.sin_addr) != 1) {
            fprintf(stderr, "nettool: bad address %s\n", argv[2]);
            return 2;
        }
        int fd = socket(AF_INET, SOCK_DGRAM, 0);
        if (fd < 0)
            die("socket(AF_INET, SOCK_DGRAM)");
        struct timeval tv = {.tv_sec = 5};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        if (sendto(fd, argv[4], strlen(argv[4]), 0, (struct sockaddr *)&a, sizeof a) < 0)
            die("sendto");
        char buf[65536];
        ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
        if (n < 0)
            die("recv");
        buf[n] = 0;
        printf("%s\n", buf);
    } else {
        fprintf(stderr, "nettool: unknown mode or missing arguments\n");
        return 2;
    }
    return 0;
}
