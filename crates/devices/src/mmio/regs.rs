//! Register offsets and values of the virtio-mmio transport (virtio 1.2, section 4.2.2).

/// "virt" in little endian; the driver checks it before anything else.
pub const MAGIC_VALUE: u32 = 0x7472_6976;
/// Version 2 is the virtio 1.x (non-legacy) register layout; legacy (1) is not offered.
pub const VERSION: u32 = 2;
/// Vendor id reported to the driver; Linux does not interpret it.
pub const VENDOR_ID: u32 = 0;

// Register offsets from the base of the device's MMIO region.
pub const MAGIC_VALUE_OFFSET: u64 = 0x000;
pub const VERSION_OFFSET: u64 = 0x004;
pub const DEVICE_ID_OFFSET: u64 = 0x008;
pub const VENDOR_ID_OFFSET: u64 = 0x00c;
pub const DEVICE_FEATURES: u64 = 0x010;
pub const DEVICE_FEATURES_SEL: u64 = 0x014;
pub const DRIVER_FEATURES: u64 = 0x020;
pub const DRIVER_FEATURES_SEL: u64 = 0x024;
pub const QUEUE_SEL: u64 = 0x030;
pub const QUEUE_NUM_MAX: u64 = 0x034;
pub const QUEUE_NUM: u64 = 0x038;
pub const QUEUE_READY: u64 = 0x044;
pub const QUEUE_NOTIFY: u64 = 0x050;
pub const INTERRUPT_STATUS: u64 = 0x060;
pub const INTERRUPT_ACK: u64 = 0x064;
pub const STATUS: u64 = 0x070;
pub const QUEUE_DESC_LOW: u64 = 0x080;
pub const QUEUE_DESC_HIGH: u64 = 0x084;
pub const QUEUE_DRIVER_LOW: u64 = 0x090;
pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
pub const SHM_SEL: u64 = 0x0ac;
pub const SHM_LEN_LOW: u64 = 0x0b0;
pub const SHM_LEN_HIGH: u64 = 0x0b4;
pub const SHM_BASE_LOW: u64 = 0x0b8;
pub const SHM_BASE_HIGH: u64 = 0x0bc;
pub const CONFIG_GENERATION: u64 = 0x0fc;
/// Device-specific configuration space starts here and runs to the end of the region.
pub const CONFIG_SPACE: u64 = 0x100;

/// Device status bits (virtio 1.2, section 2.1).
pub mod status {
    pub const ACKNOWLEDGE: u32 = 0x01;
    pub const DRIVER: u32 = 0x02;
    pub const DRIVER_OK: u32 = 0x04;
    pub const FEATURES_OK: u32 = 0x08;
    pub const DEVICE_NEEDS_RESET: u32 = 0x40;
    pub const FAILED: u32 = 0x80;
}

/// InterruptStatus bits (virtio 1.2, section 4.2.2).
pub mod interrupt {
    /// The device used a buffer in at least one queue.
    pub const USED_BUFFER: u32 = 0x1;
    /// The device configuration changed.
    pub const CONFIG_CHANGE: u32 = 0x2;
}
