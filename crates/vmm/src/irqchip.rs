//! The VM's interrupt controllers, in one of two modes:
//! - in-kernel (the default): KVM's PIC, IOAPIC and PIT; a device's irqfd goes on its GSI;
//! - split (`krun_split_irqchip`): the local APICs in KVM, the IOAPIC in user space
//!   (`devices::legacy::ioapic`), no PIC and no PIT, as upstream libkrun offers on x86_64.
//!   Device irqfds are registered on their pin's GSI, whose MSI route follows the guest's
//!   redirection table entry, so interrupts still reach the guest without leaving the kernel.
//!
//! Without the PIT the guest's tick is the local APIC's TSC-deadline timer, which KVM always
//! emulates; a PC without a PIC is what Linux finds (its probe reads the mask back wrong and
//! it says "Using NULL legacy PIC").

use std::io;
use std::sync::{Arc, Mutex};

use devices::legacy::ioapic::{IoApic, IrqRouting, MsiMessage, PINS};
use kvm_bindings::{
    kvm_enable_cap, kvm_irq_routing_entry, kvm_irq_routing_entry__bindgen_ty_1,
    kvm_irq_routing_msi, kvm_pit_config, KvmIrqRouting, KVM_CAP_SPLIT_IRQCHIP, KVM_IRQ_ROUTING_MSI,
    KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::VmFd;
use vmm_sys_util::eventfd::EventFd;

/// The user-space IOAPIC of a split irqchip, as the MMIO bus holds it.
pub type SplitIoApic = Mutex<IoApic<KvmRouting>>;

#[derive(Debug, thiserror::Error)]
pub enum IrqChipError {
    #[error("cannot create the in-kernel interrupt controllers")]
    InKernel(#[source] kvm_ioctls::Error),
    #[error("cannot create the in-kernel PIT")]
    Pit(#[source] kvm_ioctls::Error),
    #[error("cannot enable the split irqchip (KVM_CAP_SPLIT_IRQCHIP with {PINS} IOAPIC pins)")]
    Split(#[source] kvm_ioctls::Error),
}

/// The interrupt controllers of one VM, and the sources connected to them so far.
pub enum IrqChip {
    InKernel,
    /// The irqfds by pin, handed to the IOAPIC's routing once every device exists.
    Split {
        sources: Vec<(u32, EventFd)>,
    },
}

impl IrqChip {
    /// Creates the controllers; before any vCPU exists, as KVM requires.
    pub fn create(vm: &VmFd, split: bool) -> Result<IrqChip, IrqChipError> {
        if split {
            let cap = kvm_enable_cap {
                cap: KVM_CAP_SPLIT_IRQCHIP,
                args: [PINS as u64, 0, 0, 0],
                ..Default::default()
            };
            vm.enable_cap(&cap).map_err(IrqChipError::Split)?;
            log::debug!(
                "split irqchip: local APICs in KVM, the IOAPIC in user space, no PIC or PIT"
            );
            return Ok(IrqChip::Split {
                sources: Vec::new(),
            });
        }
        vm.create_irq_chip().map_err(IrqChipError::InKernel)?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        vm.create_pit2(pit).map_err(IrqChipError::Pit)?;
        Ok(IrqChip::InKernel)
    }

    /// Connects `evt` to IOAPIC pin `pin`: an irqfd now (in-kernel), or once the guest
    /// unmasks the pin (split).
    pub fn connect(&mut self, vm: &VmFd, evt: &EventFd, pin: u32) -> Result<(), kvm_ioctls::Error> {
        match self {
            IrqChip::InKernel => vm.register_irqfd(evt, pin),
            IrqChip::Split { sources } => {
                let evt = evt
                    .try_clone()
                    .map_err(|e| kvm_ioctls::Error::new(e.raw_os_error().unwrap_or(libc::EIO)))?;
                sources.push((pin, evt));
                Ok(())
            }
        }
    }

    /// The user-space IOAPIC (split mode), owning the connected sources.
    pub fn into_ioapic(self, vm: Arc<VmFd>) -> Option<SplitIoApic> {
        match self {
            IrqChip::InKernel => None,
            IrqChip::Split { sources } => Some(Mutex::new(IoApic::new(KvmRouting { vm, sources }))),
        }
    }
}

/// KVM's side of the split IOAPIC: the GSI routing table and the pins' irqfds.
pub struct KvmRouting {
    vm: Arc<VmFd>,
    sources: Vec<(u32, EventFd)>,
}

fn msi_entry(gsi: u32, msi: MsiMessage) -> kvm_irq_routing_entry {
    kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_MSI,
        u: kvm_irq_routing_entry__bindgen_ty_1 {
            msi: kvm_irq_routing_msi {
                address_lo: msi.address as u32,
                address_hi: (msi.address >> 32) as u32,
                data: msi.data,
                ..Default::default()
            },
        },
        ..Default::default()
    }
}

impl IrqRouting for KvmRouting {
    fn set_routes(&mut self, routes: &[(u32, MsiMessage)]) -> io::Result<()> {
        let entries: Vec<kvm_irq_routing_entry> = routes
            .iter()
            .map(|&(gsi, msi)| msi_entry(gsi, msi))
            .collect();
        let table = KvmIrqRouting::from_entries(&entries)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{e:?}")))?;
        self.vm.set_gsi_routing(&table).map_err(io::Error::from)
    }

    fn connect_pin(&mut self, pin: u32, connected: bool) -> io::Result<()> {
        for (_, evt) in self.sources.iter().filter(|(p, _)| *p == pin) {
            // KVM injects at once when the eventfd already counts a signal (one that came
            // while the pin was masked), and stops reading it on unregister.
            let result = if connected {
                self.vm.register_irqfd(evt, pin)
            } else {
                self.vm.unregister_irqfd(evt, pin)
            };
            result.map_err(io::Error::from)?;
        }
        Ok(())
    }
}
