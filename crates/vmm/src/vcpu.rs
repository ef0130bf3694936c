//! vCPUs: per-vCPU setup (CPUID, MSRs, registers, LAPIC) and the thread that runs one vCPU,
//! handling its exits until the VM ends or another thread kicks it out of `KVM_RUN`.

use std::cell::Cell;
use std::os::raw::{c_int, c_void};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};
use std::time::Instant;

use kvm_bindings::KVM_SYSTEM_EVENT_SHUTDOWN;
use kvm_bindings::{kvm_sregs, CpuId, Msrs, KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET};
use kvm_ioctls::{VcpuExit, VcpuFd};

use crate::boot::{cpuid, msr, regs};
use crate::device_manager::MmioBus;
use crate::exits::{ExitCounts, ExitKind};
use crate::pio::{PioAction, PortIoBus};

#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    #[error("cannot set CPUID")]
    Cpuid(#[source] kvm_ioctls::Error),
    #[error("cannot add CPUID leaves")]
    CpuidLeaves,
    #[error("cannot build the MSR list")]
    MsrList,
    #[error("cannot set MSRs ({set} of {want} accepted)")]
    Msrs { set: usize, want: usize },
    #[error("cannot set MSRs")]
    MsrsIoctl(#[source] kvm_ioctls::Error),
    #[error("cannot get or set special registers")]
    Sregs(#[source] kvm_ioctls::Error),
    #[error("cannot set registers")]
    Regs(#[source] kvm_ioctls::Error),
    #[error("cannot set the FPU state")]
    Fpu(#[source] kvm_ioctls::Error),
    #[error("cannot get or set the local APIC")]
    Lapic(#[source] kvm_ioctls::Error),
    #[error("KVM_RUN failed")]
    Run(#[source] kvm_ioctls::Error),
    #[error("KVM could not enter the guest (hardware entry failure reason {0:#x})")]
    FailEntry(u64),
    #[error("{0}")]
    InternalError(InternalError),
    #[error("unexpected vCPU exit {0}")]
    UnexpectedExit(String),
    #[error("the vCPU thread panicked")]
    Panicked,
}

/// What KVM reports with `KVM_EXIT_INTERNAL_ERROR` (exit reason 17), and where the guest was.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct InternalError {
    /// `KVM_INTERNAL_ERROR_*`.
    pub suberror: u32,
    /// The `data` words KVM filled in (for suberror 3, delivery of an event, they include
    /// the hardware exit reason).
    pub data: Vec<u64>,
    /// The guest's RIP, if the registers could be read.
    pub rip: Option<u64>,
}

/// `KVM_EXIT_INTERNAL_ERROR`.
const KVM_EXIT_INTERNAL_ERROR: u32 = 17;

impl std::fmt::Display for InternalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self.suberror {
            1 => "emulation failure",
            2 => "simultaneous exceptions",
            3 => "delivery of an event",
            4 => "unexpected exit reason",
            _ => "unknown suberror",
        };
        write!(
            f,
            "KVM internal error: exit reason {KVM_EXIT_INTERNAL_ERROR}, suberror {} ({name}), data [",
            self.suberror
        )?;
        for (i, word) in self.data.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{word:#x}")?;
        }
        write!(f, "], guest RIP ")?;
        match self.rip {
            Some(rip) => write!(f, "{rip:#x}"),
            None => write!(f, "unknown"),
        }
    }
}

/// Reads the details of a `KVM_EXIT_INTERNAL_ERROR` that `fd` just returned.
fn internal_error(fd: &mut VcpuFd) -> InternalError {
    let run = fd.get_kvm_run();
    // SAFETY: after KVM_RUN returned KVM_EXIT_INTERNAL_ERROR, `internal` is the union member
    // KVM filled in; it is plain integers, valid for any bit pattern.
    let info = unsafe { run.__bindgen_anon_1.internal };
    let n = (info.ndata as usize).min(info.data.len());
    InternalError {
        suberror: info.suberror,
        data: info.data[..n].to_vec(),
        rip: fd.get_regs().ok().map(|r| r.rip),
    }
}

/// What the VM-wide boot setup hands each vCPU.
pub struct BootSetup<'a> {
    /// `KVM_GET_SUPPORTED_CPUID`, unpatched.
    pub supported_cpuid: &'a CpuId,
    pub vcpus: u8,
    /// Expose VMX/SVM to the guest (`krun_set_nested_virt`).
    pub nested_virt: bool,
    /// KVM emulates the TSC-deadline timer: advertise it in CPUID.
    pub tsc_deadline: bool,
    pub entry_addr: u64,
    pub cr3: u64,
}

/// Configures vCPU `id` for the 64-bit boot protocol. Only vCPU 0 runs from these registers;
/// the others wait for the guest's INIT/SIPI in the in-kernel LAPIC.
pub fn configure(fd: &VcpuFd, id: u8, boot: &BootSetup<'_>) -> Result<(), VcpuError> {
    let mut cpuid = boot.supported_cpuid.clone();
    cpuid::add_missing_leaves(&mut cpuid).map_err(|_| VcpuError::CpuidLeaves)?;
    let spec = cpuid::CpuidSpec {
        apic_id: id,
        vcpus: boot.vcpus,
        nested_virt: boot.nested_virt,
        tsc_deadline: boot.tsc_deadline,
    };
    cpuid::patch_entries(cpuid.as_mut_slice(), &spec);
    fd.set_cpuid2(&cpuid).map_err(VcpuError::Cpuid)?;

    let entries = msr::boot_msr_entries();
    let msrs = Msrs::from_entries(&entries).map_err(|_| VcpuError::MsrList)?;
    let set = fd.set_msrs(&msrs).map_err(VcpuError::MsrsIoctl)?;
    if set != entries.len() {
        return Err(VcpuError::Msrs {
            set,
            want: entries.len(),
        });
    }

    let sregs: kvm_sregs = fd.get_sregs().map_err(VcpuError::Sregs)?;
    fd.set_sregs(&regs::boot_sregs(sregs, boot.cr3))
        .map_err(VcpuError::Sregs)?;
    fd.set_regs(&regs::boot_regs(boot.entry_addr))
        .map_err(VcpuError::Regs)?;
    fd.set_fpu(&regs::boot_fpu()).map_err(VcpuError::Fpu)?;

    let mut lapic = fd.get_lapic().map_err(VcpuError::Lapic)?;
    regs::wire_lapic_lints(&mut lapic);
    fd.set_lapic(&lapic).map_err(VcpuError::Lapic)?;
    Ok(())
}

/// Why a vCPU thread stopped.
#[derive(Debug)]
pub enum VcpuEnd {
    /// The guest asked for a reset (i8042, `reboot=k`, or `KVM_SYSTEM_EVENT_RESET`).
    Reset,
    /// The guest powered off (`KVM_SYSTEM_EVENT_SHUTDOWN`).
    Shutdown,
    /// Triple fault (`KVM_EXIT_SHUTDOWN`).
    TripleFault,
    /// The guest reported a crash (`KVM_SYSTEM_EVENT_CRASH`).
    Crash,
    /// Another vCPU ended the VM and kicked this one.
    Kicked,
    Failed(VcpuError),
}

/// The signal that kicks a vCPU thread out of `KVM_RUN`.
pub fn kick_signal() -> c_int {
    vmm_sys_util::signal::SIGRTMIN()
}

thread_local! {
    /// This thread's `kvm_run.immediate_exit`, for the kick handler. Null outside a vCPU run.
    static IMMEDIATE_EXIT: Cell<*mut u8> = const { Cell::new(std::ptr::null_mut()) };
}

extern "C" fn kick_handler(_: c_int, _: *mut libc::siginfo_t, _: *mut c_void) {
    let ptr = IMMEDIATE_EXIT.with(Cell::get);
    if !ptr.is_null() {
        // SAFETY: a non-null pointer is this thread's live kvm_run mapping (cleared before the
        // VcpuFd is dropped); a volatile byte store is async-signal-safe. It makes a KVM_RUN
        // entered after the kick return EINTR at once, closing the check-then-run race.
        unsafe { ptr.write_volatile(1) };
    }
}

/// Installs the kick handler once per process.
pub fn install_kick_handler() -> Result<(), vmm_sys_util::errno::Error> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = vmm_sys_util::signal::register_signal_handler(kick_signal(), kick_handler);
    });
    result
}

/// State shared by every vCPU thread.
pub struct Shared {
    pub pio: PortIoBus,
    pub mmio: MmioBus,
    /// Set when the VM ends; vCPUs check it before every `KVM_RUN`.
    pub stop: AtomicBool,
    pub started: Instant,
    pub first_entry: Once,
    /// The exits that reached user space, logged when the VM ends.
    pub exits: ExitCounts,
}

/// One vCPU thread's body: runs until the guest or another vCPU ends the VM.
pub fn run(mut fd: VcpuFd, id: u8, shared: Arc<Shared>) -> VcpuEnd {
    let ptr: *mut u8 = &mut fd.get_kvm_run().immediate_exit;
    IMMEDIATE_EXIT.with(|c| c.set(ptr));
    if let Err(e) = vmm_sys_util::signal::unblock_signal(kick_signal()) {
        log::warn!("vcpu{id}: cannot unblock the kick signal: {e}");
    }
    let end = run_loop(&mut fd, id, &shared);
    IMMEDIATE_EXIT.with(|c| c.set(std::ptr::null_mut()));
    end
}

fn run_loop(fd: &mut VcpuFd, id: u8, shared: &Shared) -> VcpuEnd {
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return VcpuEnd::Kicked;
        }
        if id == 0 {
            shared.first_entry.call_once(|| {
                log::debug!(
                    "first vCPU entry {:?} after Vm::new started",
                    shared.started.elapsed()
                );
            });
        }
        match handle_exit(fd.run(), id, shared) {
            Some(VcpuEnd::Failed(VcpuError::InternalError(_))) => {
                return VcpuEnd::Failed(VcpuError::InternalError(internal_error(fd)))
            }
            Some(VcpuEnd::TripleFault) => {
                log::error!("vcpu{id}: the guest triple-faulted: {}", fault_state(fd));
                return VcpuEnd::TripleFault;
            }
            Some(end) => return end,
            None => {}
        }
    }
}

/// The registers that tell where and why a guest triple-faulted (the guest prints nothing
/// then): where it ran, its stack, page tables and descriptor tables, and the event KVM
/// was delivering.
fn fault_state(fd: &VcpuFd) -> String {
    let mut out = String::new();
    match fd.get_regs() {
        Ok(r) => out.push_str(&format!(
            "rip {:#x} rsp {:#x} rflags {:#x} rax {:#x} rdi {:#x}",
            r.rip, r.rsp, r.rflags, r.rax, r.rdi
        )),
        Err(e) => out.push_str(&format!("regs unreadable ({e})")),
    }
    match fd.get_sregs() {
        Ok(s) => out.push_str(&format!(
            "; cr0 {:#x} cr2 {:#x} cr3 {:#x} cr4 {:#x} efer {:#x} cs {:#x} ss {:#x} \
             idt {:#x}/{:#x} gdt {:#x}/{:#x} tr {:#x}@{:#x}",
            s.cr0,
            s.cr2,
            s.cr3,
            s.cr4,
            s.efer,
            s.cs.selector,
            s.ss.selector,
            s.idt.base,
            s.idt.limit,
            s.gdt.base,
            s.gdt.limit,
            s.tr.selector,
            s.tr.base
        )),
        Err(e) => out.push_str(&format!("; sregs unreadable ({e})")),
    }
    if let Ok(ev) = fd.get_vcpu_events() {
        out.push_str(&format!(
            "; exception injected {} pending {} nr {} error {:#x}; interrupt injected {} nr {}; nmi {}",
            ev.exception.injected,
            ev.exception.pending,
            ev.exception.nr,
            ev.exception.error_code,
            ev.interrupt.injected,
            ev.interrupt.nr,
            ev.nmi.injected
        ));
    }
    out
}

/// Handles one `KVM_RUN` result; Some ends this vCPU.
fn handle_exit(
    exit: Result<VcpuExit<'_>, kvm_ioctls::Error>,
    id: u8,
    shared: &Shared,
) -> Option<VcpuEnd> {
    let exit = match exit {
        Ok(exit) => exit,
        Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
            shared.exits.count(ExitKind::Interrupted);
            return None;
        }
        Err(e) => return Some(VcpuEnd::Failed(VcpuError::Run(e))),
    };
    let exits = &shared.exits;
    match &exit {
        VcpuExit::IoIn(port, _) => exits.count_port(ExitKind::IoIn, *port),
        VcpuExit::IoOut(port, _) => exits.count_port(ExitKind::IoOut, *port),
        VcpuExit::MmioRead(addr, _) => exits.count_mmio(ExitKind::MmioRead, *addr),
        VcpuExit::MmioWrite(addr, _) => exits.count_mmio(ExitKind::MmioWrite, *addr),
        VcpuExit::Intr => exits.count(ExitKind::Interrupted),
        _ => exits.count(ExitKind::Other),
    }
    match exit {
        VcpuExit::IoIn(port, data) => shared.pio.read(port, data),
        VcpuExit::IoOut(port, data) => {
            if shared.pio.write(port, data) == PioAction::Reset {
                log::debug!("vcpu{id}: i8042 reset");
                return Some(VcpuEnd::Reset);
            }
        }
        VcpuExit::MmioRead(addr, data) => shared.mmio.read(addr, data),
        VcpuExit::MmioWrite(addr, data) => shared.mmio.write(addr, data),
        VcpuExit::Shutdown => {
            return Some(VcpuEnd::TripleFault);
        }
        VcpuExit::Hlt => {
            log::debug!("vcpu{id}: halted with interrupts off");
            return Some(VcpuEnd::Shutdown);
        }
        VcpuExit::SystemEvent(kind, _) => {
            log::debug!("vcpu{id}: system event {kind}");
            return Some(match kind {
                KVM_SYSTEM_EVENT_SHUTDOWN => VcpuEnd::Shutdown,
                KVM_SYSTEM_EVENT_RESET => VcpuEnd::Reset,
                KVM_SYSTEM_EVENT_CRASH => VcpuEnd::Crash,
                other => {
                    VcpuEnd::Failed(VcpuError::UnexpectedExit(format!("system event {other}")))
                }
            });
        }
        VcpuExit::FailEntry(reason, _) => {
            return Some(VcpuEnd::Failed(VcpuError::FailEntry(reason)))
        }
        // run_loop fills in the details, which need the vCPU fd this exit borrows.
        VcpuExit::InternalError => {
            return Some(VcpuEnd::Failed(VcpuError::InternalError(
                InternalError::default(),
            )))
        }
        VcpuExit::Intr => {}
        // Split irqchip only, for level-triggered routes; ours are all edges
        // (devices::legacy::ioapic), so no remote IRR waits for this EOI.
        VcpuExit::IoapicEoi(_) => {}
        other => {
            return Some(VcpuEnd::Failed(VcpuError::UnexpectedExit(format!(
                "{other:?}"
            ))))
        }
    }
    None
}

#[cfg(test)]
mod internal_error_tests {
    use super::*;

    #[test]
    fn internal_error_display_names_suberror_reason_and_rip() {
        let e = VcpuError::InternalError(InternalError {
            suberror: 1,
            data: vec![0x10, 0x20],
            rip: Some(0xffff_ffff_8100_0000),
        });
        let text = e.to_string();
        assert!(text.contains("exit reason 17"), "{text}");
        assert!(text.contains("suberror 1 (emulation failure)"), "{text}");
        assert!(text.contains("0x10") && text.contains("0x20"), "{text}");
        assert!(text.ends_with("guest RIP 0xffffffff81000000"), "{text}");
        assert!(!text.contains('\n'), "one log line: {text}");
    }
}
