/*
 * benchrun: run one VMM process (a libkrun client) and measure it from the outside.
 *
 *   benchrun OUTFILE MARK TIMEOUT_S -- COMMAND [ARGS...]
 *
 * Runs COMMAND with its stdout and stderr on a pipe, copies what arrives to OUTFILE, and when
 * the process has ended prints one line:
 *   "wall_ms=W first_ms=F rss_kb=R user_ms=U sys_ms=S status=X"
 * W: from the fork to the process's end; F: to the first appearance of MARK in its output
 * (-1 if it never came); R: its peak RSS (ru_maxrss, all threads); U, S: its CPU time (all
 * threads); X: its exit status (128+N for signal N). After TIMEOUT_S the process is killed
 * (status 137).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static pid_t child;

static void on_alarm(int sig)
{
    (void)sig;
    if (child > 0)
        kill(child, SIGKILL);
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static long tv_ms(struct timeval tv)
{
    return tv.tv_sec * 1000L + tv.tv_usec / 1000L;
}

int main(int argc, char **argv)
{
    if (argc < 6 || strcmp(argv[4], "--") != 0) {
        fprintf(stderr, "usage: benchrun OUTFILE MARK TIMEOUT_S -- COMMAND [ARGS...]\n");
        return 2;
    }
    const char *mark = argv[2];
    size_t mark_len = strlen(mark);
    FILE *out = fopen(argv[1], "w");
    if (!out) {
        perror(argv[1]);
        return 2;
    }
    int fds[2];
    if (pipe(fds) != 0) {
        perror("pipe");
        return 2;
    }
    double t0 = now_ms();
    child = fork();
    if (child < 0) {
        perror("fork");
        return 2;
    }
    if (child == 0) {
        dup2(fds[1], 1);
        dup2(fds[1], 2);
        close(fds[0]);
        close(fds[1]);
        execvp(argv[5], argv + 5);
        perror(argv[5]);
        _exit(127);
    }
    close(fds[1]);
    signal(SIGALRM, on_alarm);
    alarm((unsigned)atoi(argv[3]));

    /* MARK may straddle two reads: keep the last mark_len - 1 bytes before each new read. */
    char buf[65536 + 256];
    size_t keep = 0;
    double first = -1;
    for (;;) {
        ssize_t n = read(fds[0], buf + keep, 65536);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        fwrite(buf + keep, 1, (size_t)n, out);
        size_t len = keep + (size_t)n;
        if (first < 0 && mark_len > 0 && memmem(buf, len, mark, mark_len))
            first = now_ms() - t0;
        keep = mark_len > 1 && mark_len - 1 < 256 ? mark_len - 1 : 0;
        if (keep > len)
            keep = len;
        memmove(buf, buf + len - keep, keep);
    }
    int status = 0;
    struct rusage ru;
    while (wait4(child, &status, 0, &ru) < 0) {
        if (errno != EINTR) {
            perror("wait4");
            return 2;
        }
    }
    double wall = now_ms() - t0;
    fclose(out);
    int rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    printf("wall_ms=%.0f first_ms=%.0f rss_kb=%ld user_ms=%ld sys_ms=%ld status=%d\n", wall, first,
           ru.ru_maxrss, tv_ms(ru.ru_utime), tv_ms(ru.ru_stime), rc);
    return 0;
}
