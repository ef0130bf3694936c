/*
 * chroot_vm: run one command in a microVM whose root filesystem is a host directory, the
 * smallest complete libkrun client. Like chroot(8), but the command runs under its own kernel.
 *
 *   chroot_vm [--log=PATH] [--cpus=N] [--mem=MIB] NEWROOT COMMAND [ARGS...]
 *
 * Build (after `make install`):
 *   cc -o chroot_vm chroot_vm.c $(pkg-config --cflags --libs libkrun)
 *
 * libkrun logs warnings and errors to stderr, or to PATH with --log (where RUST_LOG, e.g.
 * RUST_LOG=debug, can change the level). On success krun_start_enter never returns: this
 * process exits with the command's status when the VM ends.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libkrun.h>

static void usage(const char *prog)
{
    fprintf(stderr, "usage: %s [--log=PATH] [--cpus=N] [--mem=MIB] NEWROOT COMMAND [ARGS...]\n",
            prog);
    exit(EXIT_FAILURE);
}

/* Print "chroot_vm: CALL: TEXT" and exit when a libkrun call returned a negative errno. */
static void check(int ret, const char *call)
{
    if (ret < 0) {
        fprintf(stderr, "chroot_vm: %s failed: %s\n", call, strerror(-ret));
        exit(EXIT_FAILURE);
    }
}

static unsigned long number(const char *text, const char *what, unsigned long max)
{
    char *end = NULL;
    errno = 0;
    unsigned long value = strtoul(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || value == 0 || value > max) {
        fprintf(stderr, "chroot_vm: %s must be a number from 1 to %lu, not '%s'\n", what, max,
                text);
        exit(EXIT_FAILURE);
    }
    return value;
}

int main(int argc, char **argv)
{
    const char *log_path = NULL;
    unsigned long cpus = 1;
    unsigned long mem_mib = 512;
    int i = 1;

    for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
        if (strncmp(argv[i], "--log=", 6) == 0)
            log_path = argv[i] + 6;
        else if (strncmp(argv[i], "--cpus=", 7) == 0)
            cpus = number(argv[i] + 7, "--cpus", 255);
        else if (strncmp(argv[i], "--mem=", 6) == 0)
            mem_mib = number(argv[i] + 6, "--mem", 1UL << 20);
        else if (strcmp(argv[i], "--") == 0) {
            i++;
            break;
        } else
            usage(argv[0]);
    }
    if (argc - i < 2)
        usage(argv[0]);
    const char *new_root = argv[i];
    const char *command = argv[i + 1];
    /* argv is NULL-terminated, so the arguments after COMMAND already form a C array. */
    const char *const *args = (const char *const *)&argv[i + 2];

    if (log_path) {
        int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd < 0) {
            fprintf(stderr, "chroot_vm: cannot open log file %s: %s\n", log_path,
                    strerror(errno));
            return EXIT_FAILURE;
        }
        check(krun_init_log(fd, KRUN_LOG_LEVEL_WARN, KRUN_LOG_STYLE_NEVER, 0), "krun_init_log");
    } else {
        check(krun_set_log_level(KRUN_LOG_LEVEL_WARN), "krun_set_log_level");
    }

    int ctx = krun_create_ctx();
    check(ctx, "krun_create_ctx");
    check(krun_set_vm_config((uint32_t)ctx, (uint8_t)cpus, (uint32_t)mem_mib),
          "krun_set_vm_config");
    check(krun_set_root((uint32_t)ctx, new_root), "krun_set_root");
    check(krun_set_workdir((uint32_t)ctx, "/"), "krun_set_workdir");
    /* envp NULL: the guest inherits this process's environment (as with upstream libkrun). */
    check(krun_set_exec((uint32_t)ctx, command, args, NULL), "krun_set_exec");

    int ret = krun_start_enter((uint32_t)ctx);
    /* Only reached when the VM could not start. */
    fprintf(stderr, "chroot_vm: cannot start the microVM: %s\n", strerror(-ret));
    return EXIT_FAILURE;
}
