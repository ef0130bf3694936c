//! The fs worker thread: waits for queue notifications and runs FUSE requests.
//!
//! One thread per device serves both queues (hiprio and the request queue) in arrival order:
//! a request blocks the thread while the host syscall runs, which is what upstream libkrun
//! does as well and keeps the passthrough's per-thread credential switching simple.

use std::fmt::Write as _;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::thread::JoinHandle;

use fuse_backend_rs::abi::fuse_abi::InHeader;
use fuse_backend_rs::api::server::Server;
use fuse_backend_rs::transport::{Reader, VirtioFsWriter, Writer};
use nix::sched::CloneFlags;
use virtio_queue::{DescriptorChain, QueueT};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::filesystem::ShareFs;
use crate::virtio::{ActiveQueue, Interrupt};
use crate::GuestMemory;

/// epoll token of the kill eventfd; queue tokens are their indexes.
const KILL_TOKEN: u64 = u64::MAX;

/// Everything the worker thread owns while the device is active.
pub(crate) struct Worker {
    /// Log prefix, `fs(<tag>)`.
    id: String,
    mem: GuestMemory,
    queues: Vec<ActiveQueue>,
    interrupt: Arc<dyn Interrupt>,
    fs: Arc<ShareFs>,
    /// One server for the device's activation: it keeps the protocol version FUSE_INIT
    /// negotiated, which later replies depend on.
    server: Server<Arc<ShareFs>>,
    /// Requests served and their lengths, per opcode, logged at debug when the worker ends.
    stats: RequestStats,
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

/// A running worker. Stopping (or dropping) it lets the thread finish every request the
/// guest already submitted, then joins it.
pub(crate) struct WorkerHandle {
    kill_evt: EventFd,
    thread: Option<JoinHandle<()>>,
}

impl WorkerHandle {
    /// Starts the worker on a thread called `name`.
    pub fn spawn(name: String, worker: Worker) -> io::Result<Self> {
        let kill_evt = EventFd::new(libc::EFD_NONBLOCK)?;
        let thread_kill_evt = kill_evt.try_clone()?;
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || worker.run(&thread_kill_evt))?;
        Ok(Self {
            kill_evt,
            thread: Some(thread),
        })
    }

    /// Asks the worker to drain its queues and exit, and waits for it.
    pub fn stop(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        if let Err(e) = self.kill_evt.write(1) {
            log::error!("fs: cannot signal the worker to stop: {e}");
            return;
        }
        if thread.join().is_err() {
            log::error!("fs: the worker thread panicked");
        }
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Worker {
    pub fn new(
        id: String,
        mem: GuestMemory,
        queues: Vec<ActiveQueue>,
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
        }
    }

    fn run(mut self, kill_evt: &EventFd) {
        // The passthrough sets the umask to 0 when it opens the share (at FUSE_INIT, on this
        // thread) so that the guest's modes reach the host unchanged. Unsharing the fs
        // attributes keeps that umask change away from the rest of the VMM process.
        if let Err(e) = nix::sched::unshare(CloneFlags::CLONE_FS) {
            log::warn!(
                "{}: unshare(CLONE_FS) failed ({e}); the process umask will be cleared",
                self.id
            );
        }
        let epoll = match self.register(kill_evt) {
            Ok(epoll) => epoll,
            Err(e) => {
                log::error!("{}: cannot set up the worker's epoll: {e}", self.id);
                return;
            }
        };
        let mut events = vec![EpollEvent::default(); self.queues.len() + 1];
        loop {
            let count = match epoll.wait(-1, &mut events) {
                Ok(count) => count,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::error!("{}: epoll_wait failed: {e}", self.id);
                    return;
                }
            };
            for event in &events[..count] {
                match event.data() {
                    KILL_TOKEN => {
                        // Finish what the guest already queued before exiting.
                        for index in 0..self.queues.len() {
                            self.process_queue(index);
                        }
                        self.stats.log(&self.id);
                        return;
                    }
                    token => {
                        let index = usize::try_from(token).unwrap_or(usize::MAX);
                        let Some(queue) = self.queues.get(index) else {
                            continue;
                        };
                        // The counter only says "look at the queue": reset it, then drain.
                        if let Err(e) = queue.notify_evt.read() {
                            if e.kind() != io::ErrorKind::WouldBlock {
                                log::debug!("{}: reading queue {index} eventfd: {e}", self.id);
                            }
                        }
                        self.process_queue(index);
                    }
                }
            }
        }
    }

    fn register(&self, kill_evt: &EventFd) -> io::Result<Epoll> {
        let epoll = Epoll::new()?;
        epoll.ctl(
            ControlOperation::Add,
            kill_evt.as_raw_fd(),
            EpollEvent::new(EventSet::IN, KILL_TOKEN),
        )?;
        for (index, queue) in self.queues.iter().enumerate() {
            epoll.ctl(
                ControlOperation::Add,
                queue.notify_evt.as_raw_fd(),
                EpollEvent::new(EventSet::IN, index as u64),
            )?;
        }
        Ok(epoll)
    }

    /// Serves every available chain of queue `index`, then interrupts the guest once if it
    /// asked to be notified.
    fn process_queue(&mut self, index: usize) {
        let Some(active) = self.queues.get_mut(index) else {
            return;
        };
        let queue = &mut active.queue;
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
            );
            if let Err(e) = queue.add_used(&self.mem, head, len) {
                log::error!("{}: cannot return descriptor {head}: {e}", self.id);
                break;
            }
            used_any = true;
        }
        if !used_any {
            return;
        }
        let notify = queue.needs_notification(&self.mem).unwrap_or_else(|e| {
            log::debug!("{}: needs_notification failed ({e}), interrupting", self.id);
            true
        });
        if notify {
            #[allow(clippy::cast_possible_truncation)] // at most two queues
            let queue_index = index as u16;
            if let Err(e) = self.interrupt.signal_queue(queue_index) {
                log::error!("{}: cannot interrupt the guest: {e}", self.id);
            }
        }
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
    match server.handle_message(reader, writer, None, None) {
        Ok(written) => u32::try_from(written).unwrap_or(u32::MAX),
        Err(e) => {
            log::debug!("{id}: request failed: {e}");
            0
        }
    }
}
