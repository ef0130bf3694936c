/*
 * vsockvm: a libkrun client for trying vsock, TSI and port maps by hand (in the KVM lab).
 * Only the public C API is used.
 *
 *   vsockvm [OPTIONS] ROOT COMMAND [ARGS...]
 *
 *   --log-level=N          krun_set_log_level(N)
 *   --no-implicit          krun_disable_implicit_vsock()
 *   --add-vsock=FEATURES   krun_add_vsock(FEATURES) (1: inet, 2: unix, 3: both, 0: none)
 *   --port-map=H:G         add to krun_set_port_map's list (repeatable)
 *   --empty-port-map       krun_set_port_map with an empty list
 *   --vsock-port=PORT:PATH[:listen]  krun_add_vsock_port2(PORT, PATH, listen) (repeatable)
 *   --tsi-scope=SCOPE[:SUBNET]       krun_set_tsi_scope(NULL, SUBNET, SCOPE)
 *
 * Build: cc -o vsockvm vsockvm.c -lkrun (with libkrun.h on the include path).
 * Exit status: the guest's, or 2 when a configuration call failed.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libkrun.h>

#define MAX 32

static void check(int err, const char *what)
{
    if (err < 0) {
        fprintf(stderr, "vsockvm: %s: %s\n", what, strerror(-err));
        exit(2);
    }
}

int main(int argc, char **argv)
{
    const char *maps[MAX + 1] = {0};
    int nmaps = 0;
    bool set_map = false;
    int i = 1;
    int ctx = krun_create_ctx();
    check(ctx, "krun_create_ctx");

    for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--log-level=", 12) == 0) {
            check(krun_set_log_level(atoi(a + 12)), "krun_set_log_level");
        } else if (strcmp(a, "--no-implicit") == 0) {
            check(krun_disable_implicit_vsock(ctx), "krun_disable_implicit_vsock");
        } else if (strncmp(a, "--add-vsock=", 12) == 0) {
            check(krun_add_vsock(ctx, atoi(a + 12)), "krun_add_vsock");
        } else if (strncmp(a, "--port-map=", 11) == 0 && nmaps < MAX) {
            maps[nmaps++] = a + 11;
            set_map = true;
        } else if (strcmp(a, "--empty-port-map") == 0) {
            set_map = true;
        } else if (strncmp(a, "--vsock-port=", 13) == 0) {
            char *spec = strdup(a + 13);
            char *colon = strchr(spec, ':');
            bool listen = false;
            if (!colon) {
                fprintf(stderr, "vsockvm: --vsock-port=PORT:PATH[:listen]\n");
                return 2;
            }
            *colon = 0;
            char *path = colon + 1;
            size_t len = strlen(path);
            if (len > 7 && strcmp(path + len - 7, ":listen") == 0) {
                path[len - 7] = 0;
                listen = true;
            }
            check(krun_add_vsock_port2(ctx, (uint32_t)atoi(spec), path, listen),
                  "krun_add_vsock_port2");
        } else if (strncmp(a, "--tsi-scope=", 12) == 0) {
            char *spec = strdup(a + 12);
            char *colon = strchr(spec, ':');
            if (colon)
                *colon++ = 0;
            check(krun_set_tsi_scope(ctx, NULL, colon, (uint8_t)atoi(spec)),
                  "krun_set_tsi_scope");
        } else {
            fprintf(stderr, "vsockvm: unknown option %s\n", a);
            return 2;
        }
    }
    if (argc - i < 2) {
        fprintf(stderr, "usage: vsockvm [OPTIONS] ROOT COMMAND [ARGS...]\n");
        return 2;
    }
    if (set_map)
        check(krun_set_port_map(ctx, maps), "krun_set_port_map");
    check(krun_set_vm_config(ctx, 1, 256), "krun_set_vm_config");
    check(krun_set_root(ctx, argv[i]), "krun_set_root");
    check(krun_set_workdir(ctx, "/"), "krun_set_workdir");
    static const char *const envp[] = {"PATH=/bin:/sbin:/usr/bin:/usr/sbin", NULL};
    check(krun_set_exec(ctx, argv[i + 1], (const char *const *)&argv[i + 2], envp),
          "krun_set_exec");
    int err = krun_start_enter(ctx);
    fprintf(stderr, "vsockvm: krun_start_enter: %s\n", strerror(-err));
    return 2;
}
