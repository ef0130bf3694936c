/*
 * daxmap: the guest side of the DAX case (cases/33-dax.sh). Static, for the busybox guest
 * root.
 *
 *   daxmap isdax FILE          prints "<dax FILE=0|1>": statx's STATX_ATTR_DAX for FILE
 *   daxmap shared FILE         two processes, each with its own MAP_SHARED mapping of the
 *                              first page of FILE (opened separately): the child writes a
 *                              line at offset 0, the parent waits for it in its own mapping
 *                              and answers at offset 2048, which the child waits for in its
 *                              mapping; prints "<shared child saw: TEXT>" and
 *                              "<shared parent saw: TEXT>"
 *   daxmap write FILE OFF TEXT stores TEXT at OFF through a MAP_SHARED mapping of FILE,
 *                              msync(MS_SYNC)s and unmaps it; prints "<written N>"
 *   daxmap touch FILE          maps all of FILE read-only and reads one byte of every
 *                              page, in order (the mmap-heavy row of `make bench`); prints
 *                              "<touched PAGES pages, sum S>"
 *
 * Waits give up after 20 s. Exit status 1 with "daxmap: WHAT: ERROR" on stderr, 2 for bad
 * usage.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TOOL "daxmap"
#include "common.h"

#ifndef STATX_ATTR_DAX
#define STATX_ATTR_DAX 0x00200000
#endif

#define PAGE 4096
static const char CHILD_TEXT[] = "written by the child through its mapping";
static const char PARENT_TEXT[] = "answered by the parent through its mapping";

static char *map_file(const char *path, size_t len, off_t off)
{
    int fd = open(path, O_RDWR);
    if (fd < 0)
        die("open");
    char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, off);
    if (p == MAP_FAILED)
        die("mmap");
    close(fd);
    return p;
}

/* Waits until p starts with text (re-reading the mapping, never a cached copy). */
static int wait_for(volatile const char *p, const char *text)
{
    size_t n = strlen(text);
    for (int i = 0; i < 2000; i++) {
        size_t k = 0;
        while (k < n && p[k] == text[k])
            k++;
        if (k == n)
            return 0;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return -1;
}

static int isdax(const char *path)
{
    struct statx st;
    if (statx(AT_FDCWD, path, 0, STATX_BASIC_STATS, &st) != 0)
        die("statx");
    int dax = (st.stx_attributes_mask & STATX_ATTR_DAX) && (st.stx_attributes & STATX_ATTR_DAX);
    printf("<dax %s=%d>\n", path, dax);
    return 0;
}

static int shared(const char *path)
{
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) {
        char *p = map_file(path, PAGE, 0);
        memcpy(p, CHILD_TEXT, sizeof CHILD_TEXT);
        if (wait_for(p + 2048, PARENT_TEXT) != 0) {
            fprintf(stderr, "daxmap: the child never saw the parent's answer\n");
            _exit(1);
        }
        printf("<shared child saw: %.*s>\n", (int)strlen(PARENT_TEXT), p + 2048);
        fflush(stdout);
        _exit(0);
    }
    char *p = map_file(path, PAGE, 0);
    if (wait_for(p, CHILD_TEXT) != 0) {
        fprintf(stderr, "daxmap: the parent never saw the child's line\n");
        kill(pid, SIGKILL);
        return 1;
    }
    printf("<shared parent saw: %.*s>\n", (int)strlen(CHILD_TEXT), p);
    fflush(stdout);
    memcpy(p + 2048, PARENT_TEXT, sizeof PARENT_TEXT);
    int status;
    if (waitpid(pid, &status, 0) != pid)
        die("waitpid");
    if (msync(p, PAGE, MS_SYNC) != 0)
        die("msync");
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}

static int write_at(const char *path, const char *offs, const char *text)
{
    char *end;
    long off = strtol(offs, &end, 10);
    if (*offs == '\0' || *end != '\0' || off < 0) {
        fprintf(stderr, "daxmap: bad offset '%s'\n", offs);
        return 2;
    }
    off_t base = off & ~(off_t)(PAGE - 1);
    size_t len = (size_t)(off - base) + strlen(text);
    char *p = map_file(path, len, base);
    memcpy(p + (off - base), text, strlen(text));
    if (msync(p, len, MS_SYNC) != 0)
        die("msync");
    if (munmap(p, len) != 0)
        die("munmap");
    printf("<written %zu>\n", strlen(text));
    return 0;
}

static int touch(const char *path)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        die("open");
    struct stat st;
    if (fstat(fd, &st) != 0)
        die("fstat");
    size_t len = (size_t)st.st_size;
    if (len == 0) {
        printf("<touched 0 pages, sum 0>\n");
        return 0;
    }
    volatile const unsigned char *p = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        die("mmap");
    close(fd);
    unsigned long sum = 0, pages = 0;
    for (size_t off = 0; off < len; off += PAGE, pages++)
        sum += p[off];
    printf("<touched %lu pages, sum %lu>\n", pages, sum);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "isdax") == 0)
        return isdax(argv[2]);
    if (argc == 3 && strcmp(argv[1], "shared") == 0)
        return shared(argv[2]);
    if (argc == 3 && strcmp(argv[1], "touch") == 0)
        return touch(argv[2]);
    if (argc == 5 && strcmp(argv[1], "write") == 0)
        return write_at(argv[2], argv[3], argv[4]);
    fprintf(stderr, "usage: daxmap isdax FILE | shared FILE | write FILE OFF TEXT | touch FILE\n");
    return 2;
}
