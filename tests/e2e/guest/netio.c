/*
 * netio: the socket tool of the e2e network cases, for the guest (static: the busybox root has
 * no libc, and busybox has no AF_VSOCK) and for the lab host. Data is generated from a seed
 * and hashed while it streams, so a case compares short "<... BYTES HASH>" lines instead of
 * moving files around; the hash does not depend on how reads and writes are split.
 *
 *   netio connect ADDR [--retry=SECS] ACTION [ARGS]   one connection (retry a refused or
 *                                                     missing peer for up to SECS)
 *   netio listen ADDR [--count=N] ACTION [ARGS]       print "<listening>", accept N
 *                                                     connections (default 1), one process each
 *   netio hash BYTES SEED      print "<data BYTES HASH>" for the generated stream
 *   netio udp-echo PORT        echo datagrams on 127.0.0.1:PORT until killed
 *   netio udp-send IP PORT MSG send MSG, print "<udp-reply REPLY>" (3 tries, 3 s each)
 *
 * ADDR: vsock:CID:PORT (connect) or vsock:PORT (listen), unix:PATH, tcp:IP:PORT.
 * ACTION:
 *   send BYTES SEED  write the stream, shut down the write side, wait for the peer's EOF (so
 *                    the bytes were all taken), print "<sent BYTES HASH>"
 *   recv             read to EOF, print "<recv BYTES HASH>", then close
 *   echo             write back what arrives, until EOF
 *   xfer BYTES SEED  send the stream and, at the same time, read what comes back to EOF;
 *                    print "<xfer BYTES HASH>" of what came back
 *   hold SECS        print "<holding>", sleep SECS without reading, then as recv
 *   msg TEXT         write TEXT, shut down the write side, copy the reply to stdout
 *
 * Exit status: 0, 1 with "netio: WHAT: ERROR" on stderr, 2 for bad usage.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <linux/vm_sockets.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TOOL "netio"
#include "common.h"

#define CHUNK 65536

/* Streaming hash over 8-byte words (FNV-style multiply, rotate); the tail is zero-padded. */
struct hasher {
    uint64_t h, n;
    unsigned char part[8];
    unsigned plen;
};

static void hash_word(struct hasher *s, uint64_t w)
{
    s->h = (s->h ^ w) * 0x100000001b3ULL;
    s->h = (s->h << 29) | (s->h >> 35);
}

static void hash_init(struct hasher *s) { memset(s, 0, sizeof *s); s->h = 0xcbf29ce484222325ULL; }

static void hash_update(struct hasher *s, const unsigned char *p, size_t len)
{
    s->n += len;
    while (len > 0 && s->plen > 0) {
        s->part[s->plen++] = *p++;
        len--;
        if (s->plen == 8) {
            uint64_t w;
            memcpy(&w, s->part, 8);
            hash_word(s, w);
            s->plen = 0;
        }
    }
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        hash_word(s, w);
        p += 8;
        len -= 8;
    }
    while (len > 0) {
        s->part[s->plen++] = *p++;
        len--;
    }
}

static uint64_t hash_final(struct hasher *s)
{
    if (s->plen > 0) {
        memset(s->part + s->plen, 0, 8 - s->plen);
        uint64_t w;
        memcpy(&w, s->part, 8);
        hash_word(s, w);
    }
    hash_word(s, s->n);
    return s->h;
}

/* The generated stream: xorshift64 words from a splitmix-scrambled seed. */
struct gen {
    uint64_t x;
};

static void gen_init(struct gen *g, uint64_t seed)
{
    uint64_t z = seed + 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    g->x = (z ^ (z >> 31)) | 1;
}

static void gen_fill(struct gen *g, unsigned char *buf, size_t len) /* len % 8 == 0 */
{
    for (size_t i = 0; i < len; i += 8) {
        g->x ^= g->x << 13;
        g->x ^= g->x >> 7;
        g->x ^= g->x << 17;
        memcpy(buf + i, &g->x, 8);
    }
}

static void write_all(int fd, const unsigned char *p, size_t len)
{
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            die("write");
        }
        p += w;
        len -= (size_t)w;
    }
}

static void say(const char *fmt, unsigned long long n, uint64_t h)
{
    printf(fmt, n, (unsigned long long)h);
    fflush(stdout);
}

/* Write BYTES of the stream for SEED to fd; returns the hash of what was written. */
static uint64_t send_stream(int fd, unsigned long long bytes, uint64_t seed)
{
    static unsigned char buf[CHUNK];
    struct gen g;
    struct hasher s;
    gen_init(&g, seed);
    hash_init(&s);
    while (bytes > 0) {
        size_t n = bytes < CHUNK ? (size_t)bytes : CHUNK;
        gen_fill(&g, buf, CHUNK);
        hash_update(&s, buf, n);
        write_all(fd, buf, n);
        bytes -= n;
    }
    return hash_final(&s);
}

/* Read fd to EOF; returns the hash, the count in *count. */
static uint64_t read_stream(int fd, unsigned long long *count, int out)
{
    static unsigned char buf[CHUNK];
    struct hasher s;
    hash_init(&s);
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("read");
        }
        if (n == 0)
            break;
        hash_update(&s, buf, (size_t)n);
        if (out >= 0)
            write_all(out, buf, (size_t)n);
    }
    *count = s.n;
    return hash_final(&s);
}

static void act(int fd, char **args, int nargs)
{
    unsigned long long n;
    if (nargs < 1)
        usage();
    const char *a = args[0];
    if (strcmp(a, "send") == 0 && nargs == 3) {
        unsigned long long bytes = number(args[1]);
        uint64_t h = send_stream(fd, bytes, number(args[2]));
        if (shutdown(fd, SHUT_WR) < 0)
            die("shutdown");
        read_stream(fd, &n, -1);
        say("<sent %llu %016llx>\n", bytes, h);
    } else if (strcmp(a, "recv") == 0 && nargs == 1) {
        uint64_t h = read_stream(fd, &n, -1);
        say("<recv %llu %016llx>\n", n, h);
    } else if (strcmp(a, "echo") == 0 && nargs == 1) {
        read_stream(fd, &n, fd);
        if (shutdown(fd, SHUT_WR) < 0)
            die("shutdown");
    } else if (strcmp(a, "xfer") == 0 && nargs == 3) {
        unsigned long long bytes = number(args[1]);
        uint64_t seed = number(args[2]);
        pid_t p = fork();
        if (p < 0)
            die("fork");
        if (p == 0) {
            send_stream(fd, bytes, seed);
            if (shutdown(fd, SHUT_WR) < 0)
                die("shutdown");
            _exit(0);
        }
        uint64_t h = read_stream(fd, &n, -1);
        int st = 0;
        if (waitpid(p, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fprintf(stderr, "netio: xfer: the sending process failed\n");
            exit(1);
        }
        say("<xfer %llu %016llx>\n", n, h);
    } else if (strcmp(a, "hold") == 0 && nargs == 2) {
        printf("<holding>\n");
        fflush(stdout);
        sleep((unsigned)number(args[1]));
        uint64_t h = read_stream(fd, &n, -1);
        say("<recv %llu %016llx>\n", n, h);
    } else if (strcmp(a, "msg") == 0 && nargs == 2) {
        write_all(fd, (const unsigned char *)args[1], strlen(args[1]));
        if (shutdown(fd, SHUT_WR) < 0)
            die("shutdown");
        read_stream(fd, &n, 1);
    } else {
        usage();
    }
    close(fd);
}

union addr {
    struct sockaddr sa;
    struct sockaddr_vm vm;
    struct sockaddr_un un;
    struct sockaddr_in in;
};

/* Parse ADDR into *a; returns the length and the family in *family. */
static socklen_t parse_addr(const char *text, int listening, union addr *a, int *family)
{
    memset(a, 0, sizeof *a);
    if (strncmp(text, "vsock:", 6) == 0) {
        *family = AF_VSOCK;
        a->vm.svm_family = AF_VSOCK;
        const char *p = text + 6;
        if (listening) {
            a->vm.svm_cid = VMADDR_CID_ANY;
            a->vm.svm_port = (unsigned)number(p);
        } else {
            const char *c = strchr(p, ':');
            if (!c)
                usage();
            char cid[16];
            snprintf(cid, sizeof cid, "%.*s", (int)(c - p), p);
            a->vm.svm_cid = (unsigned)number(cid);
            a->vm.svm_port = (unsigned)number(c + 1);
        }
        return sizeof a->vm;
    }
    if (strncmp(text, "unix:", 5) == 0) {
        *family = AF_UNIX;
        a->un.sun_family = AF_UNIX;
        if (strlen(text + 5) >= sizeof a->un.sun_path)
            usage();
        strcpy(a->un.sun_path, text + 5);
        return sizeof a->un;
    }
    if (strncmp(text, "tcp:", 4) == 0) {
        *family = AF_INET;
        char ip[64];
        const char *c = strrchr(text + 4, ':');
        if (!c)
            usage();
        snprintf(ip, sizeof ip, "%.*s", (int)(c - text - 4), text + 4);
        a->in.sin_family = AF_INET;
        a->in.sin_port = htons((uint16_t)number(c + 1));
        if (inet_pton(AF_INET, ip, &a->in.sin_addr) != 1)
            usage();
        return sizeof a->in;
    }
    usage();
    return 0;
}

static int do_connect(const char *text, double retry)
{
    union addr a;
    int family;
    socklen_t len = parse_addr(text, 0, &a, &family);
    double end = now() + retry;
    for (;;) {
        int fd = socket(family, SOCK_STREAM, 0);
        if (fd < 0)
            die("socket");
        if (connect(fd, &a.sa, len) == 0)
            return fd;
        int e = errno;
        close(fd);
        errno = e;
        if ((e != ECONNREFUSED && e != ENOENT && e != ECONNRESET) || now() >= end)
            die("connect");
        usleep(200000);
    }
}

static void do_listen(const char *text, long count, char **args, int nargs)
{
    union addr a;
    int family;
    socklen_t len = parse_addr(text, 1, &a, &family);
    int fd = socket(family, SOCK_STREAM, 0);
    if (fd < 0)
        die("socket");
    if (family == AF_UNIX)
        unlink(a.un.sun_path);
    int one = 1;
    if (family == AF_INET)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, &a.sa, len) < 0)
        die("bind");
    if (listen(fd, 16) < 0)
        die("listen");
    printf("<listening>\n");
    fflush(stdout);
    for (long i = 0; i < count; i++) {
        int c = accept(fd, NULL, NULL);
        if (c < 0) {
            if (errno == EINTR) {
                i--;
                continue;
            }
            die("accept");
        }
        pid_t p = fork();
        if (p < 0)
            die("fork");
        if (p == 0) {
            close(fd);
            act(c, args, nargs);
            _exit(0);
        }
        close(c);
    }
    close(fd);
    int st, bad = 0;
    while (wait(&st) > 0)
        bad |= !WIFEXITED(st) || WEXITSTATUS(st) != 0;
    exit(bad);
}

static void udp_echo(const char *port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)number(port))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0)
        die("udp bind");
    printf("<udp-listening>\n");
    fflush(stdout);
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
}

static void udp_send(const char *ip, const char *port, const char *msg)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)number(port))};
    if (inet_pton(AF_INET, ip, &a.sin_addr) != 1)
        usage();
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0)
        die("socket(AF_INET, SOCK_DGRAM)");
    struct timeval tv = {.tv_sec = 3};
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0)
        die("setsockopt");
    for (int i = 0; i < 3; i++) {
        if (sendto(fd, msg, strlen(msg), 0, (struct sockaddr *)&a, sizeof a) < 0)
            die("sendto");
        char buf[65536];
        ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            continue;
        if (n < 0)
            die("recv");
        buf[n] = 0;
        printf("<udp-reply %s>\n", buf);
        return;
    }
    fprintf(stderr, "netio: udp-send: no reply in 3 tries\n");
    exit(1);
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    if (argc < 2)
        usage();
    const char *mode = argv[1];
    if (strcmp(mode, "hash") == 0 && argc == 4) {
        struct hasher s;
        struct gen g;
        static unsigned char buf[CHUNK];
        unsigned long long bytes = number(argv[2]), left = bytes;
        gen_init(&g, number(argv[3]));
        hash_init(&s);
        while (left > 0) {
            size_t n = left < CHUNK ? (size_t)left : CHUNK;
            gen_fill(&g, buf, CHUNK);
            hash_update(&s, buf, n);
            left -= n;
        }
        say("<data %llu %016llx>\n", bytes, hash_final(&s));
        return 0;
    }
    if (strcmp(mode, "udp-echo") == 0 && argc == 3)
        udp_echo(argv[2]);
    if (strcmp(mode, "udp-send") == 0 && argc == 5) {
        udp_send(argv[2], argv[3], argv[4]);
        return 0;
    }
    if ((strcmp(mode, "connect") != 0 && strcmp(mode, "listen") != 0) || argc < 4)
        usage();
    int i = 3;
    double retry = 0;
    long count = 1;
    for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
        if (strncmp(argv[i], "--retry=", 8) == 0)
            retry = (double)number(argv[i] + 8);
        else if (strncmp(argv[i], "--count=", 8) == 0)
            count = (long)number(argv[i] + 8);
        else
            usage();
    }
    if (strcmp(mode, "connect") == 0)
        act(do_connect(argv[2], retry), &argv[i], argc - i);
    else
        do_listen(argv[2], count, &argv[i], argc - i);
    return 0;
}
