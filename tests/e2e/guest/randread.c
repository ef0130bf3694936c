/*
 * randread: 4 KiB random reads of a block device with O_DIRECT, for `make bench`'s IOPS row
 * (tests/bench/bench.sh). Static, for the busybox guest root (busybox dd cannot seek at
 * random).
 *
 *   randread DEVICE SECONDS JOBS
 *
 * Opens DEVICE with O_DIRECT, takes its size from lseek(SEEK_END), and runs JOBS processes
 * (1-64) that each issue synchronous 4096-byte preads at 4096-aligned pseudo-random offsets
 * of the whole device (each its own fixed seed, so every run reads the same offsets) until
 * SECONDS (1-3600) have passed on CLOCK_MONOTONIC. JOBS processes keep up to JOBS requests in
 * flight. Prints one line
 *   randread reads=N seconds=S iops=I
 * (S the measured seconds with 3 decimals, I = N / S rounded down) and exits 0. Any failed or
 * short read ends it with exit status 1 and "randread: WHAT: ERROR" on stderr; bad usage: 2.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TOOL "randread"
#include "common.h"

#define BLOCK 4096
#define MAX_JOBS 64

static long arg(const char *s, long lo, long hi)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || errno != 0 || v < lo || v > hi) {
        fprintf(stderr, "randread: bad number '%s' (%ld-%ld)\n", s, lo, hi);
        exit(2);
    }
    return v;
}

/* xorshift64*: cheap, and the same sequence on every run. */
static uint64_t next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1DULL;
}

/* One job: reads until `until`, writes its count (8 bytes) to fd `out`. */
static int job(const char *dev, int seed, double until, int out)
{
    int fd = open(dev, O_RDONLY | O_DIRECT);
    if (fd < 0) {
        fprintf(stderr, "randread: open %s: %s\n", dev, strerror(errno));
        return 1;
    }
    off_t size = lseek(fd, 0, SEEK_END);
    if (size < BLOCK) {
        fprintf(stderr, "randread: %s: size %lld is less than one block\n", dev, (long long)size);
        return 1;
    }
    uint64_t blocks = (uint64_t)size / BLOCK;
    void *buf;
    if (posix_memalign(&buf, BLOCK, BLOCK) != 0) {
        fprintf(stderr, "randread: no memory for the buffer\n");
        return 1;
    }
    uint64_t state = 0x9E3779B97F4A7C15ULL ^ (uint64_t)(seed + 1) * 0xBF58476D1CE4E5B9ULL;
    uint64_t reads = 0;
    while (now() < until) {
        /* A batch between clock reads: the clock is slow to read in a nested guest. */
        for (int i = 0; i < 16; i++) {
            off_t off = (off_t)(next(&state) % blocks) * BLOCK;
            ssize_t n = pread(fd, buf, BLOCK, off);
            if (n != BLOCK) {
                fprintf(stderr, "randread: pread at %lld: %s\n", (long long)off,
                        n < 0 ? strerror(errno) : "short read");
                return 1;
            }
            reads++;
        }
    }
    if (write(out, &reads, sizeof reads) != (ssize_t)sizeof reads) {
        fprintf(stderr, "randread: reporting the count: %s\n", strerror(errno));
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: randread DEVICE SECONDS JOBS\n");
        return 2;
    }
    const char *dev = argv[1];
    long secs = arg(argv[2], 1, 3600);
    int jobs = (int)arg(argv[3], 1, MAX_JOBS);
    int p[2];
    if (pipe(p) != 0) {
        fprintf(stderr, "randread: pipe: %s\n", strerror(errno));
        return 1;
    }
    double start = now(), until = start + (double)secs;
    for (int j = 0; j < jobs; j++) {
        pid_t pid = fork();
        if (pid < 0) {
            fprintf(stderr, "randread: fork: %s\n", strerror(errno));
            return 1;
        }
        if (pid == 0) {
            close(p[0]);
            _exit(job(dev, j, until, p[1]));
        }
    }
    close(p[1]);
    int failed = 0;
    for (int j = 0; j < jobs; j++) {
        int st;
        if (wait(&st) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
            failed = 1;
    }
    double took = now() - start;
    uint64_t total = 0, n;
    int got = 0;
    while (read(p[0], &n, sizeof n) == (ssize_t)sizeof n) {
        total += n;
        got++;
    }
    if (failed || got != jobs) {
        fprintf(stderr, "randread: %d of %d jobs reported\n", got, jobs);
        return 1;
    }
    printf("randread reads=%llu seconds=%.3f iops=%llu\n", (unsigned long long)total, took,
           (unsigned long long)((double)total / took));
    return 0;
}
