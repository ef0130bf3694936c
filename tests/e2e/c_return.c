/*
 * c_return ROOT: the C extension krunrs_start_return (cases/72-c-return.sh). Runs two VMs
 * one after the other in this process, each `/bin/sh -c` with ROOT as the guest root, and
 * prints, around each run, this process's fd and thread counts (/proc/self/fd and
 * /proc/self/task) and what the call returned. The guests' stdout is this program's stdout,
 * so the lines interleave in order. Ends with a call on a consumed context (-ENOENT) and
 * exits 0 if every call returned.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <libkrun.h>

/* Entries of DIR, without . and .. (for /proc/self/fd: the opendir's own fd excluded). */
static int count(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            n++;
    }
    closedir(d);
    return strcmp(dir, "/proc/self/fd") == 0 ? n - 1 : n;
}

static int check(int rc, const char *what)
{
    if (rc < 0)
        fprintf(stderr, "c_return: %s: %s\n", what, strerror(-rc));
    return rc;
}

/* Configures a VM running `/bin/sh -c SCRIPT` on ROOT and runs it through the extension. */
static int run(const char *name, const char *root, const char *script, int *ctx_out)
{
    int fds = count("/proc/self/fd"), threads = count("/proc/self/task");
    printf("%s: before fds=%d threads=%d\n", name, fds, threads);
    fflush(stdout);
    int ctx = check(krun_create_ctx(), "krun_create_ctx");
    if (ctx < 0)
        return -1;
    const char *const argv[] = {"-c", script, NULL};
    const char *const envp[] = {NULL};
    if (check(krun_set_vm_config(ctx, 1, 256), "krun_set_vm_config") < 0 ||
        check(krun_set_root(ctx, root), "krun_set_root") < 0 ||
        check(krun_set_exec(ctx, "/bin/sh", argv, envp), "krun_set_exec") < 0)
        return -1;
    int rc = krunrs_start_return(ctx);
    fds = count("/proc/self/fd");
    threads = count("/proc/self/task");
    printf("%s: returned %d fds=%d threads=%d\n", name, rc, fds, threads);
    fflush(stdout);
    *ctx_out = ctx;
    return rc < 0 ? -1 : 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: c_return ROOT\n");
        return 2;
    }
    int first, second;
    if (run("vm1", argv[1], "echo hi; exit 7", &first) < 0)
        return 1;
    if (run("vm2", argv[1], "echo there; exit 3", &second) < 0)
        return 1;
    /* The context was consumed, as krun_start_enter consumes it. */
    printf("consumed ctx: %d\n", krunrs_start_return((uint32_t)first));
    printf("done\n");
    return 0;
}
