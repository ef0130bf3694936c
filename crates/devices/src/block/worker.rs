//! The request queue's handler: the worker thread pops chains and parses them, a small pool
//! of I/O threads runs them against the disk (several requests in flight, so one slow read
//! does not hold up the guest's others), and completions come back to the worker thread,
//! which alone touches the used ring.
//!
//! ```text
//!   notify ─▶ queue_notified: pop, parse ─▶ jobs channel ─▶ I/O thread: execute, status
//!   used ring ◀─ backend_ready(COMPLETIONS) ◀─ completion eventfd + channel ◀──┘
//! ```

use std::io;
use std::os::fd::AsRawFd;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use virtio_queue::{Queue, QueueT};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::backend::DiskBackend;
use super::request::{execute, Policy, Request, ID_BYTES};
use crate::virtio::{Interrupt, QueueHandler, Registry};
use crate::GuestMemory;

/// I/O threads per disk.
pub const IO_THREADS: usize = 4;
/// The bounce buffer of each I/O thread: requests are copied through it in pieces this size.
const BOUNCE_LEN: usize = 256 * 1024;
/// O_DIRECT needs buffers aligned to the host's logical block size; a page covers them all.
const BOUNCE_ALIGN: usize = 4096;
const COMPLETIONS: u64 = 0;
/// How long `stop` waits for requests already running before it gives up on them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// A request an I/O thread finished: the chain's head and the used length.
struct Completion {
    head: u16,
    len: u32,
}

/// What every I/O thread shares.
struct Shared {
    disk: Arc<dyn DiskBackend>,
    mem: GuestMemory,
    id: [u8; ID_BYTES],
    policy: Policy,
    done_tx: Mutex<Sender<Completion>>,
    done_evt: EventFd,
    name: String,
}

/// The I/O threads; dropping the job sender ends them.
struct Pool {
    jobs: Option<Sender<(u16, Request)>>,
    threads: Vec<JoinHandle<()>>,
}

impl Pool {
    fn spawn(shared: Arc<Shared>, count: usize) -> io::Result<Pool> {
        let (tx, rx) = mpsc::channel::<(u16, Request)>();
        let rx = Arc::new(Mutex::new(rx));
        let mut threads = Vec::with_capacity(count);
        for i in 0..count {
            let (shared, rx) = (shared.clone(), rx.clone());
            let thread = std::thread::Builder::new()
                .name(format!("{}-io{i}", shared.name))
                .spawn(move || io_thread(&shared, &rx))?;
            threads.push(thread);
        }
        Ok(Pool {
            jobs: Some(tx),
            threads,
        })
    }

    fn submit(&self, head: u16, req: Request) -> bool {
        self.jobs
            .as_ref()
            .is_some_and(|tx| tx.send((head, req)).is_ok())
    }

    fn join(&mut self) {
        self.jobs = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.join();
    }
}

fn io_thread(shared: &Shared, jobs: &Mutex<Receiver<(u16, Request)>>) {
    let mut storage = vec![0u8; BOUNCE_LEN + BOUNCE_ALIGN];
    let start = storage
        .as_ptr()
        .align_offset(BOUNCE_ALIGN)
        .min(BOUNCE_ALIGN);
    let buf = &mut storage[start..start + BOUNCE_LEN];
    loop {
        // The lock is held only while waiting for the next job.
        let job = jobs.lock().unwrap_or_else(|p| p.into_inner()).recv();
        let Ok((head, req)) = job else {
            return;
        };
        let len = execute(
            &req,
            shared.disk.as_ref(),
            &shared.mem,
            &shared.id,
            shared.policy,
            buf,
        );
        let sent = shared
            .done_tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(Completion { head, len });
        if sent.is_err() {
            return;
        }
        if let Err(e) = shared.done_evt.write(1) {
            log::error!("{}: cannot signal a completion: {e}", shared.name);
        }
    }
}

/// Everything [`BlockHandler::new`] needs.
pub struct HandlerSetup {
    pub name: String,
    pub disk: Arc<dyn DiskBackend>,
    pub mem: GuestMemory,
    pub queue: Queue,
    pub interrupt: Arc<dyn Interrupt>,
    pub id: [u8; ID_BYTES],
    pub policy: Policy,
    pub io_threads: usize,
}

/// The request queue served on the device's worker thread.
pub struct BlockHandler {
    name: String,
    mem: GuestMemory,
    queue: Queue,
    interrupt: Arc<dyn Interrupt>,
    disk: Arc<dyn DiskBackend>,
    pool: Pool,
    done_rx: Receiver<Completion>,
    done_evt: EventFd,
    in_flight: usize,
    read_only: bool,
}

impl BlockHandler {
    pub fn new(setup: HandlerSetup) -> io::Result<BlockHandler> {
        let (done_tx, done_rx) = mpsc::channel();
        let done_evt = EventFd::new(EFD_NONBLOCK)?;
        let shared = Arc::new(Shared {
            disk: setup.disk.clone(),
            mem: setup.mem.clone(),
            id: setup.id,
            policy: setup.policy,
            done_tx: Mutex::new(done_tx),
            done_evt: done_evt.try_clone()?,
            name: setup.name.clone(),
        });
        let pool = Pool::spawn(shared, setup.io_threads.max(1))?;
        Ok(BlockHandler {
            name: setup.name,
            mem: setup.mem,
            queue: setup.queue,
            interrupt: setup.interrupt,
            disk: setup.disk,
            pool,
            done_rx,
            done_evt,
            in_flight: 0,
            read_only: setup.policy.read_only,
        })
    }

    /// Pops every available chain: a request goes to the pool, a malformed chain is
    /// completed at once (IOERR where it has a status byte, else with nothing written).
    fn submit_available(&mut self) {
        let mut completed_here = false;
        while let Some(chain) = self.queue.pop_descriptor_chain(&self.mem) {
            let head = chain.head_index();
            match Request::parse(chain, &self.mem) {
                Ok(req) => {
                    if self.pool.submit(head, req) {
                        self.in_flight += 1;
                        continue;
                    }
                    log::error!("{}: the I/O threads are gone; request failed", self.name);
                    self.add_used(head, 0);
                }
                Err((e, status)) => {
                    log::debug!("{}: malformed request: {e}", self.name);
                    let len = match status {
                        Some(at) => {
                            let ioerr = virtio_bindings::virtio_blk::VIRTIO_BLK_S_IOERR as u8;
                            let _ = vm_memory::Bytes::write_obj(&self.mem, ioerr, at);
                            1
                        }
                        None => 0,
                    };
                    self.add_used(head, len);
                }
            }
            completed_here = true;
        }
        if completed_here {
            self.signal();
        }
    }

    /// Returns what the I/O threads finished to the guest.
    fn reap(&mut self) {
        let mut any = false;
        while let Ok(done) = self.done_rx.try_recv() {
            self.in_flight = self.in_flight.saturating_sub(1);
            self.add_used(done.head, done.len);
            any = true;
        }
        if any {
            self.signal();
        }
    }

    fn add_used(&mut self, head: u16, len: u32) {
        if let Err(e) = self.queue.add_used(&self.mem, head, len) {
            log::error!("{}: cannot return a request to the guest: {e}", self.name);
        }
    }

    fn signal(&mut self) {
        let interrupt = self.interrupt.as_ref();
        crate::virtio::signal_used(&mut self.queue, &self.mem, interrupt, 0, &self.name);
    }
}

impl QueueHandler for BlockHandler {
    fn start(&mut self, registry: &Registry) -> io::Result<()> {
        registry.add(self.done_evt.as_raw_fd(), EventSet::IN, COMPLETIONS)?;
        self.submit_available();
        Ok(())
    }

    fn queue_notified(&mut self, _index: usize, _registry: &Registry) {
        self.submit_available();
    }

    fn backend_ready(&mut self, _token: u64, _events: EventSet, _registry: &Registry) {
        let _ = self.done_evt.read();
        self.reap();
    }

    fn stop(&mut self) {
        // Requests already running finish and are returned; then the disk is flushed,
        // whatever the sync mode, so a clean exit loses nothing the guest wrote.
        let deadline = std::time::Instant::now() + DRAIN_TIMEOUT;
        while self.in_flight > 0 {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.done_rx.recv_timeout(left) {
                Ok(done) => {
                    self.in_flight -= 1;
                    self.add_used(done.head, done.len);
                }
                Err(_) => {
                    log::warn!(
                        "{}: {} requests still running at shutdown",
                        self.name,
                        self.in_flight
                    );
                    break;
                }
            }
        }
        self.pool.join();
        if self.read_only {
            return;
        }
        if let Err(e) = self.disk.flush() {
            log::error!("{}: flushing the disk at shutdown failed: {e}", self.name);
        }
    }
}
