//! `Vm`: a microVM built from a `VmConfig`, run until the guest ends.
//!
//! [`Vm::new`] does everything that can fail before the guest runs (KVM, RAM, kernel, devices,
//! boot structures, vCPU registers); [`Vm::run`] starts one thread per vCPU, waits for the
//! first one to see the guest end, kicks and joins the others, shuts the devices down and
//! returns the exit status: the one the guest init reported through the root share's
//! exit-code ioctl, else [`NO_EXIT_CODE_STATUS`].

use std::os::unix::thread::JoinHandleExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Once, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::Instant;

use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use vm_memory::GuestAddress;

use crate::boot::{self, BootError};
use crate::cmdline::{self, CmdlineError, CmdlineParams, MmioDeviceArg};
use crate::config::VmConfig;
use crate::device_manager::{DeviceError, DeviceManager};
use crate::irqchip::{IrqChip, IrqChipError};
use crate::krunfw::{Krunfw, KrunfwError};
use crate::layout::{CMDLINE_START, KVM_IDENTITY_MAP_ADDRESS, KVM_TSS_ADDRESS};
use crate::memory::{self, MemoryError};
use crate::pio::PortIoBus;
use crate::process::{self, IdError};
use crate::serial::{SerialDevice, COM1_IRQ};
use crate::stop::{RunEvent, StopHandle};
use crate::vcpu::{self, BootSetup, Shared, VcpuEnd, VcpuError};
use crate::vsock_plan::{self, VsockPlanError};
use contract::EXEC_FILE_NAME;

use crate::workload::{self, CmdlineWorkload, Workload};

/// Extra kernel command line options for debugging (e.g. `earlyprintk=ttyS0 console=ttyS0`);
/// setting it also puts a UART at 0x3f8 whose output is logged at debug level (unless the
/// caller configured a serial console there).
pub const DEBUG_CMDLINE_ENV: &str = "KRUN_DEBUG_CMDLINE";

/// The exit status when the guest ended without reporting one (panic, reboot, power off).
pub const NO_EXIT_CODE_STATUS: i32 = 1;

/// Why a VM could not be built or run.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("a VM needs 1 to {max} vCPUs, got {got}")]
    VcpuCount { got: u8, max: usize },
    #[error("cannot load the guest kernel")]
    Krunfw(#[source] KrunfwError),
    #[error("cannot boot the kernel given by krun_set_kernel")]
    Kernel(#[source] crate::kernel::KernelError),
    #[error("cannot open /dev/kvm")]
    KvmOpen(#[source] kvm_ioctls::Error),
    #[error("cannot create the KVM VM")]
    CreateVm(#[source] kvm_ioctls::Error),
    #[error("cannot set the KVM TSS address")]
    TssAddress(#[source] kvm_ioctls::Error),
    #[error("cannot set the KVM identity map address")]
    IdentityMap(#[source] kvm_ioctls::Error),
    #[error("cannot create the in-kernel interrupt controllers")]
    IrqChip(#[source] kvm_ioctls::Error),
    #[error("cannot create the in-kernel PIT")]
    Pit(#[source] kvm_ioctls::Error),
    #[error("cannot enable the split irqchip (KVM_CAP_SPLIT_IRQCHIP)")]
    SplitIrqChip(#[source] kvm_ioctls::Error),
    #[error("cannot set up guest memory")]
    Memory(#[source] MemoryError),
    #[error("cannot set up a device")]
    Device(#[source] DeviceError),
    #[error("invalid virtual entry for a virtio-fs share")]
    VirtualEntry(#[source] devices::fs::VirtualEntryError),
    #[error("cannot build the kernel command line")]
    Cmdline(#[source] CmdlineError),
    #[error("cannot write the kernel command line into guest memory")]
    LoadCmdline(#[source] linux_loader::loader::Error),
    #[error("cannot write the boot structures")]
    Boot(#[source] BootError),
    #[error("cannot query the CPUID KVM supports")]
    SupportedCpuid(#[source] kvm_ioctls::Error),
    #[error("cannot create vCPU {id}")]
    CreateVcpu {
        id: u8,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("cannot configure vCPU {id}")]
    ConfigureVcpu {
        id: u8,
        #[source]
        source: VcpuError,
    },
    #[error("cannot install the vCPU kick signal handler")]
    KickHandler(#[source] vmm_sys_util::errno::Error),
    #[error("cannot start the thread of vCPU {id}")]
    SpawnVcpu {
        id: u8,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid vsock configuration")]
    Vsock(#[source] VsockPlanError),
    #[error("cannot drop the VMM's privileges")]
    Ids(#[source] IdError),
    #[error("cannot set up the serial console")]
    Serial(#[source] std::io::Error),
    #[error("cannot register the serial console's IRQ")]
    SerialIrq(#[source] kvm_ioctls::Error),
    #[error("vCPU {id} failed")]
    Vcpu {
        id: u8,
        #[source]
        source: VcpuError,
    },
    /// A device's worker failed for good while the VM ran (it panicked); the VM was
    /// stopped and every thread joined.
    #[error("device {device} failed: {reason}")]
    DeviceFailed { device: String, reason: String },
}

/// A built microVM, ready to run.
pub struct Vm {
    /// Configured vCPUs, not yet running; vCPU 0 is the boot CPU.
    vcpus: Vec<VcpuFd>,
    shared: Arc<Shared>,
    /// Closed after the vCPUs and devices (fields drop in order), before the RAM it maps.
    /// Shared with the split irqchip's IOAPIC, which changes KVM's routes as the guest
    /// programs it.
    _vm_fd: Arc<VmFd>,
    /// The DAX windows the VM fd's memory slots point into: unmapped after it is closed.
    _dax: Vec<Arc<crate::dax::DaxRegion>>,
    _kvm: Kvm,
    _mem: devices::GuestMemory,
    _krunfw: Option<Arc<Krunfw>>,
    /// Where the root share records the status the guest init reports.
    exit_code: Option<devices::fs::ExitCode>,
    /// `krun_setuid` / `krun_setgid`, applied in `run` before the guest starts.
    uid: Option<u32>,
    gid: Option<u32>,
    /// Host terminals the consoles put in raw mode: restored when the VM ends (or when a
    /// `Vm` that never ran is dropped).
    raw_modes: Vec<crate::terminal::RawMode>,
    /// The consoles' signal handlers (SIGINT forwarding, SIGWINCH): the process's own come
    /// back when the VM ends.
    signals: Vec<crate::terminal::SignalHandlers>,
    /// The last lines of guest console output that went to the log, shown when the guest
    /// ends without reporting a status.
    console_tails: Vec<devices::console::ConsoleTail>,
    /// Stop requests from other threads ([`Vm::stop_handle`]).
    stop: StopHandle,
    /// How the run ended, as the vCPU that ended it saw it (for [`GuestEndReport`]).
    ended: Arc<OnceLock<String>>,
}

/// How a run ended ([`Vm::run_to_end`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunEnd {
    /// The status the guest init reported through the root share, if it did.
    pub reported: Option<i32>,
    /// A [`StopHandle`] ended the run (before the guest reported a status, or not).
    pub stop_requested: bool,
}

impl RunEnd {
    /// The status `krun_start_enter` exits with: the reported one, else
    /// [`NO_EXIT_CODE_STATUS`].
    pub fn status(&self) -> i32 {
        self.reported.unwrap_or(NO_EXIT_CODE_STATUS)
    }
}

/// How the workload reaches init: command line words, or (when the kernel cannot carry it
/// unchanged, or it would not fit next to the devices' `mmio` entries) the virtual
/// `/.krun_exec.json`. Decided once every device exists, so the command line it is tried
/// against is the real one.
fn plan_workload(
    config: &VmConfig,
    mmio: &[MmioDeviceArg],
    flags: &[&str],
    extra: Option<&str>,
) -> (Option<CmdlineWorkload>, Option<Vec<u8>>) {
    if config.root_share().is_none() {
        return (None, None);
    }
    let words = match workload::plan(&config.exec) {
        Workload::Cmdline(words) => words,
        Workload::ExecJson(json) => {
            log::debug!("workload passed in /{EXEC_FILE_NAME}: the kernel cannot carry it");
            return (None, Some(json));
        }
    };
    let trial = cmdline::build(&CmdlineParams {
        console: config.console.kernel_console.as_deref(),
        base: kernel_cmdline(config),
        extra,
        flags,
        mmio_devices: mmio,
        workload: Some(&words),
    });
    match trial {
        Ok(_) => (Some(words), None),
        Err(e) => {
            log::debug!("workload passed in /{EXEC_FILE_NAME}: {e}");
            let env = workload::resolve_env(&config.exec);
            (None, Some(workload::exec_json(&config.exec, &env)))
        }
    }
}

/// `krun_set_kernel`'s command line, which replaces the base options (None: ours).
fn kernel_cmdline(config: &VmConfig) -> Option<&str> {
    config.kernel.as_ref().and_then(|k| k.cmdline.as_deref())
}

/// Whether the caller put its own `init.krun` on the root share (as upstream's augmentfs
/// example does after `krun_disable_implicit_init`): then the embedded one stays out of it.
fn overlays_init(config: &VmConfig) -> bool {
    config
        .fs_overlays
        .iter()
        .any(|o| o.tag == crate::config::ROOT_FS_TAG && o.path == contract::INIT_FILE_NAME)
}

/// The `krun_fs_add_overlay_*` entries of `share`, in the order they were added.
fn add_overlays(
    config: &VmConfig,
    share: &crate::config::FsShare,
    entries: &devices::fs::VirtualEntries,
) -> Result<(), VmError> {
    use crate::config::FsOverlayKind;
    use devices::fs::VirtualEntry;
    for overlay in config.fs_overlays.iter().filter(|o| o.tag == share.tag) {
        let entry = match &overlay.kind {
            FsOverlayKind::Dir => VirtualEntry::dir(overlay.path.clone(), overlay.mode),
            FsOverlayKind::File { data, one_shot } => VirtualEntry {
                one_shot: *one_shot,
                ..VirtualEntry::file(overlay.path.clone(), data.clone(), overlay.mode)
            },
        };
        entries.add(entry).map_err(VmError::VirtualEntry)?;
    }
    Ok(())
}

fn create_kvm_vm(vcpus: u8, split_irqchip: bool) -> Result<(Kvm, Arc<VmFd>, IrqChip), VmError> {
    let kvm = Kvm::new().map_err(VmError::KvmOpen)?;
    let max = crate::host::vcpu_limit(&kvm) as usize;
    if vcpus == 0 || usize::from(vcpus) > max {
        return Err(VmError::VcpuCount { got: vcpus, max });
    }
    let vm = kvm.create_vm().map_err(VmError::CreateVm)?;
    vm.set_identity_map_address(KVM_IDENTITY_MAP_ADDRESS)
        .map_err(VmError::IdentityMap)?;
    vm.set_tss_address(KVM_TSS_ADDRESS as usize)
        .map_err(VmError::TssAddress)?;
    let irqchip = IrqChip::create(&vm, split_irqchip).map_err(|e| match e {
        IrqChipError::InKernel(e) => VmError::IrqChip(e),
        IrqChipError::Pit(e) => VmError::Pit(e),
        IrqChipError::Split(e) => VmError::SplitIrqChip(e),
    })?;
    Ok((kvm, Arc::new(vm), irqchip))
}

/// The COM1 UART: the first `krun_add_serial_console_default` (later ones are ignored
/// with a warning: only ttyS0 exists), else the debug UART under `KRUN_DEBUG_CMDLINE`.
/// A kernel without the 8250 driver (`kernel_has_8250` Some(false)) cannot use it: one warning
/// says so (None: a kernel from a file, whose compressed image cannot be searched).
fn create_serial(
    devices: &mut DeviceManager<'_>,
    config: &VmConfig,
    kernel_has_8250: Option<bool>,
    debug: bool,
) -> Result<Option<SerialDevice>, VmError> {
    let serials = &config.console.serial_consoles;
    if serials.len() > 1 {
        log::warn!(
            "{} serial consoles configured; only the first (ttyS0 at 0x3f8) is created, the rest are ignored",
            serials.len()
        );
    }
    let device = match serials.first() {
        Some(s) => SerialDevice::with_fds(s.input_fd, s.output_fd),
        None if debug => SerialDevice::debug_log(),
        None => return Ok(None),
    }
    .map_err(VmError::Serial)?;
    if kernel_has_8250 == Some(false) {
        let why = "the guest kernel has no 8250 UART driver (libkrunfw's x86_64 kernel is built \
                   without CONFIG_SERIAL_8250): the UART at 0x3f8 is there but the guest has no \
                   ttyS0, so nothing reaches or leaves the serial console's fds";
        if serials.is_empty() {
            log::debug!("debug serial: {why}");
        } else {
            log::warn!("serial console: {why}");
        }
    }
    devices
        .connect_irq(device.irq_evt(), COM1_IRQ)
        .map_err(VmError::SerialIrq)?;
    Ok(Some(device))
}

/// What a vCPU's end means, in words for the log.
fn describe_end(end: &VcpuEnd) -> String {
    match end {
        VcpuEnd::Reset => "a CPU reset request through the i8042 or KVM (how Linux reboots, and \
                           with panic=-1 what it does right after a kernel panic)"
            .into(),
        VcpuEnd::Shutdown => "a power-off (or a halt with interrupts off)".into(),
        VcpuEnd::TripleFault => "a triple fault".into(),
        VcpuEnd::Crash => "a crash the guest reported".into(),
        VcpuEnd::Kicked => "a stop from another thread".into(),
        VcpuEnd::Failed(e) => format!("a failure: {e}"),
    }
}

/// The CMOS RTC, its memory-size bytes matching the RAM layout of `ram_mib`.
fn cmos_for(ram_mib: u32) -> devices::legacy::Cmos {
    let (mut below, mut above) = (0, 0);
    for (start, size) in crate::layout::ram_ranges(u64::from(ram_mib) << 20) {
        if start < crate::layout::FIRST_ADDR_PAST_32BITS {
            below += size;
        } else {
            above += size;
        }
    }
    devices::legacy::Cmos::new(below, above, devices::legacy::SystemClock)
}

/// How the guest ended, readable after [`Vm::run`] consumed the VM: whether init reported
/// a status, and the last console lines that went to the log.
#[derive(Clone)]
pub struct GuestEndReport {
    exit_code: Option<devices::fs::ExitCode>,
    console_tails: Vec<devices::console::ConsoleTail>,
    /// What the vCPU that ended the run saw (None before the run ended): shared with the
    /// VM, so a report taken before the run says it once the run is over.
    ended: Arc<OnceLock<String>>,
}

impl GuestEndReport {
    /// When the guest ended without the status init reports (a kernel panic, an init that
    /// died, a guest reboot), a message saying so with the console's last lines, which went
    /// to the log at info level and are otherwise easy to miss. None once a status was
    /// reported, or when nothing could report one (no root share).
    pub fn missing_status(&self) -> Option<String> {
        let exit_code = self.exit_code.as_ref()?;
        if exit_code.get().is_some() {
            return None;
        }
        let lines: Vec<String> = self.console_tails.iter().flat_map(|t| t.lines()).collect();
        let mut message = format!(
            "the guest ended without reporting an exit status (status {NO_EXIT_CODE_STATUS})"
        );
        if let Some(ended) = self.ended.get() {
            message.push_str(": ");
            message.push_str(ended);
        }
        if !lines.is_empty() {
            message.push_str("; its console's last lines:\n  ");
            message.push_str(&lines.join("\n  "));
        }
        Some(message)
    }
}

impl Vm {
    /// How the guest ended; read it after [`Vm::run`] returned.
    pub fn end_report(&self) -> GuestEndReport {
        GuestEndReport {
            exit_code: self.exit_code.clone(),
            console_tails: self.console_tails.clone(),
            ended: self.ended.clone(),
        }
    }

    /// Builds the VM: KVM, guest memory, kernel, devices, vCPUs (not yet running).
    pub fn new(mut config: VmConfig) -> Result<Vm, VmError> {
        let started = Instant::now();
        process::raise_nofile_limit();
        crate::settings::account(&config)?;
        // A disk root boots on an initial NullFs root share (crate::block_root).
        let block_root = crate::block_root::requested(&config);
        let block_root_words = match &block_root {
            Some(root) => crate::block_root::prepare(&mut config, root),
            None => Vec::new(),
        };
        // The kernel goes into RAM before KVM is opened: a missing libkrunfw or a kernel file
        // that is not in its declared format fails first, on any host.
        let mem = memory::create_guest_memory(config.ram_mib).map_err(VmError::Memory)?;
        let wants_serial = !config.console.serial_consoles.is_empty()
            || std::env::var_os(DEBUG_CMDLINE_ENV).is_some();
        let (boot_kernel, krunfw) = crate::kernel::load_guest_kernel(&config, &mem, wants_serial)?;
        let (kvm, vm_fd, irqchip) = create_kvm_vm(config.vcpus, config.split_irqchip)?;
        memory::register_with_kvm(&vm_fd, &mem).map_err(VmError::Memory)?;

        let dax_start = crate::layout::dax_windows_start(u64::from(config.ram_mib) << 20);
        // Made now: the devices report a fatal failure through it (StopHandle::fault_sink).
        let stop = StopHandle::new();
        let mut devices =
            DeviceManager::new(&vm_fd, irqchip, mem.clone(), dax_start, stop.fault_sink());
        if !config.console.implicit_disabled {
            devices
                .add_console(&config.console)
                .map_err(VmError::Device)?;
        }
        for console in &config.console.virtio_consoles {
            devices
                .add_explicit_console(console)
                .map_err(VmError::Device)?;
        }

        // Disks next, in the order they were added: the guest names them vda, vdb, ...
        for disk in &config.disks {
            devices.add_block(disk).map_err(VmError::Device)?;
        }
        if let Some(evt) = &config.shutdown_eventfd {
            devices.add_shutdown_port(evt).map_err(VmError::Device)?;
        }
        // Every VM has a virtio-balloon (free page reporting), as upstream attaches one,
        // right before the rng as upstream orders them.
        devices.add_balloon().map_err(VmError::Device)?;
        // Every VM has a virtio-rng, as upstream attaches one.
        devices.add_rng().map_err(VmError::Device)?;

        let vsock = vsock_plan::plan(&config).map_err(VmError::Vsock)?;
        let mut flags: Vec<&str> = vsock
            .as_ref()
            .map(|v| vsock_plan::cmdline_flags(v.tsi_features))
            .unwrap_or_default();
        flags.extend(block_root_words.iter().map(String::as_str));
        // The interfaces init brings up (and configures by DHCP): KRUN_NET=.
        let net_word = crate::nics::cmdline_word(&config.nets);
        flags.extend(net_word.as_deref());
        // The TSI interface's address (krun_set_tsi_scope's IP): KRUN_TSI_IP=.
        let tsi_ip_word = vsock.as_ref().and_then(vsock_plan::tsi_ip_word);
        flags.extend(tsi_ip_word.as_deref());
        let debug_cmdline = std::env::var(DEBUG_CMDLINE_ENV).ok();
        // The root share's virtual entries: init now, the exec file once the workload's
        // route is known (after every device, hence every command line entry, exists).
        let root_entries = devices::fs::VirtualEntries::new();
        let exit_code = match config.root_share() {
            Some(root) => {
                if let Some(init) = config.init_binary.filter(|_| !overlays_init(&config)) {
                    root_entries
                        .add(devices::fs::VirtualEntry::init(init))
                        .map_err(VmError::VirtualEntry)?;
                }
                if block_root.is_some() {
                    for entry in crate::block_root::mount_points() {
                        root_entries.add(entry).map_err(VmError::VirtualEntry)?;
                    }
                }
                add_overlays(&config, root, &root_entries)?;
                let exit_code = devices::fs::ExitCode::new();
                devices
                    .add_fs(root, root_entries.clone(), Some(exit_code.clone()))
                    .map_err(VmError::Device)?;
                Some(exit_code)
            }
            None => None,
        };
        for share in config
            .fs_shares
            .iter()
            .filter(|s| s.tag != crate::config::ROOT_FS_TAG)
        {
            let entries = devices::fs::VirtualEntries::new();
            add_overlays(&config, share, &entries)?;
            devices
                .add_fs(share, entries, None)
                .map_err(VmError::Device)?;
        }
        if let Some(vsock) = vsock {
            devices.add_vsock(vsock).map_err(VmError::Device)?;
        }
        for (index, nic) in config.nets.iter().enumerate() {
            devices.add_net(index, nic).map_err(VmError::Device)?;
        }

        let (cmdline_workload, exec_json) = plan_workload(
            &config,
            devices.cmdline_args(),
            &flags,
            debug_cmdline.as_deref(),
        );
        if let Some(json) = exec_json {
            root_entries
                .add(devices::fs::VirtualEntry::file(EXEC_FILE_NAME, json, 0o444).unlisted())
                .map_err(VmError::VirtualEntry)?;
        }

        let cmdline = cmdline::build(&CmdlineParams {
            console: config.console.kernel_console.as_deref(),
            base: kernel_cmdline(&config),
            extra: debug_cmdline.as_deref(),
            flags: &flags,
            mmio_devices: devices.cmdline_args(),
            workload: cmdline_workload.as_ref(),
        })
        .map_err(VmError::Cmdline)?;
        linux_loader::loader::load_cmdline(&mem, GuestAddress(CMDLINE_START), &cmdline)
            .map_err(VmError::LoadCmdline)?;
        let cmdline_size = cmdline
            .as_cstring()
            .map(|c| c.as_bytes_with_nul().len())
            .map_err(|source| {
                VmError::Cmdline(CmdlineError::Invalid {
                    what: String::new(),
                    source,
                })
            })?;
        log::debug!("kernel command line: {:?}", cmdline.as_cstring().ok());
        let cr3 = boot::write_boot_structures(
            &mem,
            config.vcpus,
            cmdline_size,
            &boot_kernel,
            &config.smbios_oem_strings,
        )
        .map_err(VmError::Boot)?;

        let supported_cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(VmError::SupportedCpuid)?;
        if config.nested_virt && !boot::cpuid::offers_virtualization(supported_cpuid.as_slice()) {
            log::warn!(
                "nested virtualization ignored: the host's KVM does not allow it (the \
                 kvm_amd/kvm_intel module's nested parameter is off), the guest sees no SVM/VMX"
            );
        }
        let setup = BootSetup {
            supported_cpuid: &supported_cpuid,
            vcpus: config.vcpus,
            nested_virt: config.nested_virt,
            tsc_deadline: kvm.check_extension(kvm_ioctls::Cap::TscDeadlineTimer),
            entry_addr: boot_kernel.entry_addr,
            cr3,
        };
        let mut vcpus = Vec::with_capacity(usize::from(config.vcpus));
        for id in 0..config.vcpus {
            let fd = vm_fd
                .create_vcpu(u64::from(id))
                .map_err(|source| VmError::CreateVcpu { id, source })?;
            vcpu::configure(&fd, id, &setup)
                .map_err(|source| VmError::ConfigureVcpu { id, source })?;
            vcpus.push(fd);
        }
        vcpu::install_kick_handler().map_err(VmError::KickHandler)?;

        let crate::consoles::HostTerminal {
            raw_modes,
            signals,
            console_tails,
        } = devices.take_host_terminal();
        let dax = devices.take_dax_regions();
        let serial = create_serial(
            &mut devices,
            &config,
            boot_kernel.has_8250,
            debug_cmdline.is_some(),
        )?;
        let shared = Arc::new(Shared {
            pio: PortIoBus::new(serial).with_cmos(cmos_for(config.ram_mib)),
            mmio: devices.into_bus(vm_fd.clone()),
            stop: AtomicBool::new(false),
            started,
            first_entry: Once::new(),
            exits: Default::default(),
        });
        log::debug!(
            "VM built in {:?}: {} vCPUs, {} MiB, kernel entry at {:#x}",
            started.elapsed(),
            config.vcpus,
            config.ram_mib,
            boot_kernel.entry_addr
        );
        Ok(Vm {
            vcpus,
            shared,
            _vm_fd: vm_fd,
            _dax: dax,
            _kvm: kvm,
            _mem: mem,
            _krunfw: krunfw,
            exit_code,
            uid: config.vmm_uid,
            gid: config.vmm_gid,
            raw_modes,
            signals,
            stop,
            console_tails,
            ended: Arc::default(),
        })
    }

    /// A handle that stops this VM from another thread, before or while it runs.
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// Runs the guest until it ends; returns its exit status after every thread is joined.
    pub fn run(self) -> Result<i32, VmError> {
        self.run_to_end().map(|end| end.status())
    }

    /// Runs the guest until it ends or a [`StopHandle`] stops it; returns how it ended after
    /// every thread is joined and the devices are shut down.
    pub fn run_to_end(mut self) -> Result<RunEnd, VmError> {
        // Everything that needs privileges (/dev/kvm, the shared directories, the console's
        // files) is open; the guest has not run yet.
        process::switch_ids(self.uid, self.gid).map_err(VmError::Ids)?;
        let (tx, rx) = mpsc::channel::<RunEvent>();
        let mut handles: Vec<JoinHandle<()>> = Vec::new();
        let mut spawn_error = None;
        for (id, fd) in std::mem::take(&mut self.vcpus).into_iter().enumerate() {
            let id = id as u8;
            let shared = self.shared.clone();
            let tx = tx.clone();
            let spawned = thread::Builder::new()
                .name(format!("vcpu{id}"))
                .spawn(move || {
                    let end = catch_unwind(AssertUnwindSafe(|| vcpu::run(fd, id, shared)))
                        .unwrap_or(VcpuEnd::Failed(VcpuError::Panicked));
                    let _ = tx.send(RunEvent::Vcpu(id, end));
                });
            match spawned {
                Ok(h) => handles.push(h),
                Err(source) => {
                    spawn_error = Some(VmError::SpawnVcpu { id, source });
                    break;
                }
            }
        }
        self.stop.attach(tx);
        let first = match spawn_error {
            None => rx.recv().ok(),
            Some(_) => None,
        };
        // The handle drops its sender: the channel closes once the vCPU threads are joined.
        self.stop.detach();
        self.stop_vcpus(&handles);
        for h in handles {
            // A panic was already caught inside the thread; join cannot fail otherwise.
            let _ = h.join();
        }
        for event in rx.try_iter() {
            if let RunEvent::Vcpu(id, VcpuEnd::Failed(e)) = event {
                log::warn!("vCPU {id} also failed while the VM ended: {e}");
            }
        }
        self.shared.mmio.shutdown();
        self.shared.pio.shutdown();
        for raw in &mut self.raw_modes {
            raw.restore();
        }
        self.signals.clear();
        log::debug!(
            "{} ({:?} after Vm::new started)",
            self.shared.exits.summary(),
            self.shared.started.elapsed()
        );
        if let Some(e) = spawn_error {
            return Err(e);
        }
        // A device that failed (during the run or while it drained at shutdown) makes the
        // run fail: whatever status the guest reported may not have reached the host whole.
        if let Some(fault) = self.stop.take_fault() {
            return Err(VmError::DeviceFailed {
                device: fault.device,
                reason: fault.reason,
            });
        }
        let reported = self.exit_code.as_ref().and_then(|c| c.get());
        let stop_requested = matches!(first, Some(RunEvent::StopRequested));
        if let Some(RunEvent::Vcpu(id, end)) = &first {
            let _ = self
                .ended
                .set(format!("vCPU {id} saw {}", describe_end(end)));
        }
        // A stopped VM has no status on purpose: nothing to report.
        if !stop_requested {
            if let Some(message) = self.end_report().missing_status() {
                log::error!("{message}");
            }
        }
        match first {
            Some(RunEvent::Vcpu(id, VcpuEnd::Failed(source))) => Err(VmError::Vcpu { id, source }),
            Some(RunEvent::Vcpu(id, end)) => {
                log::debug!("vCPU {id} ended the VM: {end:?}; reported status {reported:?}");
                Ok(RunEnd {
                    reported,
                    stop_requested,
                })
            }
            // Unreachable: a failure was recorded before it was sent, and taken above.
            Some(RunEvent::DeviceFailed) | Some(RunEvent::StopRequested) => {
                log::debug!("stopped on request; reported status {reported:?}");
                Ok(RunEnd {
                    reported,
                    stop_requested,
                })
            }
            None => Ok(RunEnd {
                reported,
                stop_requested,
            }),
        }
    }

    /// Tells every vCPU to stop and kicks it out of `KVM_RUN`.
    fn stop_vcpus(&self, handles: &[JoinHandle<()>]) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for h in handles {
            // SAFETY: the thread is not joined yet, so its pthread_t is valid; the kick
            // signal has a handler installed (install_kick_handler) that only sets a flag.
            let rc = unsafe { libc::pthread_kill(h.as_pthread_t(), vcpu::kick_signal()) };
            if rc != 0 && rc != libc::ESRCH {
                log::warn!("cannot kick a vCPU thread: errno {rc}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{mmio_slot_base, mmio_slot_irq};

    /// A workload that fits the command line alone but not next to a full set of devices.
    fn config_with_long_args() -> VmConfig {
        let mut config = VmConfig::default();
        config.set_root_dir("/r".into()).unwrap();
        config.exec.path = Some("/bin/sh".into());
        config.exec.env = Some(Vec::new());
        // ~1.4 KiB of arguments: the command line holds them beside one device (36 bytes
        // each) but not beside every slot the IOAPIC has.
        config.exec.args = (0..22)
            .map(|i| format!("{i:02}{}", "a".repeat(60)))
            .collect();
        config
    }

    /// The first `count` slots (fewer when the IOAPIC has fewer pins).
    fn slots(count: u32) -> Vec<MmioDeviceArg> {
        (0..count)
            .map_while(|i| {
                Some(MmioDeviceArg {
                    base: mmio_slot_base(i),
                    irq: mmio_slot_irq(i)?,
                })
            })
            .collect()
    }

    #[test]
    fn plan_workload_counts_the_devices_that_exist() {
        let config = config_with_long_args();

        let (alone, alone_json) = plan_workload(&config, &slots(1), &[], None);
        let (crowded, crowded_json) = plan_workload(&config, &slots(u32::MAX), &[], None);

        assert!(alone.is_some() && alone_json.is_none());
        assert!(crowded.is_none());
        let json = String::from_utf8(crowded_json.unwrap()).unwrap();
        assert!(json.contains(&config.exec.args[21]), "{json}");
    }

    #[test]
    fn plan_workload_without_root_share_passes_nothing() {
        let mut config = config_with_long_args();
        config.fs_shares.clear();

        assert_eq!(plan_workload(&config, &slots(1), &[], None), (None, None));
    }
}
