/* Logging: krun_init_log targets, levels, styles and options. */
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

/* virtio-fs tag of the root share. */
#define KRUN_FS_ROOT_TAG "/dev/root"

/* Disk image formats for krun_add_disk2/3. */
#define KRUN_DISK_FORMAT_RAW 0
#define KRUN_DISK_FORMAT_QCOW2 1
#define KRUN_DISK_FORMAT_VMDK 2

/* Flush handling for krun_add_disk3. */
#define KRUN_SYNC_NONE 0
#define KRUN_SYNC_RELAXED 1
#define KRUN_SYNC_FULL 2

/* Flags for krun_add_net_*. */
#define NET_FLAG_VFKIT (1 << 0)
#define NET_FLAG_DHCP_CLIENT (1 << 1)

/* TSI features for krun_add_vsock. */
#define KRUN_TSI_HIJACK_INET (1 << 0)
#define KRUN_TSI_HIJACK_UNIX (1 << 1)

/* virtio-net feature bits for krun_add_net_*. */
#define NET_FEATURE_CSUM 1 << 0
#define NET_FEATURE_GUEST_CSUM 1 << 1
#define NET_FEATURE_GUEST_TSO4 1 << 7
#define NET_FEATURE_GUEST_TSO6 1 << 8
#define NET_FEATURE_GUEST_UFO 1 << 10
#define NET_FEATURE_HOST_TSO4 1 << 11
#define NET_FEATURE_HOST_TSO6 1 << 12
#define NET_FEATURE_HOST_UFO 1 << 14

/* Features of the legacy passt/gvproxy interface. */
#define COMPAT_NET_FEATURES NET_FEATURE_CSUM | NET_FEATURE_GUEST_CSUM | \
                            NET_FEATURE_GUEST_TSO4 | NET_FEATURE_GUEST_UFO | \
                            NET_FEATURE_HOST_TSO4 | NET_FEATURE_HOST_UFO

/* virglrenderer flags for krun_set_gpu_options (GPU is not supported by this build). */
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

/* Display limit (displays are not supported by this build). */
#define KRUN_MAX_DISPLAYS 16

/* virtio device types for krun_add_vhost_user_device (not supported by this build). */
#define KRUN_VIRTIO_DEVICE_CONSOLE 3
#define KRUN_VIRTIO_DEVICE_RNG 4
#define KRUN_VIRTIO_DEVICE_RTC 17
#define KRUN_VIRTIO_DEVICE_INPUT 18
#define KRUN_VIRTIO_DEVICE_VSOCK 19
#define KRUN_VIRTIO_DEVICE_SND 25
#define KRUN_VIRTIO_DEVICE_CAN 36

/* Queue layouts of vhost-user devices. */
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

/* Kernel image formats for krun_set_kernel. */
#define KRUN_KERNEL_FORMAT_RAW 0
#define KRUN_KERNEL_FORMAT_ELF 1
#define KRUN_KERNEL_FORMAT_PE_GZ 2
#define KRUN_KERNEL_FORMAT_IMAGE_BZ2 3
#define KRUN_KERNEL_FORMAT_IMAGE_GZ 4
#define KRUN_KERNEL_FORMAT_IMAGE_ZSTD 5

/* Features for krun_has_feature. */
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
