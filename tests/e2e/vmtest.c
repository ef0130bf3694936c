/*
 * vmtest: the end-to-end test client. It drives libkrun only through the public C API, the
 * way a real client (crun, microsandbox) does, so the e2e cases test what users get.
 *
 *   vmtest MODE [OPTIONS] [-- COMMAND [ARGS...]]
 *
 * MODE
 *   run          configure a VM and call krun_start_enter, which must not return: the
 *                process ends when the VM ends. If it returns, print why and exit 3.
 *   start-error  the same, but krun_start_enter is expected to fail: print
 *                "krun_start_enter: -ERRNO (text)" on stdout and exit 0 when it returned a
 *                negative errno (exit 1 otherwise).
 *
 * OPTIONS
 *   --cpus=N             vCPUs (default 1)
 *   --mem=MIB            guest RAM in MiB (default 256)
 *   --log-level=N        krun_set_log_level(N) first (0..5; default: leave the default)
 *   --console-output=F   krun_set_console_output(F)
 *   --root=DIR           krun_set_root(DIR)
 *   --root-virtiofs=DIR  the root as crun gives it: krun_add_virtiofs2(ctx, "/dev/root", DIR,
 *                        512 MiB)
 *   --virtiofs=TAG:PATH[:ro]  an extra share: krun_add_virtiofs(TAG, PATH), or with ":ro"
 *                        krun_add_virtiofs3(TAG, PATH, 0, true) (repeatable)
 *   --workdir=DIR        krun_set_workdir(DIR)
 *   --rlimit=ID=CUR:MAX  add to krun_set_rlimits' array (repeatable)
 *   --uid=N, --gid=N     krun_setuid(N), krun_setgid(N)
 *   --env=NAME=VALUE     add to the guest environment passed as krun_set_exec's envp
 *                        (repeatable)
 *   --inherit-env        envp NULL: the guest inherits this process's environment (also the
 *                        default when no --env is given)
 *   --empty-env          envp is an empty array
 *   --disable-implicit-vsock  krun_disable_implicit_vsock()
 *   --add-vsock=FEATURES krun_add_vsock(FEATURES) (after the above; 0: no TSI)
 *   --port-map=HOST:GUEST  add to krun_set_port_map's NULL-terminated list (repeatable)
 *   --empty-port-map     krun_set_port_map with an empty list (exposes no guest port)
 *   --tsi-scope=SCOPE[:IP[:SUBNET]]  krun_set_tsi_scope(IP, SUBNET, SCOPE) (empty or absent: NULL)
 *   --vsock-port=PORT:PATH[:listen]  krun_add_vsock_port2(PORT, PATH, listen) (repeatable;
 *                        PATH must not contain ':')
 *   --nested             krun_set_nested_virt(ctx, true)
 *   --split-irqchip      krun_split_irqchip(ctx, true); also when the environment has
 *                        KRUN_E2E_SPLIT_IRQCHIP=1 (the suite's CASE+split runs)
 *   --pid-file=F         write this process's id (the VMM's) to F before the VM starts
 * Issue 16 (machine2):
 *   --shutdown-on=F      krun_get_shutdown_eventfd(); a forked helper writes 1 to the eventfd
 *                        once file F exists (the guest creates it on its root share), then
 *                        creates F.sent
 *   --kernel=PATH        krun_set_kernel(PATH, --kernel-format, --initramfs, --kernel-cmdline)
 *   --kernel-format=N    KRUN_KERNEL_FORMAT_* (default 1, ELF)
 *   --initramfs=PATH, --kernel-cmdline=TEXT  (default NULL each)
 *   --smbios-oem=TEXT    one SMBIOS OEM string (repeatable, in order): krun_set_smbios_oem_strings
 * Consoles (issue #9), applied in the order given:
 *   --disable-implicit-console   krun_disable_implicit_console
 *   --kernel-console=NAME        krun_set_kernel_console(NAME)
 *   --console-default=IN:OUT:ERR krun_add_virtio_console_default with those fd numbers (-1: none)
 *   --multiport                  krun_add_virtio_console_multiport; the port options below
 *                                add to the last one
 *   --port-inout=NAME:IN:OUT     krun_add_console_port_inout on files: IN opened for reading,
 *                                OUT created for writing ("-": fd -1)
 *   --port-echo=NAME             an inout port on a socketpair whose host end a forked
 *                                process serves: each line read comes back with PING -> PONG
 *   --port-tty=NAME:FD           krun_add_console_port_tty(NAME, FD)
 *   --serial=IN:OUT              krun_add_serial_console_default with those fd numbers
 *   --disk=ID:FORMAT:FLAGS:PATH  a disk (issue 13): krun_add_disk3(ID, PATH, FORMAT raw|qcow2|vmdk,
 *                        FLAGS a comma list of ro, direct, sync-none|sync-relaxed|sync-full, or
 *                        "-"); with FLAGS "legacy", krun_add_disk(ID, PATH, false) (repeatable)
 *   --root-disk-remount=DEVICE[:FSTYPE[:OPTIONS]]  krun_set_root_disk_remount (FSTYPE "" = NULL)
 *   --root-disk=PATH     krun_set_root_disk(PATH)
 *   Shares and virtual entries (issue 15), applied in the order given, after --virtiofs:
 *   --disable-implicit-init      krun_disable_implicit_init
 *   --fs-null=TAG                krun_add_virtiofs3(TAG, NULL, 0, false): a NullFs share
 *   --virtiofs4=TAG:PATH:SEM     krun_add_virtiofs4(TAG, PATH, 0, false, SEM)
 *   --virtiofs2=TAG:PATH:SHM     krun_add_virtiofs2(TAG, PATH, SHM): a share with a DAX window
 *                                of SHM bytes
 *   --overlay-dir=TAG:PATH:MODE  krun_fs_add_overlay_dir (MODE in octal)
 *   --overlay-file=TAG:PATH:HOSTFILE:MODE[:oneshot]  krun_fs_add_overlay_file with the bytes
 *                                of HOSTFILE (MODE in octal)
 *   --overlay-init=TAG           krun_get_default_init, then that init as a one-shot
 *                                overlay file "init.krun", mode 0100755 (upstream's augmentfs)
 *   --overlay-root=DIR[:DIR]...  krun_set_overlayfs_root with these layers, lowest first
 *   --try-net=KIND:ARG   call a network setter (passt:FD krun_set_passt_fd, gvproxy:PATH
 *                        krun_set_gvproxy_path, unixstream:PATH krun_add_net_unixstream,
 *                        tap:NAME krun_add_net_tap), print "CALL: RET (text)" on stdout and
 *                        go on whatever it returned (issue 10: the VM must keep TSI)
 * virtio-net (issue 14), in the order given:
 *   --net=KIND:ARG[:MAC[:FEATURES[:FLAGS]]]  add an interface (repeatable). KIND: stream
 *                        (krun_add_net_unixstream on path ARG), stream-fd (vmtest connects to
 *                        ARG, retrying a refused connection for 10 s, and passes the fd), gram / gram-fd (krun_add_net_unixgram, the
 *                        same two ways; gram-fd autobinds its socket), tap (ARG is the name),
 *                        passt-fd (krun_set_passt_fd with a connection to ARG), gvproxy
 *                        (krun_set_gvproxy_path), stream-both (path ARG and fd 0), stream-none
 *                        (neither). MAC: 12 hex digits (default 5a94efe40cee), FEATURES: a
 *                        number or "compat", FLAGS: a number (1 VFKIT, 2 DHCP_CLIENT)
 *   -- COMMAND ARGS...   krun_set_exec(COMMAND, ARGS, envp). Without a command (or with
 *                        --no-exec) krun_set_exec is not called: the workload then comes
 *                        from the root's /.krun_config.json (crun style).
 *
 * Exit status: 2 when a configuration call failed (the call and its errno are printed on
 * stderr); otherwise as described under MODE, or the VM's status.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <libkrun.h>

#define MAX_ENV 1024
#define MAX_LIST 64

enum mode { MODE_RUN, MODE_START_ERROR };

struct options {
    enum mode mode;
    long cpus;
    long mem_mib;
    long log_level; /* -1: not set */
    const char *console_output;
    const char *root;
    const char *root_virtiofs;
    const char *workdir;
    const char *env[MAX_ENV + 1];
    int env_count;
    int env_mode; /* 0: envp from --env (NULL if none), 1: NULL, 2: empty array */
    const char *rlimits[MAX_LIST + 1];
    int rlimit_count;
    char *shares[MAX_LIST]; /* "TAG:PATH[:ro]", split in configure() */
    int share_count;
    long uid, gid; /* -1: not set */
    int no_exec;
    int disable_implicit_vsock;
    long add_vsock; /* -1: not set */
    const char *port_map[MAX_LIST + 1];
    int port_map_count;
    int set_port_map;
    char *vsock_ports[MAX_LIST]; /* "PORT:PATH[:listen]", split in configure() */
    int vsock_port_count;
    const char *pid_file;
    char *tsi_scope; /* --tsi-scope=SCOPE[:IP[:SUBNET]]; NULL if not given */
    char *consoles[MAX_LIST]; /* console options, "K:VALUE" with K the option's letter */
    int console_count;
    const char *try_net; /* --try-net=KIND:ARG; NULL if not given */
    char *nets[MAX_LIST]; /* --net specs, split in add_net() */
    int net_count;
    int nested;
    int split_irqchip;
    const char *shutdown_on;
    const char *kernel, *initramfs, *kernel_cmdline;
    long kernel_format;
    char *disks[MAX_LIST]; /* --disk specs, split in configure_disks() */
    int disk_count;
    char *root_disk_remount;
    const char *root_disk;
    char *fs_opts[MAX_LIST]; /* issue 15 options, "K:VALUE" with K the option's letter */
    int fs_opt_count;
    char *const *exec_argv; /* NULL-terminated, [0] is the command; NULL if none */
    const char *smbios_oem[MAX_LIST + 1]; /* --smbios-oem strings, NULL-terminated */
    int smbios_oem_count;
};

static void usage(void)
{
    fprintf(stderr,
            "usage: vmtest run|start-error [--cpus=N] [--mem=MIB] [--log-level=N]\n"
            "              [--console-output=FILE] [--root=DIR] [--root-virtiofs=DIR]\n"
            "              [--virtiofs=TAG:PATH[:ro]]... [--workdir=DIR] [--rlimit=ID=CUR:MAX]...\n"
            "              [--uid=N] [--gid=N] [--env=NAME=VALUE]... [--inherit-env|--empty-env]\n"
            "              [--disable-implicit-vsock] [--add-vsock=FEATURES]\n"
            "              [--port-map=HOST:GUEST]... [--empty-port-map]\n"
            "              [--vsock-port=PORT:PATH[:listen]]... [--pid-file=FILE] [--try-net=KIND:ARG]\n"
            "              [--vsock-port=PORT:PATH[:listen]]... [--pid-file=FILE] [--nested] [--split-irqchip]\n"
            "              [--shutdown-on=FILE] [--kernel=PATH] [--kernel-format=N]\n"
            "              [--initramfs=PATH] [--kernel-cmdline=TEXT]\n"
            "              [--smbios-oem=TEXT]... [--tsi-scope=SCOPE[:IP[:SUBNET]]]\n"
            "              [--no-exec] [-- COMMAND [ARGS...]]\n");
    exit(2);
}

/* Exit 2 naming the call when a configuration call returned a negative errno. */
static void check(int ret, const char *call)
{
    if (ret < 0) {
        fprintf(stderr, "vmtest: %s: %d (%s)\n", call, ret, strerror(-ret));
        exit(2);
    }
}

/* --try-net: one network setter, its result on stdout; the configuration goes on. */
static void try_net(uint32_t id, const char *spec)
{
    static uint8_t mac[6] = {0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xee};
    const char *arg = strchr(spec, ':');
    const char *call = NULL;
    int ret = 0;
    if (arg == NULL) {
        fprintf(stderr, "vmtest: --try-net: KIND:ARG\n");
        exit(2);
    }
    arg++;
    if (strncmp(spec, "passt:", 6) == 0) {
        call = "krun_set_passt_fd";
        ret = krun_set_passt_fd(id, atoi(arg));
    } else if (strncmp(spec, "gvproxy:", 8) == 0) {
        call = "krun_set_gvproxy_path";
        ret = krun_set_gvproxy_path(id, (char *)arg);
    } else if (strncmp(spec, "unixstream:", 11) == 0) {
        call = "krun_add_net_unixstream";
        ret = krun_add_net_unixstream(id, arg, -1, mac, COMPAT_NET_FEATURES, 0);
    } else if (strncmp(spec, "tap:", 4) == 0) {
        call = "krun_add_net_tap";
        ret = krun_add_net_tap(id, (char *)arg, mac, 0, 0);
    } else {
        fprintf(stderr, "vmtest: --try-net: unknown kind in '%s'\n", spec);
        exit(2);
    }
    printf("%s: %d (%s)\n", call, ret, ret < 0 ? strerror(-ret) : "no error");
}

static long parse_number(const char *text, const char *what);

/* A unix socket of `type` connected to `path` (SOCK_DGRAM ones autobound first, so the peer
 * can answer); exits 2 when that fails. */
static int connect_unix(const char *path, int type)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path) {
        fprintf(stderr, "vmtest: --net: socket path too long: %s\n", path);
        exit(2);
    }
    strcpy(sa.sun_path, path);
    /* A server that just created its socket may not listen yet: retry ECONNREFUSED. */
    for (int tries = 0;; tries++) {
        int fd = socket(AF_UNIX, type, 0);
        if (fd < 0) {
            fprintf(stderr, "vmtest: --net: socket: %s\n", strerror(errno));
            exit(2);
        }
        sa_family_t family = AF_UNIX;
        if (type == SOCK_DGRAM && bind(fd, (struct sockaddr *)&family, sizeof family) < 0) {
            fprintf(stderr, "vmtest: --net: autobind: %s\n", strerror(errno));
            exit(2);
        }
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0)
            return fd;
        if (errno != ECONNREFUSED || tries == 100) {
            fprintf(stderr, "vmtest: --net: connect %s: %s\n", path, strerror(errno));
            exit(2);
        }
        close(fd);
        usleep(100000);
    }
}

/* --net=KIND:ARG[:MAC[:FEATURES[:FLAGS]]]: one interface; a refused call exits 2. */
static void add_net(uint32_t id, char *spec)
{
    uint8_t mac[6] = {0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xee};
    char *fields[5] = {NULL};
    int n = 0;
    for (char *save = NULL, *tok = strtok_r(spec, ":", &save); tok && n < 5;
         tok = strtok_r(NULL, ":", &save))
        fields[n++] = tok;
    if (n < 2) {
        fprintf(stderr, "vmtest: --net: KIND:ARG[:MAC[:FEATURES[:FLAGS]]]\n");
        exit(2);
    }
    const char *kind = fields[0], *arg = fields[1];
    if (n > 2 && strcmp(fields[2], "-") != 0) {
        unsigned v[6];
        if (strlen(fields[2]) != 12 || sscanf(fields[2], "%2x%2x%2x%2x%2x%2x", &v[0], &v[1],
                                              &v[2], &v[3], &v[4], &v[5]) != 6) {
            fprintf(stderr, "vmtest: --net: MAC '%s' is not 12 hex digits\n", fields[2]);
            exit(2);
        }
        for (int i = 0; i < 6; i++)
            mac[i] = (uint8_t)v[i];
    }
    uint32_t features = 0, flags = 0;
    if (n > 3)
        features = strcmp(fields[3], "compat") == 0
                       ? COMPAT_NET_FEATURES
                       : (uint32_t)parse_number(fields[3], "--net features");
    if (n > 4)
        flags = (uint32_t)parse_number(fields[4], "--net flags");
    if (strcmp(kind, "stream") == 0)
        check(krun_add_net_unixstream(id, arg, -1, mac, features, flags),
              "krun_add_net_unixstream");
    else if (strcmp(kind, "stream-fd") == 0)
        check(krun_add_net_unixstream(id, NULL, connect_unix(arg, SOCK_STREAM), mac, features,
                                      flags),
              "krun_add_net_unixstream");
    else if (strcmp(kind, "stream-both") == 0)
        check(krun_add_net_unixstream(id, arg, 0, mac, features, flags),
              "krun_add_net_unixstream");
    else if (strcmp(kind, "stream-none") == 0)
        check(krun_add_net_unixstream(id, NULL, -1, mac, features, flags),
              "krun_add_net_unixstream");
    else if (strcmp(kind, "gram") == 0)
        check(krun_add_net_unixgram(id, arg, -1, mac, features, flags), "krun_add_net_unixgram");
    else if (strcmp(kind, "gram-fd") == 0)
        check(krun_add_net_unixgram(id, NULL, connect_unix(arg, SOCK_DGRAM), mac, features,
                                    flags),
              "krun_add_net_unixgram");
    else if (strcmp(kind, "tap") == 0)
        check(krun_add_net_tap(id, (char *)arg, mac, features, flags), "krun_add_net_tap");
    else if (strcmp(kind, "passt-fd") == 0) {
        check(krun_set_passt_fd(id, connect_unix(arg, SOCK_STREAM)), "krun_set_passt_fd");
        if (n > 2)
            check(krun_set_net_mac(id, mac), "krun_set_net_mac");
    } else if (strcmp(kind, "gvproxy") == 0) {
        check(krun_set_gvproxy_path(id, (char *)arg), "krun_set_gvproxy_path");
        if (n > 2)
            check(krun_set_net_mac(id, mac), "krun_set_net_mac");
    } else {
        fprintf(stderr, "vmtest: --net: unknown kind '%s'\n", kind);
        exit(2);
    }
}

static long parse_number(const char *text, const char *what)
{
    char *end = NULL;
    errno = 0;
    long value = strtol(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || value < 0) {
        fprintf(stderr, "vmtest: %s: not a number: '%s'\n", what, text);
        exit(2);
    }
    return value;
}

static void parse(int argc, char **argv, struct options *o)
{
    static const struct option longopts[] = {
        {"cpus", required_argument, NULL, 'c'},
        {"mem", required_argument, NULL, 'm'},
        {"log-level", required_argument, NULL, 'l'},
        {"console-output", required_argument, NULL, 'o'},
        {"root", required_argument, NULL, 'r'},
        {"workdir", required_argument, NULL, 'w'},
        {"env", required_argument, NULL, 'e'},
        {"root-virtiofs", required_argument, NULL, 'R'},
        {"virtiofs", required_argument, NULL, 'v'},
        {"rlimit", required_argument, NULL, 'L'},
        {"uid", required_argument, NULL, 'u'},
        {"gid", required_argument, NULL, 'g'},
        {"inherit-env", no_argument, NULL, 'I'},
        {"empty-env", no_argument, NULL, 'E'},
        {"no-exec", no_argument, NULL, 'N'},
        {"disable-implicit-vsock", no_argument, NULL, 'D'},
        {"add-vsock", required_argument, NULL, 'A'},
        {"port-map", required_argument, NULL, 'P'},
        {"empty-port-map", no_argument, NULL, 'M'},
        {"vsock-port", required_argument, NULL, 'V'},
        {"pid-file", required_argument, NULL, 'p'},
        {"disable-implicit-console", no_argument, NULL, 1000},
        {"kernel-console", required_argument, NULL, 1001},
        {"console-default", required_argument, NULL, 1002},
        {"multiport", no_argument, NULL, 1003},
        {"port-inout", required_argument, NULL, 1004},
        {"port-echo", required_argument, NULL, 1005},
        {"port-tty", required_argument, NULL, 1006},
        {"serial", required_argument, NULL, 1007},
        {"try-net", required_argument, NULL, 'T'},
        {"net", required_argument, NULL, 1400},
        {"nested", no_argument, NULL, 'n'},
        {"split-irqchip", no_argument, NULL, 1008},
        {"shutdown-on", required_argument, NULL, 1100},
        {"kernel", required_argument, NULL, 1101},
        {"kernel-format", required_argument, NULL, 1102},
        {"initramfs", required_argument, NULL, 1103},
        {"kernel-cmdline", required_argument, NULL, 1104},
        {"disk", required_argument, NULL, 1200},
        {"root-disk-remount", required_argument, NULL, 1201},
        {"root-disk", required_argument, NULL, 1202},
        {"disable-implicit-init", no_argument, NULL, 1300},
        {"fs-null", required_argument, NULL, 1301},
        {"virtiofs4", required_argument, NULL, 1302},
        {"overlay-dir", required_argument, NULL, 1303},
        {"overlay-file", required_argument, NULL, 1304},
        {"overlay-init", required_argument, NULL, 1305},
        {"overlay-root", required_argument, NULL, 1306},
        {"virtiofs2", required_argument, NULL, 1307},
        {"smbios-oem", required_argument, NULL, 1500},
        {"tsi-scope", required_argument, NULL, 1600},
        {NULL, 0, NULL, 0},
    };
    memset(o, 0, sizeof(*o));
    o->cpus = 1;
    o->mem_mib = 256;
    o->log_level = -1;
    o->uid = -1;
    o->gid = -1;
    o->add_vsock = -1;
    o->kernel_format = 1;

    if (argc < 2)
        usage();
    if (strcmp(argv[1], "run") == 0)
        o->mode = MODE_RUN;
    else if (strcmp(argv[1], "start-error") == 0)
        o->mode = MODE_START_ERROR;
    else
        usage();

    /* Parse after the mode word; "+" stops at the first non-option (the command). */
    optind = 2;
    int opt;
    while ((opt = getopt_long(argc, argv, "+", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c': o->cpus = parse_number(optarg, "--cpus"); break;
        case 'm': o->mem_mib = parse_number(optarg, "--mem"); break;
        case 'l': o->log_level = parse_number(optarg, "--log-level"); break;
        case 'o': o->console_output = optarg; break;
        case 'r': o->root = optarg; break;
        case 'w': o->workdir = optarg; break;
        case 'e':
            if (o->env_count == MAX_ENV) {
                fprintf(stderr, "vmtest: more than %d --env options\n", MAX_ENV);
                exit(2);
            }
            o->env[o->env_count++] = optarg;
            break;
        case 'R': o->root_virtiofs = optarg; break;
        case 'v':
            if (o->share_count == MAX_LIST || strchr(optarg, ':') == NULL) {
                fprintf(stderr, "vmtest: --virtiofs: TAG:PATH[:ro], at most %d\n", MAX_LIST);
                exit(2);
            }
            o->shares[o->share_count++] = optarg;
            break;
        case 'L':
            if (o->rlimit_count == MAX_LIST) {
                fprintf(stderr, "vmtest: more than %d --rlimit options\n", MAX_LIST);
                exit(2);
            }
            o->rlimits[o->rlimit_count++] = optarg;
            break;
        case 'u': o->uid = parse_number(optarg, "--uid"); break;
        case 'g': o->gid = parse_number(optarg, "--gid"); break;
        case 'I': o->env_mode = 1; break;
        case 'E': o->env_mode = 2; break;
        case 'N': o->no_exec = 1; break;
        case 'D': o->disable_implicit_vsock = 1; break;
        case 'A': o->add_vsock = parse_number(optarg, "--add-vsock"); break;
        case 'P':
            if (o->port_map_count == MAX_LIST) {
                fprintf(stderr, "vmtest: more than %d --port-map options\n", MAX_LIST);
                exit(2);
            }
            o->port_map[o->port_map_count++] = optarg;
            o->set_port_map = 1;
            break;
        case 'M': o->set_port_map = 1; break;
        case 'V':
            if (o->vsock_port_count == MAX_LIST || strchr(optarg, ':') == NULL) {
                fprintf(stderr, "vmtest: --vsock-port: PORT:PATH[:listen], at most %d\n",
                        MAX_LIST);
                exit(2);
            }
            o->vsock_ports[o->vsock_port_count++] = optarg;
            break;
        case 'p': o->pid_file = optarg; break;
        case 1600: o->tsi_scope = optarg; break;
        case 1000: case 1001: case 1002: case 1003: case 1004: case 1005: case 1006: case 1007: {
            if (o->console_count == MAX_LIST) {
                fprintf(stderr, "vmtest: more than %d console options\n", MAX_LIST);
                exit(2);
            }
            size_t n = strlen(optarg ? optarg : "") + 3;
            char *spec = malloc(n);
            if (spec == NULL)
                exit(2);
            snprintf(spec, n, "%c:%s", (char)('a' + opt - 1000), optarg ? optarg : "");
            o->consoles[o->console_count++] = spec;
            break;
        }
        case 'T': o->try_net = optarg; break;
        case 1400:
            if (o->net_count == MAX_LIST) {
                fprintf(stderr, "vmtest: more than %d --net options\n", MAX_LIST);
                exit(2);
            }
            o->nets[o->net_count++] = optarg;
            break;
        case 'n': o->nested = 1; break;
        case 1008: o->split_irqchip = 1; break;
        case 1100: o->shutdown_on = optarg; break;
        case 1101: o->kernel = optarg; break;
        case 1102: o->kernel_format = parse_number(optarg, "--kernel-format"); break;
        case 1103: o->initramfs = optarg; break;
        case 1104: o->kernel_cmdline = optarg; break;
        case 1200:
            if (o->disk_count == MAX_LIST) {
                fprintf(stderr, "vmtest: more than %d --disk options\n", MAX_LIST);
                exit(2);
            }
            o->disks[o->disk_count++] = optarg;
            break;
        case 1500:
            if (o->smbios_oem_count == MAX_LIST) {
                fprintf(stderr, "vmtest: more than %d --smbios-oem options\n", MAX_LIST);
                exit(2);
            }
            o->smbios_oem[o->smbios_oem_count++] = optarg;
            break;
        case 1201: o->root_disk_remount = optarg; break;
        case 1202: o->root_disk = optarg; break;
        case 1300: case 1301: case 1302: case 1303: case 1304: case 1305: case 1306:
        case 1307: {
            if (o->fs_opt_count == MAX_LIST) {
                fprintf(stderr, "vmtest: more than %d share/overlay options\n", MAX_LIST);
                exit(2);
            }
            size_t n = strlen(optarg ? optarg : "") + 3;
            char *spec = malloc(n);
            if (spec == NULL)
                exit(2);
            snprintf(spec, n, "%c:%s", (char)('a' + opt - 1300), optarg ? optarg : "");
            o->fs_opts[o->fs_opt_count++] = spec;
            break;
        }
        default: usage();
        }
    }
    o->env[o->env_count] = NULL;
    o->rlimits[o->rlimit_count] = NULL;
    o->port_map[o->port_map_count] = NULL;
    if (optind < argc)
        o->exec_argv = &argv[optind];
    if (o->cpus > 255) {
        fprintf(stderr, "vmtest: --cpus: at most 255\n");
        exit(2);
    }
}

/* Three or two ':'-separated fd numbers (-1 allowed); exits 2 on a malformed list. */
static void parse_fds(const char *text, int *fds, int count, const char *what)
{
    char *copy = strdup(text);
    char *save = NULL;
    char *tok = strtok_r(copy, ":", &save);
    for (int i = 0; i < count; i++) {
        if (tok == NULL) {
            fprintf(stderr, "vmtest: %s: expected %d fd numbers in '%s'\n", what, count, text);
            exit(2);
        }
        fds[i] = atoi(tok);
        tok = strtok_r(NULL, ":", &save);
    }
    free(copy);
}

/* The host end of an echo port: lines come back with every "PING" turned into "PONG". */
static void serve_echo(int fd)
{
    char buf[4096];
    ssize_t n;
    while ((n = read(fd, buf, sizeof(buf))) > 0) {
        for (ssize_t i = 0; i + 3 < n; i++)
            if (memcmp(buf + i, "PING", 4) == 0)
                memcpy(buf + i, "PONG", 4);
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(fd, buf + off, (size_t)(n - off));
            if (w <= 0)
                _exit(1);
            off += w;
        }
    }
    _exit(0);
}

static void configure_consoles(struct options *o, uint32_t id)
{
    int multiport = -1;
    for (int i = 0; i < o->console_count; i++) {
        char kind = o->consoles[i][0];
        char *arg = o->consoles[i] + 2;
        int fds[3];
        switch (kind) {
        case 'a': check(krun_disable_implicit_console(id), "krun_disable_implicit_console"); break;
        case 'b': check(krun_set_kernel_console(id, arg), "krun_set_kernel_console"); break;
        case 'c':
            parse_fds(arg, fds, 3, "--console-default");
            check(krun_add_virtio_console_default(id, fds[0], fds[1], fds[2]),
                  "krun_add_virtio_console_default");
            break;
        case 'd':
            multiport = krun_add_virtio_console_multiport(id);
            check(multiport, "krun_add_virtio_console_multiport");
            break;
        case 'e': {
            char *name = arg;
            char *in = strchr(name, ':');
            char *out = in ? strchr(in + 1, ':') : NULL;
            if (out == NULL) {
                fprintf(stderr, "vmtest: --port-inout: NAME:IN:OUT\n");
                exit(2);
            }
            *in++ = '\0';
            *out++ = '\0';
            int in_fd = strcmp(in, "-") == 0 ? -1 : open(in, O_RDONLY);
            int out_fd = strcmp(out, "-") == 0 ? -1 : open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
            if ((strcmp(in, "-") != 0 && in_fd < 0) || (strcmp(out, "-") != 0 && out_fd < 0)) {
                fprintf(stderr, "vmtest: --port-inout: cannot open %s or %s\n", in, out);
                exit(2);
            }
            check(krun_add_console_port_inout(id, (uint32_t)multiport, name, in_fd, out_fd),
                  "krun_add_console_port_inout");
            break;
        }
        case 'f': {
            int sv[2];
            if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) {
                perror("vmtest: socketpair");
                exit(2);
            }
            pid_t pid = fork();
            if (pid < 0) {
                perror("vmtest: fork");
                exit(2);
            }
            if (pid == 0) {
                /* Only this port's end stays open, and the server dies with the VMM. */
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                for (int fd = 3; fd < 1024; fd++)
                    if (fd != sv[1])
                        close(fd);
                serve_echo(sv[1]);
            }
            close(sv[1]);
            check(krun_add_console_port_inout(id, (uint32_t)multiport, arg, sv[0], sv[0]),
                  "krun_add_console_port_inout");
            break;
        }
        case 'g': {
            char *colon = strchr(arg, ':');
            if (colon == NULL) {
                fprintf(stderr, "vmtest: --port-tty: NAME:FD\n");
                exit(2);
            }
            *colon++ = '\0';
            check(krun_add_console_port_tty(id, (uint32_t)multiport, arg, atoi(colon)),
                  "krun_add_console_port_tty");
            break;
        }
        case 'h':
            parse_fds(arg, fds, 2, "--serial");
            check(krun_add_serial_console_default(id, fds[0], fds[1]),
                  "krun_add_serial_console_default");
            break;
        }
    }
}

/* Cut *s at the next ':' and return the piece before it; NULL once nothing is left. */
static char *next_field(char **s)
{
    char *field = *s;
    if (field == NULL)
        return NULL;
    char *colon = strchr(field, ':');
    if (colon != NULL)
        *colon++ = '\0';
    *s = colon;
    return field;
}

/* --disk and --root-disk-remount (issue 13). */
static void configure_disks(struct options *o, uint32_t id)
{
    for (int i = 0; i < o->disk_count; i++) {
        char *rest = o->disks[i];
        char *disk_id = next_field(&rest);
        char *format = next_field(&rest);
        char *flags = next_field(&rest);
        char *path = rest;
        if (format == NULL || flags == NULL || path == NULL) {
            fprintf(stderr, "vmtest: --disk: ID:FORMAT:FLAGS:PATH\n");
            exit(2);
        }
        if (strcmp(flags, "legacy") == 0) {
            check(krun_add_disk(id, disk_id, path, false), "krun_add_disk");
            continue;
        }
        uint32_t fmt = strcmp(format, "qcow2") == 0  ? KRUN_DISK_FORMAT_QCOW2
                       : strcmp(format, "vmdk") == 0 ? KRUN_DISK_FORMAT_VMDK
                       : strcmp(format, "raw") == 0  ? KRUN_DISK_FORMAT_RAW
                                                     : 99;
        bool ro = false, direct = false;
        uint32_t sync = KRUN_SYNC_RELAXED;
        for (char *f = strtok(flags, ","); f != NULL; f = strtok(NULL, ",")) {
            if (strcmp(f, "ro") == 0) ro = true;
            else if (strcmp(f, "direct") == 0) direct = true;
            else if (strcmp(f, "sync-none") == 0) sync = KRUN_SYNC_NONE;
            else if (strcmp(f, "sync-relaxed") == 0) sync = KRUN_SYNC_RELAXED;
            else if (strcmp(f, "sync-full") == 0) sync = KRUN_SYNC_FULL;
            else if (strcmp(f, "-") != 0) {
                fprintf(stderr, "vmtest: --disk: unknown flag '%s'\n", f);
                exit(2);
            }
        }
        check(krun_add_disk3(id, disk_id, path, fmt, ro, direct, sync), "krun_add_disk3");
    }
    if (o->root_disk)
        check(krun_set_root_disk(id, o->root_disk), "krun_set_root_disk");
    if (o->root_disk_remount) {
        char *rest = o->root_disk_remount;
        char *device = next_field(&rest);
        char *fstype = next_field(&rest);
        char *options = rest;
        check(krun_set_root_disk_remount(id, device, fstype && *fstype ? fstype : NULL, options),
              "krun_set_root_disk_remount");
    }
}

/* The whole of a host file, for --overlay-file; kept for the VM's life. */
static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL || fseek(f, 0, SEEK_END) != 0) {
        fprintf(stderr, "vmtest: --overlay-file: cannot read %s\n", path);
        exit(2);
    }
    long size = ftell(f);
    rewind(f);
    uint8_t *data = malloc(size > 0 ? (size_t)size : 1);
    if (size < 0 || data == NULL || fread(data, 1, (size_t)size, f) != (size_t)size) {
        fprintf(stderr, "vmtest: --overlay-file: cannot read %s\n", path);
        exit(2);
    }
    fclose(f);
    *len = (size_t)size;
    return data;
}

/* The next ':'-separated field of *rest (the rest of the text if it is the last one). */
static char *field(char **rest, const char *what)
{
    char *start = *rest;
    if (start == NULL) {
        fprintf(stderr, "vmtest: %s: too few ':'-separated fields\n", what);
        exit(2);
    }
    char *colon = strchr(start, ':');
    if (colon != NULL)
        *colon++ = '\0';
    *rest = colon;
    return start;
}

static uint32_t octal(const char *text, const char *what)
{
    char *end = NULL;
    unsigned long v = strtoul(text, &end, 8);
    if (end == text || *end != '\0') {
        fprintf(stderr, "vmtest: %s: not an octal mode: '%s'\n", what, text);
        exit(2);
    }
    return (uint32_t)v;
}

/* Issue 15's options, in the order given. */
static void configure_fs(struct options *o, uint32_t id)
{
    for (int i = 0; i < o->fs_opt_count; i++) {
        char kind = o->fs_opts[i][0];
        char *rest = o->fs_opts[i] + 2;
        switch (kind) {
        case 'a':
            check(krun_disable_implicit_init(id), "krun_disable_implicit_init");
            break;
        case 'b':
            check(krun_add_virtiofs3(id, rest, NULL, 0, false), "krun_add_virtiofs3(NULL)");
            break;
        case 'c': {
            char *tag = field(&rest, "--virtiofs4");
            char *path = field(&rest, "--virtiofs4");
            long sem = parse_number(field(&rest, "--virtiofs4"), "--virtiofs4");
            check(krun_add_virtiofs4(id, tag, path, 0, false, (uint32_t)sem), "krun_add_virtiofs4");
            break;
        }
        case 'd': {
            char *tag = field(&rest, "--overlay-dir");
            char *path = field(&rest, "--overlay-dir");
            uint32_t mode = octal(field(&rest, "--overlay-dir"), "--overlay-dir");
            check(krun_fs_add_overlay_dir(id, tag, path, mode), "krun_fs_add_overlay_dir");
            break;
        }
        case 'e': {
            char *tag = field(&rest, "--overlay-file");
            char *path = field(&rest, "--overlay-file");
            char *host = field(&rest, "--overlay-file");
            uint32_t mode = octal(field(&rest, "--overlay-file"), "--overlay-file");
            bool one_shot = rest != NULL && strcmp(rest, "oneshot") == 0;
            size_t len = 0;
            uint8_t *data = slurp(host, &len);
            check(krun_fs_add_overlay_file(id, tag, path, data, len, mode, one_shot),
                  "krun_fs_add_overlay_file");
            break;
        }
        case 'f': {
            const uint8_t *init = NULL;
            size_t len = 0;
            check(krun_get_default_init(&init, &len), "krun_get_default_init");
            check(krun_fs_add_overlay_file(id, rest, "init.krun", init, len, 0100755, true),
                  "krun_fs_add_overlay_file(init.krun)");
            break;
        }
        case 'g': {
            const char *layers[MAX_LIST + 1];
            int n = 0;
            while (rest != NULL && n < MAX_LIST)
                layers[n++] = field(&rest, "--overlay-root");
            layers[n] = NULL;
            check(krun_set_overlayfs_root(id, layers), "krun_set_overlayfs_root");
            break;
        }
        case 'h': {
            char *tag = field(&rest, "--virtiofs2");
            char *path = field(&rest, "--virtiofs2");
            long shm = parse_number(field(&rest, "--virtiofs2"), "--virtiofs2");
            check(krun_add_virtiofs2(id, tag, path, (uint64_t)shm), "krun_add_virtiofs2");
            break;
        }
        }
    }
}

/* Create a context and apply every option; returns the context id. */
static uint32_t configure(struct options *o)
{
    if (o->log_level >= 0)
        check(krun_set_log_level((uint32_t)o->log_level), "krun_set_log_level");

    int ctx = krun_create_ctx();
    check(ctx, "krun_create_ctx");
    uint32_t id = (uint32_t)ctx;

    check(krun_set_vm_config(id, (uint8_t)o->cpus, (uint32_t)o->mem_mib), "krun_set_vm_config");
    if (o->console_output)
        check(krun_set_console_output(id, o->console_output), "krun_set_console_output");
    if (o->root)
        check(krun_set_root(id, o->root), "krun_set_root");
    if (o->root_virtiofs)
        check(krun_add_virtiofs2(id, "/dev/root", o->root_virtiofs, 512ULL << 20),
              "krun_add_virtiofs2(/dev/root)");
    for (int i = 0; i < o->share_count; i++) {
        /* TAG:PATH[:ro]; PATH must not contain ':'. */
        char *tag = o->shares[i];
        char *path = strchr(tag, ':');
        *path++ = '\0';
        char *flag = strchr(path, ':');
        if (flag != NULL) {
            *flag++ = '\0';
            if (strcmp(flag, "ro") != 0) {
                fprintf(stderr, "vmtest: --virtiofs: unknown flag '%s'\n", flag);
                exit(2);
            }
            check(krun_add_virtiofs3(id, tag, path, 0, true), "krun_add_virtiofs3");
        } else {
            check(krun_add_virtiofs(id, tag, path), "krun_add_virtiofs");
        }
    }
    configure_fs(o, id);
    /* Order matters: bridges and the port map need the vsock device that --add-vsock adds. */
    if (o->disable_implicit_vsock)
        check(krun_disable_implicit_vsock(id), "krun_disable_implicit_vsock");
    if (o->add_vsock >= 0)
        check(krun_add_vsock(id, (uint32_t)o->add_vsock), "krun_add_vsock");
    if (o->set_port_map)
        check(krun_set_port_map(id, o->port_map), "krun_set_port_map");
    if (o->tsi_scope != NULL) {
        char *ip = strchr(o->tsi_scope, ':');
        char *subnet = NULL;
        if (ip != NULL) {
            *ip++ = '\0';
            subnet = strchr(ip, ':');
            if (subnet != NULL)
                *subnet++ = '\0';
        }
        int scope = parse_number(o->tsi_scope, "--tsi-scope");
        check(krun_set_tsi_scope(id, ip != NULL && *ip ? ip : NULL,
                                 subnet != NULL && *subnet ? subnet : NULL, (uint8_t)scope),
              "krun_set_tsi_scope");
    }
    for (int i = 0; i < o->vsock_port_count; i++) {
        char *spec = o->vsock_ports[i];
        char *path = strchr(spec, ':');
        *path++ = '\0';
        bool listen = false;
        char *flag = strchr(path, ':');
        if (flag != NULL) {
            *flag++ = '\0';
            if (strcmp(flag, "listen") != 0) {
                fprintf(stderr, "vmtest: --vsock-port: unknown flag '%s'\n", flag);
                exit(2);
            }
            listen = true;
        }
        check(krun_add_vsock_port2(id, (uint32_t)parse_number(spec, "--vsock-port"), path,
                                   listen),
              "krun_add_vsock_port2");
    }
    configure_consoles(o, id);
    configure_disks(o, id);
    if (o->try_net)
        try_net(id, o->try_net);
    for (int i = 0; i < o->net_count; i++)
        add_net(id, o->nets[i]);
    if (o->nested)
        check(krun_set_nested_virt(id, true), "krun_set_nested_virt");
    {
        const char *split = getenv("KRUN_E2E_SPLIT_IRQCHIP");
        if (o->split_irqchip || (split && strcmp(split, "1") == 0))
            check(krun_split_irqchip(id, true), "krun_split_irqchip");
    }
    if (o->workdir)
        check(krun_set_workdir(id, o->workdir), "krun_set_workdir");
    if (o->rlimit_count > 0)
        check(krun_set_rlimits(id, o->rlimits), "krun_set_rlimits");
    if (o->gid >= 0)
        check(krun_setgid(id, (gid_t)o->gid), "krun_setgid");
    if (o->uid >= 0)
        check(krun_setuid(id, (uid_t)o->uid), "krun_setuid");
    if (o->exec_argv && !o->no_exec) {
        static const char *const empty_env[] = {NULL};
        const char *const *envp = o->env_count > 0 ? o->env : NULL;
        if (o->env_mode == 1)
            envp = NULL;
        else if (o->env_mode == 2)
            envp = empty_env;
        check(krun_set_exec(id, o->exec_argv[0], (const char *const *)&o->exec_argv[1], envp),
              "krun_set_exec");
    }
    return id;
}

/* --shutdown-on: a child that waits for FILE, then asks the VM to shut down through the
 * eventfd it inherits; it dies with the VMM. */
static void start_shutdown_helper(uint32_t ctx, const char *file)
{
    int fd = krun_get_shutdown_eventfd(ctx);
    check(fd, "krun_get_shutdown_eventfd");
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        perror("vmtest: fork");
        exit(2);
    }
    if (pid > 0)
        return;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(0);
    while (access(file, F_OK) != 0)
        usleep(20 * 1000);
    uint64_t one = 1;
    if (write(fd, &one, sizeof(one)) != (ssize_t)sizeof(one)) {
        perror("vmtest: write to the shutdown eventfd");
        _exit(1);
    }
    char sent[4096];
    snprintf(sent, sizeof(sent), "%s.sent", file);
    int s = open(sent, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (s >= 0)
        close(s);
    _exit(0);
}

int main(int argc, char **argv)
{
    struct options o;
    parse(argc, argv, &o);
    uint32_t ctx = configure(&o);
    if (o.kernel)
        check(krun_set_kernel(ctx, o.kernel, (uint32_t)o.kernel_format, o.initramfs,
                              o.kernel_cmdline),
              "krun_set_kernel");
    if (o.smbios_oem_count > 0)
        check(krun_set_smbios_oem_strings(ctx, o.smbios_oem), "krun_set_smbios_oem_strings");
    if (o.shutdown_on)
        start_shutdown_helper(ctx, o.shutdown_on);
    if (o.pid_file) {
        FILE *f = fopen(o.pid_file, "w");
        if (f == NULL || fprintf(f, "%ld\n", (long)getpid()) < 0 || fclose(f) != 0) {
            fprintf(stderr, "vmtest: --pid-file: cannot write %s\n", o.pid_file);
            return 2;
        }
    }

    /* Whatever we printed must be out before the VM owns the process's exit. */
    fflush(stdout);
    fflush(stderr);
    int ret = krun_start_enter(ctx);

    if (o.mode == MODE_START_ERROR) {
        printf("krun_start_enter: %d (%s)\n", ret, ret < 0 ? strerror(-ret) : "no error");
        return ret < 0 ? 0 : 1;
    }
    fprintf(stderr, "vmtest: krun_start_enter returned %d (%s)\n", ret,
            ret < 0 ? strerror(-ret) : "no error");
    return 3;
}
