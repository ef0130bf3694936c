/*
 * memhog: the guest side of the balloon case (cases/75-balloon.sh). Static, for the busybox
 * guest root.
 *
 *   memhog MIB HOLD_SECS AFTER_SECS
 *
 * Maps MIB MiB of anonymous memory and writes every page (so each is backed by a page of
 * the VMM's guest RAM), prints "<touched MIB>", holds it HOLD_SECS seconds, unmaps it,
 * prints "<freed MIB>", sleeps AFTER_SECS seconds (the host watches the VMM's RSS fall
 * while the guest's free page reporting runs), prints "<done>" and exits 0.
 * Exit status 1 with "memhog: WHAT: ERROR" on stderr, 2 for bad usage.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static long arg(const char *s)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < 0) {
        fprintf(stderr, "memhog: bad number '%s'\n", s);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: memhog MIB HOLD_SECS AFTER_SECS\n");
        return 2;
    }
    long mib = arg(argv[1]);
    size_t len = (size_t)mib << 20;
    long page = sysconf(_SC_PAGESIZE);
    unsigned char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        fprintf(stderr, "memhog: mmap %ld MiB: %s\n", mib, strerror(errno));
        return 1;
    }
    /* Non-zero bytes in every page: no zero page, no sharing. */
    for (size_t off = 0; off < len; off += (size_t)page)
        memset(p + off, (int)(0x5a ^ (off >> 12)) | 1, 64);
    printf("<touched %ld>\n", mib);
    fflush(stdout);
    sleep((unsigned)arg(argv[2]));
    if (munmap(p, len) != 0) {
        fprintf(stderr, "memhog: munmap: %s\n", strerror(errno));
        return 1;
    }
    printf("<freed %ld>\n", mib);
    fflush(stdout);
    sleep((unsigned)arg(argv[3]));
    printf("<done>\n");
    return 0;
}
