/*
 * vsockflood: the vsock connection flood of cases/85-untrusted.sh. Static: the guest half
 * runs in the busybox guest root; the host half on the lab host.
 *
 *   vsockflood flood PORT EXTRA BYTES FILL_SECS HOLD_SECS   (guest)
 *       print "<ready>", wait 2 s (the host reads the VMM's memory before the flood), then
 *       open AF_VSOCK streams to the host (CID 2) PORT, one after another, without limit,
 *       until EXTRA connects in a row have failed; each open one is made non-blocking and
 *       written into (never read) until it takes no more or holds BYTES. Then for up to
 *       FILL_SECS keep writing into every connection that becomes writable, until none has
 *       taken a byte for 3 s. Prints
 *         <open=N> <refused=M errno=NAME> <mixed-errnos=K> <connect-secs=S>
 *         <written=BYTES> <full=C> <write-errors=E> <fill-secs=S> <pace-waits=W>
 *       (full: connections holding BUF_ALLOC = 262144 bytes or more), then "<holding>",
 *       keeps every connection open for HOLD_SECS, closes them all and prints "<closed>".
 *   vsockflood sink PATH                                    (host)
 *       listen on the unix socket PATH, print "<listening>", accept every connection and
 *       keep it open without ever reading; on SIGTERM print "<accepted=N>" and exit.
 *
 * Exit status: 0, 1 with "vsockflood: WHAT: ERROR" on stderr, 2 for bad usage.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <linux/vm_sockets.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define TOOL "vsockflood"
#include "common.h"

#define CHUNK 65536
#define BUF_ALLOC 262144ULL
#define MAX_FDS 65536

/* As many fds as the hard limit allows. */
static void raise_nofile(void)
{
    struct rlimit r;
    if (getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur < r.rlim_max) {
        r.rlim_cur = r.rlim_max;
        setrlimit(RLIMIT_NOFILE, &r);
    }
}

static const char *errno_name(int e)
{
    switch (e) {
    case ECONNRESET: return "ECONNRESET";
    case ECONNREFUSED: return "ECONNREFUSED";
    case ETIMEDOUT: return "ETIMEDOUT";
    case EMFILE: return "EMFILE";
    case ENFILE: return "ENFILE";
    case ENOMEM: return "ENOMEM";
    case ENOBUFS: return "ENOBUFS";
    case EAGAIN: return "EAGAIN";
    case EINTR: return "EINTR";
    default: return "OTHER";
    }
}

struct conn {
    int fd;
    unsigned long long written;
    int dead;
};

static unsigned char data[CHUNK];
static unsigned long long write_errors;

/* The guest kernel queues what a connection's credit allows before the device has taken it:
 * 2048 connections could queue more than guest RAM. Writes wait (up to 10 s each time) while
 * less than 48 MiB is available, so the flood runs at the device's pace, not into the OOM
 * killer. Checked every 16 writes. */
static long mem_available_kib(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    char line[128];
    long v = -1;
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %ld kB", &v) == 1)
            break;
    fclose(f);
    return v;
}

static unsigned long long pace_waits;

static void pace(void)
{
    static unsigned n;
    if (n++ % 16)
        return;
    for (int i = 0; i < 200; i++) {
        long v = mem_available_kib();
        if (v < 0 || v >= 49152)
            return;
        if (i == 0)
            pace_waits++;
        usleep(50000);
    }
}

/* Write into c until it would block, fails, or holds `bytes`; returns the bytes taken. */
static unsigned long long fill(struct conn *c, unsigned long long bytes)
{
    unsigned long long took = 0;
    while (!c->dead && c->written < bytes) {
        pace();
        size_t n = bytes - c->written < CHUNK ? (size_t)(bytes - c->written) : CHUNK;
        ssize_t w = write(c->fd, data, n);
        if (w > 0) {
            c->written += (unsigned long long)w;
            took += (unsigned long long)w;
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else if (w < 0 && errno == EAGAIN) {
            break;
        } else {
            c->dead = 1;
            write_errors++;
        }
    }
    return took;
}

static void flood(unsigned port, unsigned long long extra, unsigned long long bytes,
                  double fill_secs, unsigned hold_secs)
{
    static struct conn conns[MAX_FDS];
    memset(data, 0x5a, sizeof data);
    raise_nofile();
    printf("<ready>\n");
    fflush(stdout);
    sleep(2);

    struct sockaddr_vm a;
    memset(&a, 0, sizeof a);
    a.svm_family = AF_VSOCK;
    a.svm_cid = VMADDR_CID_HOST;
    a.svm_port = port;
    size_t open = 0;
    unsigned long long refused = 0, mixed = 0, in_a_row = 0;
    int first_errno = 0;
    double t0 = now();
    while (in_a_row < extra && open < MAX_FDS) {
        int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            /* Out of guest fds or memory: a refusal too, by the guest's own kernel. */
            int e = errno;
            refused++;
            in_a_row++;
            if (!first_errno)
                first_errno = e;
            else if (e != first_errno)
                mixed++;
            continue;
        }
        /* The lab is slow: a connect may take long, and that is not a refusal. */
        struct timeval tv = {.tv_sec = 60};
        setsockopt(fd, AF_VSOCK, SO_VM_SOCKETS_CONNECT_TIMEOUT, &tv, sizeof tv);
        if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
            int e = errno;
            close(fd);
            refused++;
            in_a_row++;
            if (!first_errno)
                first_errno = e;
            else if (e != first_errno)
                mixed++;
            continue;
        }
        in_a_row = 0;
        if (fcntl(fd, F_SETFL, O_NONBLOCK) != 0)
            die("fcntl");
        conns[open].fd = fd;
        conns[open].written = 0;
        conns[open].dead = 0;
        fill(&conns[open], bytes);
        open++;
    }
    double t1 = now();
    printf("<open=%zu>\n<refused=%llu errno=%s>\n<mixed-errnos=%llu>\n<connect-secs=%.1f>\n", open,
           refused, first_errno ? errno_name(first_errno) : "none", mixed, t1 - t0);
    fflush(stdout);

    static struct pollfd pfd[MAX_FDS];
    static size_t idx[MAX_FDS];
    double end = t1 + fill_secs, last_progress = t1;
    for (;;) {
        double t = now();
        if (t >= end || t - last_progress >= 3.0)
            break;
        size_t n = 0;
        for (size_t i = 0; i < open; i++) {
            if (conns[i].dead || conns[i].written >= bytes)
                continue;
            pfd[n].fd = conns[i].fd;
            pfd[n].events = POLLOUT;
            pfd[n].revents = 0;
            idx[n++] = i;
        }
        if (n == 0)
            break;
        int r = poll(pfd, n, 200);
        if (r < 0 && errno != EINTR)
            die("poll");
        for (size_t k = 0; r > 0 && k < n; k++) {
            if (!pfd[k].revents)
                continue;
            if (fill(&conns[idx[k]], bytes) > 0)
                last_progress = now();
            else if (pfd[k].revents & (POLLERR | POLLHUP))
                conns[idx[k]].dead = 1, write_errors++;
        }
    }
    unsigned long long total = 0, full = 0;
    for (size_t i = 0; i < open; i++) {
        total += conns[i].written;
        if (conns[i].written >= BUF_ALLOC)
            full++;
    }
    printf("<written=%llu>\n<full=%llu>\n<write-errors=%llu>\n<fill-secs=%.1f>\n<pace-waits=%llu>\n",
           total, full, write_errors, now() - t1, pace_waits);
    printf("<holding>\n");
    fflush(stdout);
    sleep(hold_secs);
    for (size_t i = 0; i < open; i++)
        close(conns[i].fd);
    printf("<closed>\n");
    fflush(stdout);
}

static volatile sig_atomic_t stop;
static void on_term(int sig) { (void)sig; stop = 1; }

static void sink(const char *path)
{
    raise_nofile();
    struct sockaddr_un a;
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof a.sun_path)
        usage();
    strcpy(a.sun_path, path);
    unlink(path);
    int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (l < 0)
        die("socket");
    if (bind(l, (struct sockaddr *)&a, sizeof a) != 0)
        die("bind");
    if (listen(l, 4096) != 0)
        die("listen");
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    printf("<listening>\n");
    fflush(stdout);
    unsigned long long accepted = 0, failed = 0;
    while (!stop) {
        struct pollfd p = {.fd = l, .events = POLLIN};
        int r = poll(&p, 1, 200);
        if (r <= 0)
            continue;
        int c = accept4(l, NULL, NULL, SOCK_CLOEXEC);
        if (c >= 0)
            accepted++; /* kept open, never read */
        else if (errno != EINTR && errno != EAGAIN)
            failed++;
    }
    printf("<accepted=%llu>\n<accept-errors=%llu>\n", accepted, failed);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    if (argc == 7 && strcmp(argv[1], "flood") == 0) {
        flood((unsigned)number(argv[2]), number(argv[3]), number(argv[4]),
              (double)number(argv[5]), (unsigned)number(argv[6]));
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "sink") == 0) {
        sink(argv[2]);
        return 0;
    }
    usage();
}
