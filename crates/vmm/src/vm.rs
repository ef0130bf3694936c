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
use std::sync::{mpsc, Arc, Once};
use std::thread::{self, JoinHandle};
use std::time::Instant;

use kvm_bindings::{kvm_pit_config, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use vm_memory::GuestAddress;

use crate::boot::{self, BootError};
use crate::cmdline::{self, CmdlineError, CmdlineParams, MmioDeviceArg};
use crate::config::VmConfig;
use crate::device_manager::{DeviceError, DeviceManager};
use crate::krunfw::{Krunfw, KrunfwError};
use crate::layout::{
    mmio_slot_base, mmio_slot_irq, CMDLINE_START, KVM_IDENTITY_MAP_ADDRESS, KVM_TSS_ADDRESS,
};
use crate::memory::{self, MemoryError};
use crate::pio::PortIoBus;
use crate::process::{self, IdError};
use crate::serial::{SerialDevice, COM1_IRQ};
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
    #[error("{0} is not supported by this VMM yet")]
    Unsupported(&'static str),
    #[error("cannot load the guest kernel")]
    Krunfw(#[source] KrunfwError),
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
    #[error("cannot set up guest memory")]
    Memory(#[source] MemoryError),
    #[error("cannot set up a device")]
    Device(#[source] DeviceError),
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
}

/// A built microVM, ready to run.
pub struct Vm {
    /// Configured vCPUs, not yet running; vCPU 0 is the boot CPU.
    vcpus: Vec<VcpuFd>,
    shared: Arc<Shared>,
    /// Closed after the vCPUs and devices (fields drop in order), before the RAM it maps.
    _vm_fd: VmFd,
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
}

/// How the workload reaches init: command line words, or (when the kernel cannot carry it
/// unchanged, or it would not fit) the virtual `/.krun_exec.json`. `slots` is the number of
/// virtio-mmio devices the VM will have; their command line entries count against the limit.
fn plan_workload(
    config: &VmConfig,
    slots: u32,
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
    let mmio: Vec<MmioDeviceArg> = (0..slots)
        .filter_map(|i| {
            Some(MmioDeviceArg {
                base: mmio_slot_base(i),
                irq: mmio_slot_irq(i)?,
            })
        })
        .collect();
    let trial = cmdline::build(&CmdlineParams {
        console: config.console.kernel_console.as_deref(),
        extra,
        flags,
        mmio_devices: &mmio,
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

fn create_kvm_vm(vcpus: u8) -> Result<(Kvm, VmFd), VmError> {
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
    vm.create_irq_chip().map_err(VmError::IrqChip)?;
    let pit = kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    };
    vm.create_pit2(pit).map_err(VmError::Pit)?;
    Ok((kvm, vm))
}

/// The COM1 UART: the first `krun_add_serial_console_default` (later ones are ignored
/// with a warning: only ttyS0 exists), else the debug UART under `KRUN_DEBUG_CMDLINE`.
/// A `kernel` without the 8250 driver cannot use it: one warning says so.
fn create_serial(
    vm_fd: &VmFd,
    config: &VmConfig,
    kernel: &[u8],
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
    if !crate::serial::kernel_has_driver(kernel) {
        let why = "the guest kernel has no 8250 UART driver (libkrunfw's x86_64 kernel is built \
                   without CONFIG_SERIAL_8250): the UART at 0x3f8 is there but the guest has no \
                   ttyS0, so nothing reaches or leaves the serial console's fds";
        if serials.is_empty() {
            log::debug!("debug serial: {why}");
        } else {
            log::warn!("serial console: {why}");
        }
    }
    vm_fd
        .register_irqfd(device.irq_evt(), COM1_IRQ)
        .map_err(VmError::SerialIrq)?;
    Ok(Some(device))
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

impl Vm {
    /// Builds the VM: KVM, guest memory, kernel, devices, vCPUs (not yet running).
    pub fn new(config: VmConfig) -> Result<Vm, VmError> {
        let started = Instant::now();
        process::raise_nofile_limit();
        crate::settings::account(&config)?;
        let krunfw = match &config.krunfw {
            Some(k) => k.clone(),
            None => Arc::new(Krunfw::open().map_err(VmError::Krunfw)?),
        };
        let (kvm, vm_fd) = create_kvm_vm(config.vcpus)?;

        let mem = memory::create_guest_memory(config.ram_mib).map_err(VmError::Memory)?;
        memory::register_with_kvm(&vm_fd, &mem).map_err(VmError::Memory)?;
        let kernel = krunfw.kernel();
        memory::load_kernel(&mem, kernel.bytes, kernel.load_addr).map_err(VmError::Memory)?;

        let mut devices = DeviceManager::new(&vm_fd, mem.clone());
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

        let vsock = vsock_plan::plan(&config).map_err(VmError::Vsock)?;
        let flags = vsock
            .as_ref()
            .map(|v| vsock_plan::cmdline_flags(v.tsi_features))
            .unwrap_or_default();
        let debug_cmdline = std::env::var(DEBUG_CMDLINE_ENV).ok();
        let slots =
            devices.cmdline_args().len() + config.fs_shares.len() + usize::from(vsock.is_some());
        let (cmdline_workload, exec_json) =
            plan_workload(&config, slots as u32, &flags, debug_cmdline.as_deref());
        let exit_code = match config.root_share() {
            Some(root) => {
                let mut files = Vec::new();
                if let Some(init) = config.init_binary {
                    files.push(devices::fs::VirtualFile::init(init));
                }
                if let Some(json) = exec_json {
                    files.push(devices::fs::VirtualFile {
                        name: EXEC_FILE_NAME.to_string(),
                        bytes: json.into(),
                        mode: 0o444,
                    });
                }
                let exit_code = devices::fs::ExitCode::new();
                devices
                    .add_fs(root, files, Some(exit_code.clone()))
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
            devices
                .add_fs(share, Vec::new(), None)
                .map_err(VmError::Device)?;
        }
        if let Some(vsock) = vsock {
            devices.add_vsock(vsock).map_err(VmError::Device)?;
        }

        let cmdline = cmdline::build(&CmdlineParams {
            console: config.console.kernel_console.as_deref(),
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
        let cr3 =
            boot::write_boot_structures(&mem, config.vcpus, cmdline_size).map_err(VmError::Boot)?;

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
            entry_addr: kernel.entry_addr,
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

        let raw_modes = devices.take_raw_modes();
        let serial = create_serial(&vm_fd, &config, kernel.bytes, debug_cmdline.is_some())?;
        let shared = Arc::new(Shared {
            pio: PortIoBus::new(serial).with_cmos(cmos_for(config.ram_mib)),
            mmio: devices.into_bus(),
            stop: AtomicBool::new(false),
            started,
            first_entry: Once::new(),
            exits: Default::default(),
        });
        log::debug!(
            "VM built in {:?}: {} vCPUs, {} MiB, kernel {} bytes at {:#x}",
            started.elapsed(),
            config.vcpus,
            config.ram_mib,
            kernel.bytes.len(),
            kernel.load_addr
        );
        Ok(Vm {
            vcpus,
            shared,
            _vm_fd: vm_fd,
            _kvm: kvm,
            _mem: mem,
            _krunfw: Some(krunfw),
            exit_code,
            uid: config.vmm_uid,
            gid: config.vmm_gid,
            raw_modes,
        })
    }

    /// Runs the guest until it ends; returns its exit status after every thread is joined.
    pub fn run(mut self) -> Result<i32, VmError> {
        // Everything that needs privileges (/dev/kvm, the shared directories, the console's
        // files) is open; the guest has not run yet.
        process::switch_ids(self.uid, self.gid).map_err(VmError::Ids)?;
        let (tx, rx) = mpsc::channel::<(u8, VcpuEnd)>();
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
                    let _ = tx.send((id, end));
                });
            match spawned {
                Ok(h) => handles.push(h),
                Err(source) => {
                    spawn_error = Some(VmError::SpawnVcpu { id, source });
                    break;
                }
            }
        }
        drop(tx);
        let first = match spawn_error {
            None => rx.recv().ok(),
            Some(_) => None,
        };
        self.stop_vcpus(&handles);
        for h in handles {
            // A panic was already caught inside the thread; join cannot fail otherwise.
            let _ = h.join();
        }
        for (id, end) in rx.try_iter() {
            if let VcpuEnd::Failed(e) = end {
                log::warn!("vCPU {id} also failed while the VM ended: {e}");
            }
        }
        self.shared.mmio.shutdown();
        self.shared.pio.shutdown();
        for raw in &mut self.raw_modes {
            raw.restore();
        }
        log::debug!(
            "{} ({:?} after Vm::new started)",
            self.shared.exits.summary(),
            self.shared.started.elapsed()
        );
        if let Some(e) = spawn_error {
            return Err(e);
        }
        let reported = self.exit_code.as_ref().and_then(|c| c.get());
        match first {
            Some((id, VcpuEnd::Failed(source))) => Err(VmError::Vcpu { id, source }),
            Some((id, end)) => {
                log::debug!("vCPU {id} ended the VM: {end:?}; reported status {reported:?}");
                Ok(reported.unwrap_or(NO_EXIT_CODE_STATUS))
            }
            None => Ok(reported.unwrap_or(NO_EXIT_CODE_STATUS)),
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
