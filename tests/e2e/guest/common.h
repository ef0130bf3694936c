/*
 * The helpers every e2e guest tool repeats: fatal errors, bad usage, decimal arguments and a
 * monotonic clock. A tool defines TOOL (its name, for messages) before including this file.
 * Each helper is static and marked unused, so a tool takes only what it calls.
 */
#ifndef E2E_GUEST_COMMON_H
#define E2E_GUEST_COMMON_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef TOOL
#error "define TOOL (the tool's name) before including common.h"
#endif

#define E2E_UNUSED __attribute__((unused))

/* "TOOL: WHAT: strerror(errno)" on stderr, exit 1. */
E2E_UNUSED static void die(const char *what)
{
    fprintf(stderr, TOOL ": %s: %s\n", what, strerror(errno));
    exit(1);
}

/* Exit 2: the usage is in the comment at the top of the tool's source. */
E2E_UNUSED static void usage(void)
{
    fprintf(stderr, TOOL ": bad usage (see the comment at the top of " TOOL ".c)\n");
    exit(2);
}

/* A whole decimal argument, or usage(). */
E2E_UNUSED static unsigned long long number(const char *s)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end)
        usage();
    return v;
}

/* Seconds on the monotonic clock. */
E2E_UNUSED static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

#endif
