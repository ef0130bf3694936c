/*
 * c_return ROOT: the C extension krunrs_start_return (cases/72-c-return.sh). Runs two VMs
 * one after the other in this process, each `/bin/sh -c` with ROOT as the guest root, and
 * prints, around each run, this process's fd and thread counts (/proc/self/fd and
 * /proc/self/task) and what the call returned. The guests' stdout is this program's stdout,
 * so the lines interleave in order. Ends with a call on a consumed context (-ENOENT) and
 * exits 0 if every call returned.
 *
 * A third VM ends while a TSI connect of its guest is still under way on the host: its
 * wget connects to a listener of this program whose accept queue is full, so the host's SYN
 * gets no answer. A thread polls /proc/net/tcp meanwhile and says whether it saw that
 * connect in SYN-SENT during the run; after the return there must be none left (nothing of
 * the VM still waits for it).
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

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

/* A listener on 127.0.0.1 whose accept queue is full (backlog 0 and one connect never
 * accepted): Linux drops further SYNs to it. Returns its port, or -1. */
static int full_listener(void)
{
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(l, 0) < 0 ||
        getsockname(l, (struct sockaddr *)&a, &len) < 0)
        return -1;
    int c = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c < 0 || (connect(c, (struct sockaddr *)&a, sizeof(a)) < 0 && errno != EINPROGRESS))
        return -1;
    usleep(200000);
    return ntohs(a.sin_port);
}

/* Sockets in SYN-SENT (state 02) to 127.0.0.1:PORT in /proc/net/tcp. */
static int syn_sent_to(int port)
{
    FILE *f = fopen("/proc/net/tcp", "r");
    if (f == NULL)
        return -1;
    char line[256], want[32];
    snprintf(want, sizeof(want), "0100007F:%04X 02", port);
    int n = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strstr(line, want) != NULL)
            n++;
    }
    fclose(f);
    return n;
}

/* Counted from a baseline, so that no socket of this program's own can pass for the VMM's. */
static atomic_int watch_port, watch_base, watch_stop, watch_seen;

static void *watch_syn_sent(void *unused)
{
    (void)unused;
    while (!atomic_load(&watch_stop)) {
        if (syn_sent_to(atomic_load(&watch_port)) > atomic_load(&watch_base))
            atomic_store(&watch_seen, 1);
        usleep(50000);
    }
    return NULL;
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
    int port = full_listener();
    if (port < 0) {
        perror("c_return: the full listener");
        return 1;
    }
    char script[160];
    snprintf(script, sizeof(script),
             "wget -q -O /dev/null http://127.0.0.1:%d/ 2>/dev/null & sleep 3; exit 4", port);
    atomic_store(&watch_port, port);
    atomic_store(&watch_base, syn_sent_to(port));
    pthread_t watcher;
    if (pthread_create(&watcher, NULL, watch_syn_sent, NULL) != 0)
        return 1;
    int third, rc3 = run("vm3", argv[1], script, &third);
    atomic_store(&watch_stop, 1);
    pthread_join(watcher, NULL);
    printf("vm3: connect under way during the run: %s; after it: %d\n",
           atomic_load(&watch_seen) ? "seen" : "not seen",
           syn_sent_to(port) - atomic_load(&watch_base));
    if (rc3 < 0)
        return 1;
    /* The context was consumed, as krun_start_enter consumes it. */
    printf("consumed ctx: %d\n", krunrs_start_return((uint32_t)first));
    printf("done\n");
    return 0;
}
