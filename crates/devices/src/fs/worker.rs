//! The fs queue work: FUSE requests from descriptor chains, run on the shared worker.
//!
//! One thread per device serves both queues (hiprio and the request queue) in arrival order:
//! a request blocks the thread while the host syscall runs, which is what upstream libkrun
//! does as well and keeps the passthrough's per-thread credential switching simple.

use std::fmt::Write as _;
use std::io;
use std::sync::Arc;

use fuse_backend_rs::abi::fuse_abi::InHeader;
use fuse_backend_rs::api::server::Server;
use fuse_backend_rs::transport::{FsCacheReqHandler, Reader, VirtioFsWriter, Writer};
use nix::sched::CloneFlags;
use virtio_queue::{DescriptorChain, Queue, QueueT};

use super::backend::ShareFs;
use super::dax::{DaxRequests, DaxWindow};
use crate::virtio::{Interrupt, QueueHandler, Registry};
use crate::GuestMemory;

/// The device's queue work, run on the shared [`crate::virtio::Worker`] thread.
pub(crate) struct FsHandler {
    /// Log prefix, `fs(<tag>)`.
    id: String,
    mem: GuestMemory,
    queues: Vec<Queue>,
    interrupt: Arc<dyn Interrupt>,
    fs: Arc<ShareFs>,
    /// One server for the device's activation: it keeps the protocol version FUSE_INIT
    /// negotiated, which later replies depend on.
    server: Server<Arc<ShareFs>>,
    /// Requests served and their lengths, per opcode, logged at debug when the worker ends.
    stats: RequestStats,
    /// SETUPMAPPING/REMOVEMAPPING go here when the share has a DAX window.
    dax: Option<DaxRequests>,
}

/// Opcodes below this are counted one by one; larger ones (CUSE_INIT, junk) share the last
/// slot, so a guest cannot grow the table.
const STAT_SLOTS: usize = 64;

/// Per-opcode request counts and total request bytes (header included), for finding out
/// what a workload costs (sizes and opcodes the guest kernel sends).
struct RequestStats {
    count: [u64; STAT_SLOTS],
    bytes: [u64; STAT_SLOTS],
}

impl RequestStats {
    fn new() -> Self {
        Self {
            count: [0; STAT_SLOTS],
            bytes: [0; STAT_SLOTS],
        }
    }

    fn record(&mut self, opcode: u32, len: u32) {
        let slot = usize::try_from(opcode).map_or(STAT_SLOTS - 1, |o| o.min(STAT_SLOTS - 1));
        self.count[slot] = self.count[slot].saturating_add(1);
        self.bytes[slot] = self.bytes[slot].saturating_add(u64::from(len));
    }

    fn log(&self, id: &str) {
        if !log::log_enabled!(log::Level::Debug) {
            return;
        }
        let mut line = String::new();
        for (opcode, (&count, &bytes)) in self.count.iter().zip(&self.bytes).enumerate() {
            if count != 0 {
                let _ = write!(line, " op{opcode}:{count}/{bytes}B");
            }
        }
        log::debug!("{id}: requests served (opcode:count/bytes):{line}");
    }
}

impl FsHandler {
    pub fn new(
        id: String,
        mem: GuestMemory,
        queues: Vec<Queue>,
        interrupt: Arc<dyn Interrupt>,
        fs: ShareFs,
    ) -> Self {
        let fs = Arc::new(fs);
        let server = Server::new(Arc::clone(&fs));
        Self {
            id,
            mem,
            queues,
            interrupt,
            fs,
            server,
            stats: RequestStats::new(),
            dax: None,
        }
    }

    /// Serves mapping requests into `window` (none: they fail with EINVAL).
    pub fn with_dax(mut self, window: Option<Arc<dyn DaxWindow>>) -> Self {
        self.dax = window.map(|w| DaxRequests::new(self.id.clone(), w));
        self
    }

    /// Serves every available chain of queue `index`, then interrupts the guest once if it
    /// asked to be notified.
    fn process_queue(&mut self, index: usize) {
        let Some(queue) = self.queues.get_mut(index) else {
            return;
        };
        let mut used_any = false;
        while let Some(chain) = queue.pop_descriptor_chain(&self.mem) {
            let head = chain.head_index();
            let len = serve_chain(
                &self.id,
                &self.fs,
                &self.server,
                &self.mem,
                chain,
                &mut self.stats,
                self.dax.as_mut(),
            );
            // A head past the table (the guest's mistake) cannot be returned; the chains
            // behind it still are, rather than waiting for the next notification.
            match queue.add_used(&self.mem, head, len) {
                Ok(()) => used_any = true,
                Err(e) => log::debug!("{}: cannot return descriptor {head}: {e}", self.id),
            }
        }
        if !used_any {
            return;
        }
        #[allow(clippy::cast_possible_truncation)] // at most two queues
        let queue_index = index as u16;
        crate::virtio::signal_used(
            queue,
            &self.mem,
            self.interrupt.as_ref(),
            queue_index,
            &self.id,
        );
    }
}

impl QueueHandler for FsHandler {
    fn start(&mut self, _registry: &Registry) -> io::Result<()> {
        // The passthrough sets the umask to 0 when it opens the share (at FUSE_INIT, on this
        // thread) so that the guest's modes reach the host unchanged. Unsharing the fs
        // attributes keeps that umask change away from the rest of the VMM process.
        if let Err(e) = nix::sched::unshare(CloneFlags::CLONE_FS) {
            log::warn!(
                "{}: unshare(CLONE_FS) failed ({e}); the process umask will be cleared",
                self.id
            );
        }
        // Serve what the guest queued before the worker started.
        for index in 0..self.queues.len() {
            self.process_queue(index);
        }
        Ok(())
    }

    fn queue_notified(&mut self, index: usize, _registry: &Registry) {
        self.process_queue(index);
    }

    fn stop(&mut self) {
        // Finish what the guest already queued before exiting.
        for index in 0..self.queues.len() {
            self.process_queue(index);
        }
        self.stats.log(&self.id);
    }
}

/// Runs one FUSE request and returns how many bytes of reply it wrote. A malformed chain is
/// returned to the guest with nothing written (guest-triggerable, so logged at debug).
fn serve_chain(
    id: &str,
    fs: &ShareFs,
    server: &Server<Arc<ShareFs>>,
    mem: &GuestMemory,
    chain: DescriptorChain<&GuestMemory>,
    stats: &mut RequestStats,
    dax: Option<&mut DaxRequests>,
) -> u32 {
    let reader = match Reader::from_descriptor_chain(mem, chain.clone()) {
        Ok(reader) => reader,
        Err(e) => {
            log::debug!("{id}: bad request descriptors: {e}");
            return 0;
        }
    };
    let writer = match VirtioFsWriter::new(mem, chain) {
        Ok(writer) => Writer::from(writer),
        Err(e) => {
            log::debug!("{id}: bad reply descriptors: {e}");
            return 0;
        }
    };
    if let Ok(header) = reader.clone().read_obj::<InHeader>() {
        log::trace!(
            "{id}: request op {} len {} node {}",
            header.opcode,
            header.len,
            header.nodeid
        );
        stats.record(header.opcode, header.len);
    }
    fs.intercept_exit_code(&reader);
    // A filesystem layer that panics (fuse-backend-rs's union unwraps in places) fails
    // this request, as an error does, instead of taking the VMM down.
    let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let dax = dax.map(|d| d as &mut dyn FsCacheReqHandler);
        server.handle_message(reader, writer, dax, None)
    }));
    match handled {
        Ok(Ok(written)) => u32::try_from(written).unwrap_or(u32::MAX),
        Ok(Err(e)) => {
            log::debug!("{id}: request failed: {e}");
            0
        }
        Err(_) => {
            log::warn!("{id}: a request panicked in the filesystem; it fails");
            0
        }
    }
}
