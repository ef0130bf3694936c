/*
 * ABI conformance test for an installed libkrun.so.1.
 *
 * It includes the installed <libkrun.h>, then repeats upstream libkrun's prototypes and
 * macros exactly: with -Wall -Werror any type or macro that differs fails the build. Then
 * it calls every function once with arguments that must be rejected and checks the exact
 * negative errno. Prints one line per check and "N passed, M failed"; exits non-zero on
 * any failure. Built and run by tests/abi/run.sh.
 */
#include <libkrun.h>

#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- upstream's declarations (libkrun 1.19 + microsandbox additions), verbatim ---- */
int32_t krun_set_log_level(uint32_t level);
#define KRUN_LOG_TARGET_DEFAULT -1
#define KRUN_LOG_LEVEL_OFF 0
#define KRUN_LOG_LEVEL_ERROR 1
#define KRUN_LOG_LEVEL_WARN 2
#define KRUN_LOG_LEVEL_INFO 3
#define KRUN_LOG_LEVEL_DEBUG 4
#define KRUN_LOG_LEVEL_TRACE 5
#define KRUN_LOG_STYLE_AUTO 0
#define KRUN_LOG_STYLE_ALWAYS 1
#define KRUN_LOG_STYLE_NEVER 2
#define KRUN_LOG_OPTION_NO_ENV 1
int32_t krun_init_log(int target_fd, uint32_t level, uint32_t style, uint32_t options);
int32_t krun_create_ctx();
int32_t krun_free_ctx(uint32_t ctx_id);
int32_t krun_set_vm_config(uint32_t ctx_id, uint8_t num_vcpus, uint32_t ram_mib);
#define KRUN_FS_ROOT_TAG "/dev/root"
int32_t krun_set_root(uint32_t ctx_id, const char *root_path);
int32_t krun_set_root_disk(uint32_t ctx_id, const char *disk_path);
int32_t krun_set_data_disk(uint32_t ctx_id, const char *disk_path);
int32_t krun_add_disk(uint32_t ctx_id, const char *block_id, const char *disk_path, bool read_only);
#define KRUN_DISK_FORMAT_RAW 0
#define KRUN_DISK_FORMAT_QCOW2 1
#define KRUN_DISK_FORMAT_VMDK 2
int32_t krun_add_disk2(uint32_t ctx_id,
                       const char *block_id,
                       const char *disk_path,
                       uint32_t disk_format,
                       bool read_only);
#define KRUN_SYNC_NONE 0
#define KRUN_SYNC_RELAXED 1
#define KRUN_SYNC_FULL 2
 int32_t krun_add_disk3(uint32_t ctx_id,
                       const char *block_id,
                       const char *disk_path,
                       uint32_t disk_format,
                       bool read_only,
                       bool direct_io,
                       uint32_t sync_mode);
int32_t krun_set_mapped_volumes(uint32_t ctx_id, const char *const mapped_volumes[]);
int32_t krun_add_virtiofs(uint32_t ctx_id,
                          const char *c_tag,
                          const char *c_path);
int32_t krun_add_virtiofs2(uint32_t ctx_id,
                           const char *c_tag,
                           const char *c_path,
                           uint64_t shm_size);
int32_t krun_add_virtiofs3(uint32_t ctx_id,
                           const char *c_tag,
                           const char *c_path,
                           uint64_t shm_size,
                           bool read_only);
#define NET_FLAG_VFKIT (1 << 0)
#define NET_FLAG_DHCP_CLIENT (1 << 1)
#define KRUN_TSI_HIJACK_INET (1 << 0)
#define KRUN_TSI_HIJACK_UNIX (1 << 1)
#define NET_FEATURE_CSUM 1 << 0
#define NET_FEATURE_GUEST_CSUM 1 << 1
#define NET_FEATURE_GUEST_TSO4 1 << 7
#define NET_FEATURE_GUEST_TSO6 1 << 8
#define NET_FEATURE_GUEST_UFO 1 << 10
#define NET_FEATURE_HOST_TSO4 1 << 11
#define NET_FEATURE_HOST_TSO6 1 << 12
#define NET_FEATURE_HOST_UFO 1 << 14
#define COMPAT_NET_FEATURES NET_FEATURE_CSUM | NET_FEATURE_GUEST_CSUM | \
                            NET_FEATURE_GUEST_TSO4 | NET_FEATURE_GUEST_UFO | \
                            NET_FEATURE_HOST_TSO4 | NET_FEATURE_HOST_UFO
int32_t krun_add_net_unixstream(uint32_t ctx_id,
                                const char *c_path,
                                int fd,
                                uint8_t *const c_mac,
                                uint32_t features,
                                uint32_t flags);
int32_t krun_add_net_unixgram(uint32_t ctx_id,
                              const char *c_path,
                              int fd,
                              uint8_t *const c_mac,
                              uint32_t features,
                              uint32_t flags);
int32_t krun_add_net_tap(uint32_t ctx_id,
                         char *c_tap_name,
                         uint8_t *const c_mac,
                         uint32_t features,
                         uint32_t flags);
int32_t krun_set_passt_fd(uint32_t ctx_id, int fd);
int32_t krun_set_gvproxy_path(uint32_t ctx_id, char *c_path);
int32_t krun_set_net_mac(uint32_t ctx_id, uint8_t *const c_mac);
int32_t krun_set_port_map(uint32_t ctx_id, const char *const port_map[]);
#define VIRGLRENDERER_USE_EGL 1 << 0
#define VIRGLRENDERER_THREAD_SYNC 1 << 1
#define VIRGLRENDERER_USE_GLX 1 << 2
#define VIRGLRENDERER_USE_SURFACELESS 1 << 3
#define VIRGLRENDERER_USE_GLES 1 << 4
#define VIRGLRENDERER_USE_EXTERNAL_BLOB 1 << 5
#define VIRGLRENDERER_VENUS 1 << 6
#define VIRGLRENDERER_NO_VIRGL 1 << 7
#define VIRGLRENDERER_USE_ASYNC_FENCE_CB 1 << 8
#define VIRGLRENDERER_RENDER_SERVER 1 << 9
#define VIRGLRENDERER_DRM 1 << 10
int32_t krun_set_gpu_options(uint32_t ctx_id, uint32_t virgl_flags);
int32_t krun_set_gpu_options2(uint32_t ctx_id,
                              uint32_t virgl_flags,
                              uint64_t shm_size);
#define KRUN_MAX_DISPLAYS 16
int32_t krun_add_display(uint32_t ctx_id, uint32_t width, uint32_t height);
int32_t krun_display_set_edid(uint32_t ctx_id, uint32_t display_id, const uint8_t* edid_blob, size_t blob_size);
int32_t krun_display_set_dpi(uint32_t ctx_id, uint32_t display_id, uint32_t dpi);
int32_t krun_display_set_physical_size(uint32_t ctx_id, uint32_t display_id, uint16_t width_mm, uint16_t height_mm);
int32_t krun_display_set_refresh_rate(uint32_t ctx_id, uint32_t display_id, uint32_t refresh_rate);
int32_t krun_set_display_backend(uint32_t ctx_id, const void *display_backend, size_t backend_size);
int krun_add_input_device(uint32_t ctx_id, const void *config_backend, size_t config_backend_size,
                            const void *events_backend, size_t events_backend_size);
int krun_add_input_device_fd(uint32_t ctx_id, int input_fd);
#define KRUN_VIRTIO_DEVICE_CONSOLE 3
#define KRUN_VIRTIO_DEVICE_RNG 4
#define KRUN_VIRTIO_DEVICE_RTC 17
#define KRUN_VIRTIO_DEVICE_INPUT 18
#define KRUN_VIRTIO_DEVICE_VSOCK 19
#define KRUN_VIRTIO_DEVICE_SND 25
#define KRUN_VIRTIO_DEVICE_CAN 36
#define KRUN_VHOST_USER_CONSOLE_NUM_QUEUES 4
#define KRUN_VHOST_USER_CONSOLE_QUEUE_SIZES ((uint16_t[]){128, 128, 64, 64})
#define KRUN_VHOST_USER_RNG_NUM_QUEUES 1
#define KRUN_VHOST_USER_RNG_QUEUE_SIZES ((uint16_t[]){256})
#define KRUN_VHOST_USER_RTC_NUM_QUEUES 2
#define KRUN_VHOST_USER_RTC_QUEUE_SIZES ((uint16_t[]){1024, 1024})
#define KRUN_VHOST_USER_INPUT_NUM_QUEUES 2
#define KRUN_VHOST_USER_INPUT_QUEUE_SIZES ((uint16_t[]){1024, 1024})
#define KRUN_VHOST_USER_SND_NUM_QUEUES 4
#define KRUN_VHOST_USER_SND_QUEUE_SIZES ((uint16_t[]){64, 64, 64, 64})
#define KRUN_VHOST_USER_VSOCK_NUM_QUEUES 3
#define KRUN_VHOST_USER_VSOCK_QUEUE_SIZES ((uint16_t[]){128, 128, 128})
#define KRUN_VHOST_USER_CAN_NUM_QUEUES 3
#define KRUN_VHOST_USER_CAN_QUEUE_SIZES ((uint16_t[]){64, 64, 64})
int32_t krun_add_vhost_user_device(uint32_t ctx_id,
                                   uint32_t device_type,
                                   const char *socket_path,
                                   const char *name,
                                   uint16_t num_queues,
                                   const uint16_t *queue_sizes);
int32_t krun_set_rlimits(uint32_t ctx_id, const char *const rlimits[]);
int32_t krun_set_smbios_oem_strings(uint32_t ctx_id, const char *const oem_strings[]);
int32_t krun_set_workdir(uint32_t ctx_id,
                         const char *workdir_path);
int32_t krun_set_exec(uint32_t ctx_id,
                      const char *exec_path,
                      const char *const argv[],
                      const char *const envp[]);
int32_t krun_set_firmware(uint32_t ctx_id, const char *firmware_path);
#define KRUN_KERNEL_FORMAT_RAW 0
#define KRUN_KERNEL_FORMAT_ELF 1
#define KRUN_KERNEL_FORMAT_PE_GZ 2
#define KRUN_KERNEL_FORMAT_IMAGE_BZ2 3
#define KRUN_KERNEL_FORMAT_IMAGE_GZ 4
#define KRUN_KERNEL_FORMAT_IMAGE_ZSTD 5
int32_t krun_set_kernel(uint32_t ctx_id,
                        const char *kernel_path,
                        uint32_t kernel_format,
                        const char *initramfs,
                        const char *cmdline);
int32_t krun_set_env(uint32_t ctx_id, const char *const envp[]);
int32_t krun_set_tee_config_file(uint32_t ctx_id, const char *filepath);
int32_t krun_add_vsock_port(uint32_t ctx_id,
                            uint32_t port,
                            const char *c_filepath);
int32_t krun_add_vsock_port2(uint32_t ctx_id,
                             uint32_t port,
                             const char *c_filepath,
                             bool listen);
int32_t krun_add_vsock(uint32_t ctx_id, uint32_t tsi_features);
int32_t krun_get_shutdown_eventfd(uint32_t ctx_id);
int32_t krun_set_console_output(uint32_t ctx_id, const char *c_filepath);
int32_t krun_setuid(uint32_t ctx_id, uid_t uid);
int32_t krun_setgid(uint32_t ctx_id, gid_t gid);
int32_t krun_set_nested_virt(uint32_t ctx_id, bool enabled);
int32_t krun_check_nested_virt(void);
#define KRUN_FEATURE_NET 0
#define KRUN_FEATURE_BLK 1
#define KRUN_FEATURE_GPU 2
#define KRUN_FEATURE_INPUT 4
#define KRUN_FEATURE_TEE 6
#define KRUN_FEATURE_AMD_SEV 7
#define KRUN_FEATURE_INTEL_TDX 8
#define KRUN_FEATURE_AWS_NITRO 9
#define KRUN_FEATURE_VIRGL_RESOURCE_MAP2 10
#define KRUN_FEATURE_INIT_BLOB 11
int32_t krun_has_feature(uint64_t feature);
int32_t krun_get_max_vcpus(void);
int32_t krun_split_irqchip(uint32_t ctx_id, bool enable);
int32_t krun_disable_implicit_console(uint32_t ctx_id);
int32_t krun_disable_implicit_init(uint32_t ctx_id);
int32_t krun_get_default_init(const uint8_t **data_out, size_t *len_out);
int32_t krun_fs_add_overlay_file(uint32_t ctx_id, const char *fs_tag,
                                 const char *path, const uint8_t *data,
                                 size_t data_len, uint32_t mode, bool one_shot);
int32_t krun_fs_add_overlay_dir(uint32_t ctx_id, const char *fs_tag,
                                const char *path, uint32_t mode);
int32_t krun_disable_implicit_vsock(uint32_t ctx_id);
int32_t krun_set_kernel_console(uint32_t ctx_id, const char *console_id);
int32_t krun_add_virtio_console_default(uint32_t ctx_id,
#ifdef _WIN32
                                        void *input_handle,
                                        void *output_handle,
                                        void *err_handle
#else
                                        int input_fd,
                                        int output_fd,
                                        int err_fd
#endif
                                        );
int32_t krun_add_serial_console_default(uint32_t ctx_id,
#ifdef _WIN32
                                        void *input_handle,
                                        void *output_handle
#else
                                        int input_fd,
                                        int output_fd
#endif
                                        );
int32_t krun_add_virtio_console_multiport(uint32_t ctx_id);
int32_t krun_add_console_port_tty(uint32_t ctx_id,
                                  uint32_t console_id,
                                  const char *name,
#ifdef _WIN32
                                  void *tty_handle
#else
                                  int tty_fd
#endif
                                  );
int32_t krun_add_console_port_inout(uint32_t ctx_id,
                                    uint32_t console_id,
                                    const char *name,
#ifdef _WIN32
                                    void *input_handle,
                                    void *output_handle
#else
                                    int input_fd,
                                    int output_fd
#endif
                                    );
int32_t krun_set_root_disk_remount(uint32_t ctx_id, const char *device, const char *fstype, const char *options);
int32_t krun_start_enter(uint32_t ctx_id);
int32_t krun_add_virtiofs4(uint32_t ctx_id, const char *c_tag, const char *c_path, uint64_t shm_size, bool read_only, uint32_t semantics);
int32_t krun_set_gpu_render_server_fd(uint32_t ctx_id, int32_t render_server_fd);
int32_t krun_set_snd_device(uint32_t ctx_id, bool enable);
int32_t krun_set_overlayfs_root(uint32_t ctx_id, const char *const root_layers[]);
int32_t krun_set_tsi_scope(uint32_t ctx_id, const char *c_ip, const char *c_subnet, uint8_t scope);
/* ---- end of upstream's declarations ---- */

static int passed, failed;

static void check(const char *what, long got, long want)
{
    if (got == want) {
        passed++;
        printf("ok   %-60s = %ld\n", what, got);
    } else {
        failed++;
        printf("FAIL %-60s = %ld, expected %ld\n", what, got, want);
    }
}

static void check_true(const char *what, int cond, long got)
{
    if (cond) {
        passed++;
        printf("ok   %-60s = %ld\n", what, got);
    } else {
        failed++;
        printf("FAIL %-60s = %ld\n", what, got);
    }
}

#define CHECK(call, want) check(#call, (long)(call), (long)(want))

/* ---- issue 10: what is not built is refused, what a guest works without is accepted and
 * logged, and what a setter can know is refused there. The library logs at WARN into a
 * file here, so each call's lines can be counted. ---- */
static int log_fd = -1;
static off_t log_seen;

/* Skips the log lines written so far. */
static void log_mark(void)
{
    log_seen = lseek(log_fd, 0, SEEK_END);
}

/* Checks that exactly one line was logged since log_mark() and that it contains both
 * needles. */
static void check_one_line(const char *what, const char *needle1, const char *needle2)
{
    char buf[4096];
    off_t end = lseek(log_fd, 0, SEEK_END);
    ssize_t n = pread(log_fd, buf, sizeof buf - 1, log_seen);
    int lines = 0;
    buf[n > 0 ? n : 0] = 0;
    for (ssize_t i = 0; i < n; i++)
        lines += buf[i] == '\n';
    char label[160];
    snprintf(label, sizeof label, "  one log line with \"%s\" and \"%s\"", needle1, needle2);
    int ok = lines == 1 && strstr(buf, needle1) && strstr(buf, needle2);
    check_true(label, ok, lines);
    if (!ok)
        printf("     %s logged %ld bytes: %s\n", what, (long)(end - log_seen), buf);
}

/* The call returns `want` and logs exactly one line containing both needles. */
#define CHECK_LOG(call, want, needle1, needle2)                                              \
    do {                                                                                     \
        log_mark();                                                                          \
        CHECK(call, want);                                                                   \
        check_one_line(#call, needle1, needle2);                                             \
    } while (0)
#define REFUSED(call, feature) CHECK_LOG(call, -ENOTSUP, "not supported", feature)
#define IGNORED(call, what) CHECK_LOG(call, 0, "ignored", what)

static void refusals(uint8_t *mac)
{
    char log_path[] = "/tmp/abi-log-XXXXXX";
    char dir[] = "/tmp/abi-dir-XXXXXX";
    const char *layers[] = {"/", NULL};
    const char *oem[] = {"a", "b", NULL};
    const char *empty_oem[] = {"a", "", NULL};
    const char *noeq_env[] = {"A=1", "NOEQUALS", NULL};
    const char *good_env[] = {"A=1", "B=", NULL};
    char tag37[38], tag36[37], missing[64];
    int32_t ctx, ret;

    log_fd = mkstemp(log_path);
    if (log_fd < 0 || !mkdtemp(dir)) {
        check_true("temporary log file and directory", 0, errno);
        return;
    }
    CHECK(krun_init_log(log_fd, KRUN_LOG_LEVEL_WARN, KRUN_LOG_STYLE_NEVER,
                        KRUN_LOG_OPTION_NO_ENV), 0);
    ctx = krun_create_ctx();
    check_true("krun_create_ctx() >= 0", ctx >= 0, ctx);
    if (ctx < 0)
        return;
    uint32_t c = (uint32_t)ctx;

    /* Refused: a guest would miss what it asked for. NULL pointers are still EINVAL. */
    CHECK(krun_set_root_disk(c, "/nonexistent/root.img"), -ENOENT);
    CHECK(krun_set_root_disk_remount(c, "/dev/vda", "ext4", NULL), -EINVAL); /* no disk yet */
    {
        /* Issue 15: the overlay root is a root like krun_set_root's. */
        const char *no_layers[] = {NULL};
        const char *missing_layers[] = {"/", "/nonexistent-krun-layer", NULL};
        int c2 = krun_create_ctx();
        CHECK(krun_set_overlayfs_root((uint32_t)c2, no_layers), -EINVAL);
        CHECK(krun_set_overlayfs_root((uint32_t)c2, missing_layers), -ENOENT);
        CHECK(krun_set_overlayfs_root((uint32_t)c2, layers), 0);
        CHECK(krun_set_overlayfs_root((uint32_t)c2, layers), -EEXIST);
        CHECK(krun_set_root((uint32_t)c2, "/"), -EEXIST);
        CHECK(krun_free_ctx((uint32_t)c2), 0);
    }
    REFUSED(krun_set_kernel(c, "/Image.gz", KRUN_KERNEL_FORMAT_PE_GZ, NULL, NULL), "PE_GZ");
    REFUSED(krun_set_kernel(c, "/Image.bz2", KRUN_KERNEL_FORMAT_IMAGE_BZ2, NULL, NULL),
            "IMAGE_BZ2");
    CHECK(krun_set_kernel(c, "/vmlinux", KRUN_KERNEL_FORMAT_ELF, NULL, "console=ttyS0"), 0);
    CHECK(krun_has_feature(KRUN_FEATURE_NET), 1);
    CHECK(krun_has_feature(KRUN_FEATURE_BLK), 1);
    /* virtio-net (issue 14): accepted; interfaces and the legacy one exclude each other. */
    {
        int32_t n = krun_create_ctx();
        uint8_t bad_mac[6] = {0x01, 0, 0, 0, 0, 1};
        check_true("krun_create_ctx() >= 0 (net)", n >= 0, n);
        CHECK(krun_add_net_unixstream((uint32_t)n, "/tmp/passt.sock", -1, mac,
                                      COMPAT_NET_FEATURES, NET_FLAG_DHCP_CLIENT), 0);
        CHECK(krun_add_net_unixgram((uint32_t)n, "/tmp/gv.sock", -1, mac, COMPAT_NET_FEATURES,
                                    NET_FLAG_VFKIT), 0);
        CHECK(krun_add_net_tap((uint32_t)n, "tap0", mac, 0, 0), 0);
        CHECK(krun_set_passt_fd((uint32_t)n, 0), -EBUSY);
        CHECK(krun_add_net_unixstream((uint32_t)n, "/tmp/p.sock", 3, mac, 0, 0), -EINVAL);
        CHECK(krun_add_net_unixgram((uint32_t)n, NULL, -1, mac, 0, 0), -EINVAL);
        CHECK(krun_add_net_tap((uint32_t)n, "tap-name-16-byte", mac, 0, 0), -EINVAL);
        CHECK(krun_add_net_tap((uint32_t)n, "tap-name-15-byt", bad_mac, 0, 0), -EINVAL);
        CHECK(krun_free_ctx((uint32_t)n), 0);
        n = krun_create_ctx();
        CHECK(krun_set_passt_fd((uint32_t)n, 0), 0);
        CHECK(krun_set_gvproxy_path((uint32_t)n, "/tmp/gv.sock"), 0);
        CHECK(krun_set_net_mac((uint32_t)n, mac), 0);
        CHECK(krun_add_net_tap((uint32_t)n, "tap0", mac, 0, 0), -EBUSY);
        CHECK(krun_free_ctx((uint32_t)n), 0);
    }

    /* Accepted and ignored, as upstream's builds without these features: one warning. */
    IGNORED(krun_set_gpu_options(c, VIRGLRENDERER_USE_EGL), "GPU options");
    IGNORED(krun_set_gpu_options2(c, VIRGLRENDERER_VENUS, 1 << 20), "GPU options");
    IGNORED(krun_set_gpu_render_server_fd(c, 0), "render server");
    IGNORED(krun_set_snd_device(c, true), "virtio-snd");
    CHECK(krun_set_snd_device(c, false), 0);
    CHECK(krun_set_smbios_oem_strings(c, oem), 0);
    CHECK(krun_set_smbios_oem_strings(c, empty_oem), -EINVAL);
    /* Taken: the split irqchip is built (16-machine2.sh boots guests with it). */
    CHECK(krun_split_irqchip(c, true), 0);
    CHECK(krun_split_irqchip(c, false), 0);
    /* A share other than the root gets its DAX window (33-dax.sh shows it in a guest). */
    CHECK(krun_add_virtiofs2(c, "dax", dir, 1 << 20), 0);
    CHECK(krun_add_virtiofs3(c, "dax3", dir, 1 << 20, true), 0);
    CHECK(krun_add_virtiofs4(c, "dax4", dir, 1 << 20, false, 0), 0);
    /* The root gets its window too (fs_dax_root_window shows it in a guest). */
    {
        int32_t r = krun_create_ctx();
        CHECK(krun_add_virtiofs2((uint32_t)r, KRUN_FS_ROOT_TAG, dir, 1 << 20), 0);
        CHECK(krun_free_ctx((uint32_t)r), 0);
    }
    /* The guest IP is the TSI interface's address (net_tsi_scope_ip shows it): IPv4 only. */
    CHECK(krun_set_tsi_scope(c, "10.0.0.1", "10.0.0.0/8", 1), 0);
    CHECK(krun_set_tsi_scope(c, "fd00::1", NULL, 1), -EINVAL);

    /* Refused at the setter with the precise errno. */
    memset(tag37, 't', sizeof tag37 - 1);
    tag37[sizeof tag37 - 1] = 0;
    memset(tag36, 't', sizeof tag36 - 1);
    tag36[sizeof tag36 - 1] = 0;
    snprintf(missing, sizeof missing, "%s/missing", dir);
    CHECK_LOG(krun_add_virtiofs(c, tag37, dir), -EINVAL, "virtio-fs tag", "37 bytes");
    CHECK(krun_add_virtiofs(c, tag36, dir), 0);
    CHECK(krun_add_virtiofs(c, "", dir), -EINVAL);
    CHECK_LOG(krun_add_virtiofs(c, "gone", missing), -ENOENT, "c_path", "missing");
    CHECK_LOG(krun_add_virtiofs(c, "file", log_path), -ENOTDIR, "c_path", "abi-log");
    CHECK(krun_set_root(c, missing), -ENOENT);
    CHECK(krun_set_root(c, log_path), -ENOTDIR);
    CHECK(krun_set_root(c, dir), 0);
    CHECK_LOG(krun_set_root(c, dir), -EEXIST, "krun_set_root", "already exists");
    CHECK(krun_set_vm_config(c, 255, 512), -EINVAL);
    ret = krun_get_max_vcpus();
    check_true("krun_get_max_vcpus() <= 254 (what Vm::new accepts)", ret <= 254, ret);
    if (ret > 0)
        CHECK(krun_set_vm_config(c, (uint8_t)ret, 512), 0);
    if (ret > 0 && ret < 254)
        CHECK(krun_set_vm_config(c, (uint8_t)(ret + 1), 512), -EINVAL);
    void *fw = dlopen("libkrunfw.so.5", RTLD_NOW | RTLD_LOCAL);
    if (fw) {
        /* libkrunfw is loadable, so krun_create_ctx knows the kernel's size. */
        CHECK_LOG(krun_set_vm_config(c, 1, 1), -EINVAL, "RAM", "kernel");
        dlclose(fw);
    } else {
        printf("skip krun_set_vm_config(c, 1, 1): no libkrunfw.so.5 to size the kernel\n");
    }
    CHECK(krun_set_vm_config(c, 1, 512), 0);
    CHECK_LOG(krun_setuid(c, (uid_t)-1), -EINVAL, "uid", "-1");
    CHECK_LOG(krun_setgid(c, (gid_t)-1), -EINVAL, "gid", "-1");
    CHECK(krun_setuid(c, 1000), 0);
    CHECK(krun_setgid(c, 1000), 0);
    CHECK_LOG(krun_set_env(c, noeq_env), -EINVAL, "NOEQUALS", "'='");
    CHECK(krun_set_exec(c, "/bin/true", NULL, noeq_env), -EINVAL);
    CHECK(krun_set_env(c, good_env), 0);

    /* A bad argument of 1 MiB is logged cut, with its length. */
    size_t big_len = 1 << 20;
    char *big = malloc(big_len + 1);
    if (big) {
        memset(big, 'x', big_len);
        big[big_len] = 0;
        const char *big_env[] = {big, NULL};
        CHECK_LOG(krun_set_env(c, big_env), -EINVAL, "(1048576 bytes in all)", "xxxx");
        check_true("  that line is shorter than 400 bytes",
                   lseek(log_fd, 0, SEEK_END) - log_seen < 400,
                   (long)(lseek(log_fd, 0, SEEK_END) - log_seen));
        free(big);
    }

    CHECK(krun_free_ctx(c), 0);
    CHECK(krun_set_log_level(KRUN_LOG_LEVEL_OFF), 0);
    close(log_fd);
    unlink(log_path);
    rmdir(dir);
}

int main(void)
{
    const uint32_t BAD = 0x7ffffff0u; /* never handed out by krun_create_ctx here */
    uint8_t mac[6] = {0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xee};
    const char *vols[] = {"/a:/b", NULL};
    const char *bad_ports[] = {"80", NULL};
    const char *bad_rlimits[] = {"RLIMIT_NOFILE=10:5", NULL};
    uint16_t sizes[1] = {256};
    const uint8_t *init_data = NULL;
    size_t init_len = 0;
    int32_t ctx, ret;

    CHECK(krun_set_log_level(KRUN_LOG_LEVEL_OFF), 0);
    CHECK(krun_init_log(0, KRUN_LOG_LEVEL_OFF, KRUN_LOG_STYLE_NEVER, 0), -EINVAL);
    CHECK(krun_init_log(KRUN_LOG_TARGET_DEFAULT, KRUN_LOG_LEVEL_OFF, 7, 0), -EINVAL);

    ctx = krun_create_ctx();
    check_true("krun_create_ctx() >= 0", ctx >= 0, ctx);
    if (ctx < 0)
        return 1;
    uint32_t c = (uint32_t)ctx;

    CHECK(krun_free_ctx(BAD), -ENOENT);
    CHECK(krun_set_vm_config(c, 0, 512), -EINVAL);
    CHECK(krun_set_vm_config(c, 1, 0), -EINVAL);
    CHECK(krun_set_vm_config(BAD, 1, 512), -ENOENT);
    CHECK(krun_set_root(c, NULL), -EINVAL);
    CHECK(krun_set_root_disk(c, NULL), -EINVAL);
    CHECK(krun_set_data_disk(c, NULL), -EINVAL);
    CHECK(krun_add_disk(c, NULL, "/disk.img", false), -EINVAL);
    CHECK(krun_add_disk2(c, "d2", "/disk.img", 99, false), -EINVAL);
    CHECK(krun_add_disk3(c, "d3", "/disk.img", KRUN_DISK_FORMAT_RAW, false, false, 9), -EINVAL);
    /* Disks: the image is opened at the call (missing: ENOENT); ids are unique. */
    {
        char img[] = "/tmp/abi-disk-XXXXXX";
        int img_fd = mkstemp(img);
        check_true("temporary disk image", img_fd >= 0, errno);
        CHECK(krun_add_disk(c, "d0", "/nonexistent/disk.img", false), -ENOENT);
        CHECK(krun_add_disk(c, "d0", img, false), 0);
        CHECK(krun_add_disk2(c, "d0", img, KRUN_DISK_FORMAT_QCOW2, true), -EEXIST);
        CHECK(krun_add_disk3(c, "d1", img, KRUN_DISK_FORMAT_RAW, false, true, KRUN_SYNC_FULL), 0);
        CHECK(krun_set_data_disk(c, img), 0);
        CHECK(krun_set_data_disk(c, img), -EEXIST);
        CHECK(krun_set_root_disk_remount(c, "/dev/vda", "ext 4", NULL), -EINVAL);
        CHECK(krun_set_root_disk_remount(c, "/dev/vda", NULL, "noatime"), 0);
        CHECK(krun_set_root(c, "/"), -EBUSY); /* the disk is the root now */
        if (img_fd >= 0) {
            close(img_fd);
            unlink(img);
        }
    }
    CHECK(krun_set_mapped_volumes(c, vols), -ENOTSUP);
    CHECK(krun_add_virtiofs(c, NULL, "/"), -EINVAL);
    CHECK(krun_add_virtiofs2(BAD, "t2", "/", 0), -ENOENT);
    CHECK(krun_add_virtiofs3(c, "dup", "/", 0, true), 0);
    CHECK(krun_add_virtiofs3(c, "dup", "/", 0, true), -EEXIST);
    CHECK(krun_add_virtiofs4(c, "t4", "/", 0, false, 7), -EINVAL);
    /* Issue 15: semantics 1, NullFs shares (NULL path) and the overlay entries in them. */
    CHECK(krun_add_virtiofs4(c, "t4", "/", 0, false, 1), 0);
    CHECK(krun_add_virtiofs3(c, "null", NULL, 0, false), 0);
    CHECK(krun_fs_add_overlay_dir(c, "null", "etc", 040755), 0);
    CHECK(krun_fs_add_overlay_file(c, "null", "etc/conf", (const uint8_t *)"x", 1, 0100644, false), 0);
    CHECK(krun_fs_add_overlay_file(c, "null", "etc/conf", (const uint8_t *)"x", 1, 0644, false), -EEXIST);
    CHECK(krun_fs_add_overlay_file(c, "null", "usr/conf", (const uint8_t *)"x", 1, 0644, false), -ENOENT);
    CHECK(krun_fs_add_overlay_dir(c, "null", "etc/conf/d", 0755), -ENOTDIR);
    CHECK(krun_fs_add_overlay_dir(c, "null", "a//b", 0755), -EINVAL);
    CHECK(krun_fs_add_overlay_dir(c, "nosuch", "d", 0755), -ENOENT);
    CHECK(krun_add_net_unixstream(c, NULL, -1, mac, 0, 0), -EINVAL);
    CHECK(krun_add_net_unixgram(c, "/tmp/gv.sock", -1, NULL, 0, 0), -EINVAL);
    CHECK(krun_add_net_tap(c, "tap0", NULL, COMPAT_NET_FEATURES, 0), -EINVAL);
    CHECK(krun_set_passt_fd(c, -1), -EINVAL);
    CHECK(krun_set_gvproxy_path(c, NULL), -EINVAL);
    CHECK(krun_set_net_mac(c, NULL), -EINVAL);
    CHECK(krun_set_port_map(c, bad_ports), -EINVAL);
    CHECK(krun_add_display(c, 800, 600), -ENOTSUP);
    CHECK(krun_display_set_edid(c, 0, NULL, 0), -EINVAL);
    CHECK(krun_display_set_dpi(c, 0, 96), -ENOTSUP);
    CHECK(krun_display_set_physical_size(c, 0, 300, 200), -ENOTSUP);
    CHECK(krun_display_set_refresh_rate(c, 0, 60), -ENOTSUP);
    CHECK(krun_set_display_backend(c, NULL, 0), -EINVAL);
    CHECK(krun_add_input_device(c, NULL, 0, NULL, 0), -EINVAL);
    CHECK(krun_add_input_device_fd(c, -1), -EINVAL);
    CHECK(krun_add_vhost_user_device(c, KRUN_VIRTIO_DEVICE_RNG, NULL, NULL,
                                     KRUN_VHOST_USER_RNG_NUM_QUEUES, sizes), -EINVAL);
    CHECK(krun_set_rlimits(c, bad_rlimits), -EINVAL);
    CHECK(krun_set_smbios_oem_strings(c, NULL), -EINVAL);
    CHECK(krun_set_workdir(c, NULL), -EINVAL);
    CHECK(krun_set_exec(c, NULL, NULL, NULL), -EINVAL);
    CHECK(krun_set_firmware(c, "/fw.fd"), -ENOTSUP);
    CHECK(krun_set_kernel(c, "/vmlinux", 99, NULL, NULL), -EINVAL);
    CHECK(krun_set_env(BAD, NULL), -ENOENT);
    CHECK(krun_set_tee_config_file(c, "/tee.json"), -ENOTSUP);
    CHECK(krun_add_vsock_port(c, 1024, NULL), -EINVAL);
    CHECK(krun_add_vsock_port2(c, 1025, "/", true), -EEXIST);
    CHECK(krun_add_vsock(c, 0), -EEXIST);
    CHECK(krun_get_shutdown_eventfd(BAD), -ENOENT);
    ret = krun_get_shutdown_eventfd(c);
    check_true("krun_get_shutdown_eventfd() is an fd", ret >= 0, ret);
    CHECK(krun_get_shutdown_eventfd(c), ret); /* the same fd each time */
    CHECK(krun_set_console_output(c, NULL), -EINVAL);
    CHECK(krun_setuid(BAD, 0), -ENOENT);
    CHECK(krun_setgid(BAD, 0), -ENOENT);
    CHECK(krun_set_nested_virt(BAD, true), -ENOENT);
    ret = krun_check_nested_virt();
    check_true("krun_check_nested_virt() in {0, 1}", ret == 0 || ret == 1, ret);
    CHECK(krun_has_feature(3), -EINVAL);
    CHECK(krun_has_feature(KRUN_FEATURE_GPU), 0);
    CHECK(krun_has_feature(KRUN_FEATURE_INIT_BLOB), 1);
    ret = krun_get_max_vcpus();
    check_true("krun_get_max_vcpus() > 0 or -errno of /dev/kvm", ret > 0 || ret == -ENOENT ||
               ret == -EACCES || ret == -EPERM, ret);
    CHECK(krun_split_irqchip(BAD, false), -ENOENT);
    CHECK(krun_disable_implicit_console(BAD), -ENOENT);
    CHECK(krun_disable_implicit_init(BAD), -ENOENT);
    CHECK(krun_get_default_init(NULL, &init_len), -EINVAL);
    CHECK(krun_get_default_init(&init_data, &init_len), 0);
    check_true("default init is an ELF", init_len > 4 && init_data[0] == 0x7f &&
               init_data[1] == 'E', (long)init_len);
    CHECK(krun_fs_add_overlay_file(c, "nosuch", "f", NULL, 4, 0644, false), -EINVAL);
    CHECK(krun_fs_add_overlay_dir(c, NULL, "d", 0755), -EINVAL);
    CHECK(krun_disable_implicit_vsock(BAD), -ENOENT);
    CHECK(krun_set_kernel_console(c, NULL), -EINVAL);
    /* As upstream, a negative fd of a default console means "no port for it". */
    CHECK(krun_add_virtio_console_default(BAD, -1, 1, 2), -ENOENT);
    CHECK(krun_set_kernel_console(c, "ttyS0 quiet"), -EINVAL);
    CHECK(krun_set_kernel_console(c, "ttyS0,115200"), -EINVAL);
    CHECK(krun_set_kernel_console(c, ""), -EINVAL);
    CHECK(krun_set_kernel_console(c, "hvc0"), 0);
    CHECK(krun_add_serial_console_default(c, -1, 1), -EINVAL);
    CHECK(krun_add_virtio_console_multiport(BAD), -ENOENT);
    CHECK(krun_add_console_port_tty(c, 0, "p", -1), -EINVAL);
    CHECK(krun_add_console_port_inout(c, 12345, "p", 0, 1), -ENODEV);
    CHECK(krun_set_root_disk_remount(c, NULL, "ext4", NULL), -EINVAL);
    CHECK(krun_start_enter(BAD), -ENOENT);
    /* This implementation's extension (declared by <libkrun.h> only, see extensions.txt). */
    CHECK(krunrs_start_return(BAD), -ENOENT);
    CHECK(krun_set_gpu_render_server_fd(c, -1), -EINVAL);
    CHECK(krun_set_overlayfs_root(c, NULL), -EINVAL);
    CHECK(krun_set_tsi_scope(c, "not-an-ip", NULL, 1), -EINVAL);
    CHECK(krun_free_ctx(c), 0);
    CHECK(krun_free_ctx(c), -ENOENT);

    refusals(mac);

    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
