//! Context lifecycle, machine shape, kernel, `krun_start_enter` and its returning twin
//! `krunrs_start_return` (an extension).

use std::ffi::c_char;
use std::sync::Arc;

use vmm::config::{KernelFile, KernelFormat};
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

/// Boots `kernel_path` instead of libkrunfw's kernel. `kernel_format` on x86_64:
/// `KRUN_KERNEL_FORMAT_RAW` a bzImage, `KRUN_KERNEL_FORMAT_ELF` an ELF vmlinux,
/// `KRUN_KERNEL_FORMAT_IMAGE_GZ` / `KRUN_KERNEL_FORMAT_IMAGE_ZSTD` a gzip / zstd stream of
/// either. `initramfs` (or NULL) is loaded where the boot protocol lets the kernel find it.
/// `cmdline` (or NULL for the default) replaces the base kernel command line, as upstream
/// uses it; the virtio-mmio devices, `init=` and the workload are still appended. The files
/// are read by `krun_start_enter`, which fails with -EINVAL (one line naming the file and
/// the format) when the kernel is not in the declared format, or with the open's errno.
/// Returns 0, -ENOENT for an unknown context, -EINVAL for a NULL or non-UTF-8 string or an
/// unknown format, -ENOTSUP for `PE_GZ` and `IMAGE_BZ2` (not bootable on x86_64).
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
        let path = unsafe { ffi::c_str(kernel_path, "kernel_path") }?;
        // SAFETY: as above.
        let initramfs = unsafe { ffi::opt_c_str(initramfs, "initramfs") }?;
        // SAFETY: as above.
        let cmdline = unsafe { ffi::opt_c_str(cmdline, "cmdline") }?;
        let format = KernelFormat::from_raw(kernel_format)?;
        if !vmm::kernel::format_supported(format) {
            return Err(ApiError::Unsupported(vmm::kernel::format_name(format)));
        }
        let file = KernelFile {
            path: path.into(),
            format,
            initramfs: initramfs.map(Into::into),
            cmdline: cmdline.map(str::to_string),
        };
        ctx::with(ctx_id, |c| c.set_kernel(file)).map(|()| 0)
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

/// Chooses a split IRQ chip (`enable` true): the local APICs stay in KVM, the IOAPIC is the
/// VMM's, and there is no PIC or PIT, as upstream offers on x86_64. The guest's timer is then
/// the local APIC's TSC-deadline timer, and the guest kernel must find the IOAPIC in the MP
/// table, as libkrunfw's does (a kernel built without `CONFIG_X86_MPPARSE`, such as Debian's
/// cloud kernel, then finds no interrupt controller and no timer, and hangs). Returns 0 or
/// -ENOENT for an unknown context; a host whose KVM lacks KVM_CAP_SPLIT_IRQCHIP fails
/// `krun_start_enter` with that ioctl's errno.
#[no_mangle]
pub extern "C" fn krun_split_irqchip(ctx_id: u32, enable: bool) -> i32 {
    guard("krun_split_irqchip", || {
        ctx::with(ctx_id, |c| {
            c.split_irqchip = enable;
            Ok(0)
        })
    })
}

/// Sets the SMBIOS OEM strings (type 11) from a NULL-terminated array: the VM gets SMBIOS
/// 3.0 tables (types 0, 1, 11 and 127) in the BIOS area, where a guest kernel with DMI
/// support finds them (`/sys/firmware/dmi/entries/11-0/raw`, `dmidecode -t 11`), one
/// string per entry, in order (libkrunfw's kernel is built without DMI; kernels given to
/// `krun_set_kernel` usually have it). An empty array writes no tables. Returns 0, -ENOENT for an
/// unknown context, -EINVAL if the array is NULL, holds non-UTF-8 text or an empty string,
/// has more than 255 strings or more than 49152 bytes of strings (each counted with its
/// NUL), -E2BIG if it has no NULL terminator.
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
        vmm::boot::smbios::check_oem_strings(&strings).map_err(|e| ApiError::Invalid {
            what: "oem_strings",
            why: e.to_string(),
        })?;
        ctx::with(ctx_id, |c| {
            c.smbios_oem_strings = strings;
            Ok(0)
        })
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

/// Returns an eventfd that asks the guest to shut down in order: writing any value to it
/// (e.g. `eventfd_write(fd, 1)`) makes the guest init send SIGTERM to the workload, wait
/// 10 seconds, then SIGKILL it; the VM then ends with the workload's exit status, which
/// `krun_start_enter` exits with. The eventfd is created by the first call (later calls
/// return the same fd), so call it after the caller's own fd cleanup and before
/// `krun_start_enter`; the library owns it: do not close it. It needs the built-in init
/// (a root without `krun_disable_implicit_init`). Returns the fd, -ENOENT for an unknown
/// context, or the errno of eventfd(2). (Upstream offers it only on macOS/aarch64.)
#[no_mangle]
pub extern "C" fn krun_get_shutdown_eventfd(ctx_id: u32) -> i32 {
    guard("krun_get_shutdown_eventfd", || {
        ctx::with(ctx_id, |c| Ok(c.shutdown_eventfd()))?.map_err(|source| ApiError::Io {
            what: "cannot create the shutdown eventfd".into(),
            source,
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
        let status = run_ctx("krun_start_enter", ctx_id)?;
        super::log::flush();
        std::process::exit(status)
    })
}

/// Extension of this implementation, not in upstream libkrun (hence the `krunrs_` prefix,
/// which upstream's `krun_` names cannot clash with): runs the context's VM as
/// `krun_start_enter` does, but returns instead of exiting the process. Returns the
/// workload's exit status (0 to 255; 1 when the guest ended without reporting one), or a
/// negative errno: those of `krun_start_enter` when the VM could not be started, -EIO when a
/// device failed while the VM ran (the VM was stopped; the line logged names the device).
/// The context is consumed either way, as `krun_start_enter` consumes it. When it returns,
/// every thread the VM started is joined, every fd it opened is closed and terminal modes
/// are restored, so the caller can go on, or configure and run another VM.
#[no_mangle]
pub extern "C" fn krunrs_start_return(ctx_id: u32) -> i32 {
    guard_loud("krunrs_start_return", || {
        let status = run_ctx("krunrs_start_return", ctx_id)?;
        super::log::flush();
        Ok(status)
    })
}

/// Takes the context, builds its VM through the Rust API (krun_vm) and runs it to the end:
/// the workload's exit status, or why it could not run.
fn run_ctx(func: &str, ctx_id: u32) -> Result<i32, ApiError> {
    let mut config = ctx::take(ctx_id)?;
    if !config.implicit_init_disabled {
        config.init_binary = Some(crate::init::DEFAULT_INIT);
    }
    let vm = krun_vm::Vm::from_config(config)?;
    let report = vm.end_report();
    let status = vm.run()?.code();
    // The VMM logged it; a caller that configured no logging still gets the one line
    // (with the kernel's last words), as a start failure does.
    if let Some(message) = report.as_ref().and_then(|r| r.missing_status()) {
        if !super::log::configured() {
            eprintln!("libkrun: {message}");
        }
    }
    log::info!("{func}: guest exited with status {status}");
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn krunrs_start_return_unknown_context_is_enoent() {
        assert_eq!(krunrs_start_return(u32::MAX - 7), -libc::ENOENT);
    }

    #[test]
    fn krunrs_start_return_start_failure_returns_errno_and_consumes_the_context() {
        let ctx = krun_create_ctx();
        assert!(ctx >= 0);
        let ctx = ctx as u32;
        let path = c"/nonexistent/krunrs-kernel";
        // SAFETY: NUL-terminated literals and NULLs, as krun_set_kernel requires.
        let rc =
            unsafe { krun_set_kernel(ctx, path.as_ptr(), 0, std::ptr::null(), std::ptr::null()) };
        assert_eq!(rc, 0);
        // The kernel file is opened before KVM: the start fails the same way on any host,
        // and the call returns instead of exiting the process.
        assert_eq!(krunrs_start_return(ctx), -libc::ENOENT);
        assert_eq!(
            krun_free_ctx(ctx),
            -libc::ENOENT,
            "the context was consumed"
        );
    }
}
