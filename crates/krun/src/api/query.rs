//! Questions about this build and this host: features, vCPU limit, nested virtualization,
//! the embedded init.

use vmm::host;

use crate::ffi::{self, guard, ApiError};
use crate::init::DEFAULT_INIT;

/// `KRUN_FEATURE_*` values.
pub const KRUN_FEATURE_NET: u64 = 0;
pub const KRUN_FEATURE_BLK: u64 = 1;
pub const KRUN_FEATURE_GPU: u64 = 2;
pub const KRUN_FEATURE_INPUT: u64 = 4;
pub const KRUN_FEATURE_TEE: u64 = 6;
pub const KRUN_FEATURE_AMD_SEV: u64 = 7;
pub const KRUN_FEATURE_INTEL_TDX: u64 = 8;
pub const KRUN_FEATURE_AWS_NITRO: u64 = 9;
pub const KRUN_FEATURE_VIRGL_RESOURCE_MAP2: u64 = 10;
pub const KRUN_FEATURE_INIT_BLOB: u64 = 11;

/// Whether this build really implements `feature`; None for a value we do not know.
/// Update as devices land: a feature is reported only once a VM can use it.
pub fn feature_supported(feature: u64) -> Option<bool> {
    match feature {
        KRUN_FEATURE_NET => Some(true),
        KRUN_FEATURE_BLK => Some(true),
        KRUN_FEATURE_GPU
        | KRUN_FEATURE_INPUT
        | KRUN_FEATURE_TEE
        | KRUN_FEATURE_AMD_SEV
        | KRUN_FEATURE_INTEL_TDX
        | KRUN_FEATURE_AWS_NITRO
        | KRUN_FEATURE_VIRGL_RESOURCE_MAP2 => Some(false),
        KRUN_FEATURE_INIT_BLOB => Some(true),
        _ => None,
    }
}

/// Tells whether this build supports a `KRUN_FEATURE_*` feature. Returns 1 if it does, 0 if
/// it does not, -EINVAL for an unknown feature value.
#[no_mangle]
pub extern "C" fn krun_has_feature(feature: u64) -> i32 {
    guard("krun_has_feature", || match feature_supported(feature) {
        Some(s) => Ok(i32::from(s)),
        None => Err(ApiError::Invalid {
            what: "feature",
            why: format!("{feature} is not a KRUN_FEATURE_* value"),
        }),
    })
}

/// Returns the most vCPUs one VM may have on this host (KVM's KVM_CAP_MAX_VCPUS), or the
/// negative errno of opening /dev/kvm (e.g. -ENOENT without KVM, -EACCES without access).
#[no_mangle]
pub extern "C" fn krun_get_max_vcpus() -> i32 {
    guard("krun_get_max_vcpus", || {
        let max = host::max_vcpus()?;
        Ok(i32::try_from(max).unwrap_or(i32::MAX))
    })
}

/// Returns 1 if the host's KVM allows nested virtualization (the kvm_intel or kvm_amd
/// module's `nested` parameter is on), else 0. See `krun_set_nested_virt`.
#[no_mangle]
pub extern "C" fn krun_check_nested_virt() -> i32 {
    guard("krun_check_nested_virt", || {
        Ok(i32::from(host::nested_virt_supported()))
    })
}

/// Hands out the init binary built into this library (what the guest runs as
/// `/init.krun`), e.g. to place it in a root that is served with implicit init disabled.
/// On success `*data_out` points to `*len_out` bytes that stay valid while the library is
/// loaded, and 0 is returned; -EINVAL if either pointer is NULL.
///
/// # Safety
/// Each pointer is NULL or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn krun_get_default_init(
    data_out: *mut *const u8,
    len_out: *mut usize,
) -> i32 {
    guard("krun_get_default_init", || {
        ffi::non_null(data_out, "data_out")?;
        ffi::non_null(len_out, "len_out")?;
        // SAFETY: both pointers are non-NULL and writable per this function's contract.
        unsafe { ffi::write_out(data_out, DEFAULT_INIT.as_ptr(), "data_out") }?;
        // SAFETY: as above.
        unsafe { ffi::write_out(len_out, DEFAULT_INIT.len(), "len_out") }?;
        Ok(0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn has_feature_unknown_fails_einval() {
        assert_eq!(krun_has_feature(3), -libc::EINVAL);
        assert_eq!(krun_has_feature(12), -libc::EINVAL);
        assert_eq!(krun_has_feature(KRUN_FEATURE_GPU), 0);
        assert_eq!(krun_has_feature(KRUN_FEATURE_INIT_BLOB), 1);
    }

    #[test]
    fn get_default_init_returns_blob() {
        let mut p: *const u8 = std::ptr::null();
        let mut len = 0usize;
        // SAFETY: both out-pointers are live locals.
        assert_eq!(unsafe { krun_get_default_init(&mut p, &mut len) }, 0);
        assert_eq!(len, DEFAULT_INIT.len());
        assert_eq!(p, DEFAULT_INIT.as_ptr());
        // SAFETY: a NULL data_out is checked before any write; len_out is a live local.
        let ret = unsafe { krun_get_default_init(std::ptr::null_mut(), &mut len) };
        assert_eq!(ret, -libc::EINVAL);
    }
}
