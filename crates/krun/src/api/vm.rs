//! Context lifecycle, machine shape, kernel, and `krun_start_enter`.

use std::ffi::c_char;
use std::sync::Arc;

use vmm::config::KernelFormat;
use vmm::krunfw::Krunfw;

use crate::ctx::{self, Ctx};
use crate::ffi::{self, guard, guard_loud, ApiError};

/// Creates a configuration context and returns its id (>= 0). Ids are never reused within
/// a process. The context starts with 1 vCPU and 512 MiB of RAM. This also loads
/// libkrunfw.so.5 now, while the caller can still see it (crun chroots before starting the
/// VM); if it cannot be loaded, `krun_start_enter` tries again and reports why. Starts no
/// threads. Returns -ENOSPC once ids are exhausted.
#[no_mangle]
pub extern "C" fn krun_create_ctx() -> i32 {
    guard("krun_create_ctx", || {
        let mut ctx = Ctx::default();
        match Krunfw::open() {
            Ok(fw) => ctx.config.krunfw = Some(Arc::new(fw)),
            Err(e) => log::debug!("krun_create_ctx: libkrunfw not loaded yet: {e}"),
        }
        let id = ctx::create(ctx)?;
        Ok(id as i32)
    })
}

/// Frees a context and everything configured in it. Returns 0, or -ENOENT if `ctx_id` is
/// unknown or already freed (or consumed by `krun_start_enter`).
#[no_mangle]
pub extern "C" fn krun_free_ctx(ctx_id: u32) -> i32 {
    guard("krun_free_ctx", || ctx::free(ctx_id).map(|()| 0))
}

/// Sets the number of vCPUs (1 up to `krun_get_max_vcpus()`, at most 254) and the guest RAM
/// in MiB (enough to hold libkrunfw's kernel). Returns 0, -ENOENT for an unknown context,
/// -EINVAL for an out-of-range value.
#[no_mangle]
pub extern "C" fn krun_set_vm_config(ctx_id: u32, num_vcpus: u8, ram_mib: u32) -> i32 {
    guard("krun_set_vm_config", || {
        let max = vmm::host::max_vcpus().unwrap_or(vmm::host::VMM_MAX_VCPUS);
        ctx::with(ctx_id, |c| c.set_vm_config(num_vcpus, ram_mib, max)).map(|()| 0)
    })
}

/// Would boot `kernel_path` (a `KRUN_KERNEL_FORMAT_*` image) instead of libkrunfw's kernel,
/// with an optional `initramfs` and kernel command line `cmdline`. Not supported by this
/// build yet (only libkrunfw's kernel boots): returns -ENOENT for an unknown context,
/// -EINVAL for a NULL or non-UTF-8 string or an unknown format, else -ENOTSUP.
///
/// # Safety
/// Each string is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn krun_set_kernel(
    ctx_id: u32,
    kernel_path: *const c_char,
    kernel_format: u32,
    initramfs: *const c_char,
    cmdline: *const c_char,
) -> i32 {
    guard("krun_set_kernel", || {
        ctx::check(ctx_id)?;
        // SAFETY: NULL or NUL-terminated per this function's contract (all three).
        unsafe { ffi::c_str(kernel_path, "kernel_path") }?;
        // SAFETY: as above.
        unsafe { ffi::opt_c_str(initramfs, "initramfs") }?;
        // SAFETY: as above.
        unsafe { ffi::opt_c_str(cmdline, "cmdline") }?;
        KernelFormat::from_raw(kernel_format)?;
        Err(ApiError::Unsupported(
            "an external kernel (only libkrunfw's kernel boots)",
        ))
    })
}

/// Exposes (`enabled` true) or hides hardware virtualization to the guest, so it can run
/// its own VMs; see `krun_check_nested_virt`. Returns 0 or -ENOENT for an unknown context.
#[no_mangle]
pub extern "C" fn krun_set_nested_virt(ctx_id: u32, enabled: bool) -> i32 {
    guard("krun_set_nested_virt", || {
        ctx::with(ctx_id, |c| {
            c.nested_virt = enabled;
            Ok(0)
        })
    })
}

/// Asks for a split IRQ chip (local APICs in KVM, IOAPIC and PIC in the VMM). This build
/// keeps the whole irqchip in KVM, which guests work with: `enable` true is ignored with a
/// warning. Returns 0 or -ENOENT for an unknown context.
#[no_mangle]
pub extern "C" fn krun_split_irqchip(ctx_id: u32, enable: bool) -> i32 {
    guard("krun_split_irqchip", || {
        ctx::with(ctx_id, |c| {
            c.split_irqchip = enable;
            Ok(())
        })?;
        if enable {
            ffi::ignored(
                "krun_split_irqchip",
                "split irqchip",
                "the IOAPIC and PIC stay in KVM; guests work the same",
            );
        }
        Ok(0)
    })
}

/// Takes SMBIOS OEM strings (type 11) from a NULL-terminated array. This build writes no
/// SMBIOS tables (upstream ignores them on x86_64 too): non-empty strings are ignored with a
/// warning. Returns 0, -ENOENT for an unknown context, -EINVAL if the array is NULL or holds
/// non-UTF-8 text, -E2BIG if it has no NULL terminator.
///
/// # Safety
/// `oem_strings` is NULL or a NULL-terminated array of NUL-terminated strings.
#[no_mangle]
pub unsafe extern "C" fn krun_set_smbios_oem_strings(
    ctx_id: u32,
    oem_strings: *const *const c_char,
) -> i32 {
    guard("krun_set_smbios_oem_strings", || {
        ctx::check(ctx_id)?;
        // SAFETY: NULL or a NULL-terminated array per this function's contract.
        let strings = unsafe { ffi::c_str_array(oem_strings, "oem_strings") }?;
        let count = strings.len();
        ctx::with(ctx_id, |c| {
            c.smbios_oem_strings = strings;
            Ok(())
        })?;
        if count != 0 {
            ffi::ignored(
                "krun_set_smbios_oem_strings",
                &format!("{count} SMBIOS OEM string(s)"),
                "this VMM writes no SMBIOS tables, as upstream on x86_64",
            );
        }
        Ok(0)
    })
}

/// Stops serving the built-in `/init.krun` in the root share; the root must then provide
/// its own init (see `krun_get_default_init`). Returns 0 or -ENOENT for an unknown context.
#[no_mangle]
pub extern "C" fn krun_disable_implicit_init(ctx_id: u32) -> i32 {
    guard("krun_disable_implicit_init", || {
        ctx::with(ctx_id, |c| {
            c.implicit_init_disabled = true;
            Ok(0)
        })
    })
}

/// Upstream offers an eventfd that shuts the VM down only on macOS; this Linux build has
/// none. Returns -ENOENT for an unknown context, else -EINVAL (as upstream on Linux).
#[no_mangle]
pub extern "C" fn krun_get_shutdown_eventfd(ctx_id: u32) -> i32 {
    guard("krun_get_shutdown_eventfd", || {
        ctx::check(ctx_id)?;
        Err(ApiError::Invalid {
            what: "shutdown eventfd",
            why: "not provided on Linux; stop the VM by signalling this process".into(),
        })
    })
}

/// Builds the VM from the context and runs it in this process. The context is consumed.
/// When the guest's workload ends, the process exits with the workload's exit status, so
/// this call does not return. It returns a negative errno only if the VM could not be
/// started: -ENOENT for an unknown context, or the errno of the step that failed (logged
/// with its cause). Without a root filesystem the guest kernel panics and the process exits
/// with status 1. The cause of a failure is logged as one error line, on stderr even when
/// logging was never configured.
#[no_mangle]
pub extern "C" fn krun_start_enter(ctx_id: u32) -> i32 {
    guard_loud("krun_start_enter", || {
        let mut config = ctx::take(ctx_id)?;
        if !config.implicit_init_disabled {
            config.init_binary = Some(crate::init::DEFAULT_INIT);
        }
        let vm = vmm::Vm::new(config)?;
        let status = vm.run()?;
        log::info!("krun_start_enter: guest exited with status {status}");
        super::log::flush();
        std::process::exit(status)
    })
}
