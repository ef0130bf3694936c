//! The context table: `krun_create_ctx` ids mapped to the `VmConfig` the C calls fill.
//!
//! Ids come from an atomic counter and are never reused in a process, so a stale id held
//! by a caller can never reach another caller's context. A poisoned lock is recovered:
//! every update is a single validated setter call, so the map is consistent even if a
//! panic (caught by the FFI guard) happened while it was held.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{LazyLock, Mutex, MutexGuard, PoisonError};

use vmm::config::ConfigError;
use vmm::VmConfig;

use crate::ffi::ApiError;

/// One context: the configuration being built for a future `krun_start_enter`.
#[derive(Debug, Default)]
pub struct Ctx {
    pub config: VmConfig,
}

static TABLE: LazyLock<Mutex<HashMap<u32, Ctx>>> = LazyLock::new(|| Mutex::new(HashMap::new()));
static NEXT_ID: AtomicU32 = AtomicU32::new(0);

fn table() -> MutexGuard<'static, HashMap<u32, Ctx>> {
    TABLE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Adds a context and returns its id (0..=i32::MAX, as the C API returns it in an int32).
pub fn create(ctx: Ctx) -> Result<u32, ApiError> {
    let id = NEXT_ID
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |id| {
            (id <= i32::MAX as u32).then_some(id + 1)
        })
        .map_err(|_| ApiError::IdsExhausted)?;
    table().insert(id, ctx);
    Ok(id)
}

/// Removes a context, dropping its configuration.
pub fn free(id: u32) -> Result<(), ApiError> {
    table().remove(&id).map(drop).ok_or(ApiError::NoContext(id))
}

/// Removes a context and hands its configuration over (`krun_start_enter`).
pub fn take(id: u32) -> Result<VmConfig, ApiError> {
    table()
        .remove(&id)
        .map(|c| c.config)
        .ok_or(ApiError::NoContext(id))
}

/// Runs `f` on a context's configuration under the table lock.
pub fn with<R>(
    id: u32,
    f: impl FnOnce(&mut VmConfig) -> Result<R, ConfigError>,
) -> Result<R, ApiError> {
    let mut table = table();
    let ctx = table.get_mut(&id).ok_or(ApiError::NoContext(id))?;
    Ok(f(&mut ctx.config)?)
}

/// Fails with -ENOENT unless the context exists (for calls that only validate).
pub fn check(id: u32) -> Result<(), ApiError> {
    with(id, |_| Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn table_concurrent_create_free_unique_ids() {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                std::thread::spawn(|| {
                    let mut ids = Vec::new();
                    for _ in 0..200 {
                        let id = create(Ctx::default()).unwrap();
                        with(id, |c| c.set_vm_config(2, 256, 16)).unwrap();
                        ids.push(id);
                        if id & 1 == 0 {
                            free(id).unwrap();
                        }
                    }
                    ids
                })
            })
            .collect();
        let ids: Vec<u32> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        let unique: HashSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), 8 * 200);
        for id in ids {
            if id & 1 == 0 {
                assert_eq!(free(id).unwrap_err().errno(), libc::ENOENT);
                assert_eq!(check(id).unwrap_err().errno(), libc::ENOENT);
            } else {
                assert_eq!(with(id, |c| Ok(c.vcpus)).unwrap(), 2);
                free(id).unwrap();
            }
        }
    }

    #[test]
    fn table_freed_id_not_reused() {
        let a = create(Ctx::default()).unwrap();
        free(a).unwrap();
        let b = create(Ctx::default()).unwrap();
        assert_ne!(a, b);
        assert!(matches!(take(a), Err(ApiError::NoContext(_))));
        take(b).unwrap();
        assert!(matches!(take(b), Err(ApiError::NoContext(_))));
    }

    #[test]
    fn table_poisoned_lock_recovered() {
        let id = create(Ctx::default()).unwrap();
        let r = std::panic::catch_unwind(|| {
            let _g = table();
            panic!("poison");
        });
        assert!(r.is_err());
        check(id).unwrap();
        free(id).unwrap();
    }
}
