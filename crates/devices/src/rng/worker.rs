//! The request queue's work on the device worker: every chain the driver queues is filled
//! with random bytes, as many as a token bucket allows, so a guest that keeps asking gets
//! entropy at a bounded rate and the worker sleeps in between instead of spinning.

use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, error};
use virtio_queue::{Queue, QueueOwnedT, QueueT};

use super::backend::Entropy;
use crate::virtio::{Interrupt, QueueHandler, Registry};
use crate::GuestMemory;

/// The most bytes one request gets, whatever size the guest's buffer claims: bounds the
/// copy buffer (allocated once) and the time one chain takes. Linux asks for at most
/// 64 bytes per read of a small buffer, or the buffer it was given.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// What a request costs on top of its bytes, so a flood of empty buffers is limited too.
const REQUEST_COST: u64 = 64;

/// How fast the guest may draw entropy: `bytes_per_sec` on average, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub bytes_per_sec: u64,
    pub burst: u64,
}

impl Default for RateLimit {
    /// 8 MiB/s with a 1 MiB burst: far more than a guest's entropy pool asks for, far less
    /// than a busy loop on the worker.
    fn default() -> Self {
        Self {
            bytes_per_sec: 8 << 20,
            burst: 1 << 20,
        }
    }
}

/// A token bucket: one token per byte, refilled continuously up to `burst`.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    limit: RateLimit,
    tokens: u64,
    refilled_at: Instant,
}

impl TokenBucket {
    pub(crate) fn new(limit: RateLimit, now: Instant) -> Self {
        Self {
            limit,
            tokens: limit.burst,
            refilled_at: now,
        }
    }

    /// Adds the tokens earned since the last refill.
    pub(crate) fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled_at);
        let earned = (elapsed.as_nanos() * u128::from(self.limit.bytes_per_sec)) / 1_000_000_000;
        if earned == 0 {
            return;
        }
        self.tokens = u64::try_from(earned)
            .unwrap_or(u64::MAX)
            .saturating_add(self.tokens)
            .min(self.limit.burst);
        self.refilled_at = now;
    }

    pub(crate) fn available(&self) -> u64 {
        self.tokens
    }

    pub(crate) fn take(&mut self, tokens: u64) {
        self.tokens = self.tokens.saturating_sub(tokens);
    }

    /// How long until `tokens` are available (zero when they are).
    pub(crate) fn wait_for(&self, tokens: u64) -> Duration {
        let missing = tokens.min(self.limit.burst).saturating_sub(self.tokens);
        if missing == 0 || self.limit.bytes_per_sec == 0 {
            return Duration::ZERO;
        }
        let nanos =
            (u128::from(missing) * 1_000_000_000).div_ceil(u128::from(self.limit.bytes_per_sec));
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

/// The active device's queue, backend and bucket.
pub(crate) struct RngHandler {
    mem: GuestMemory,
    queue: Queue,
    interrupt: Arc<dyn Interrupt>,
    backend: Box<dyn Entropy>,
    bucket: TokenBucket,
    buf: Vec<u8>,
    /// Chains are waiting for tokens: the worker wakes after `next_timeout`.
    throttled: bool,
    /// The backend failed once already (logged once, not per request).
    backend_failed: bool,
}

impl RngHandler {
    pub(crate) fn new(
        mem: GuestMemory,
        queue: Queue,
        interrupt: Arc<dyn Interrupt>,
        backend: Box<dyn Entropy>,
        rate: RateLimit,
    ) -> Self {
        Self {
            mem,
            queue,
            interrupt,
            backend,
            bucket: TokenBucket::new(rate, Instant::now()),
            buf: vec![0; MAX_REQUEST_BYTES],
            throttled: false,
            backend_failed: false,
        }
    }

    pub(crate) fn into_backend(self) -> Box<dyn Entropy> {
        self.backend
    }

    /// Serves queued chains until the queue is empty or the bucket is; returns how many
    /// chains were used.
    pub(crate) fn process(&mut self, now: Instant) -> usize {
        self.bucket.refill(now);
        self.throttled = false;
        let mut used = 0;
        while let Some(chain) = self.queue.pop_descriptor_chain(&self.mem) {
            if self.bucket.available() < REQUEST_COST {
                // Leave the chain queued; the timeout comes back for it.
                self.queue.go_to_previous_position();
                self.throttled = true;
                break;
            }
            let head = chain.head_index();
            let written = match chain.writer(&self.mem) {
                Ok(mut writer) => {
                    let budget = self.bucket.available() - REQUEST_COST;
                    let len = writer
                        .available_bytes()
                        .min(MAX_REQUEST_BYTES)
                        .min(usize::try_from(budget).unwrap_or(usize::MAX));
                    fill(
                        self.backend.as_mut(),
                        &mut self.buf[..len],
                        &mut writer,
                        &mut self.backend_failed,
                    )
                }
                Err(e) => {
                    debug!("rng0: bad request chain: {e}");
                    0
                }
            };
            self.bucket.take(REQUEST_COST + written as u64);
            if let Err(e) = self.queue.add_used(&self.mem, head, written as u32) {
                // The guest's used ring is unwritable: its problem, logged at debug.
                debug!("rng0: cannot return a request buffer: {e}");
            }
            used += 1;
        }
        if used > 0 {
            self.signal_used();
        }
        used
    }

    fn signal_used(&mut self) {
        let interrupt = self.interrupt.as_ref();
        crate::virtio::signal_used(&mut self.queue, &self.mem, interrupt, 0, "rng0");
    }
}

/// Writes `buf.len()` random bytes from `backend` into the chain; returns how many arrived.
/// A failing backend answers with no bytes, logged the first time (`failed`).
fn fill(
    backend: &mut dyn Entropy,
    buf: &mut [u8],
    writer: &mut virtio_queue::Writer<'_>,
    failed: &mut bool,
) -> usize {
    if let Err(e) = backend.fill(buf) {
        if !*failed {
            error!("rng0: the entropy source failed, requests get no bytes while it fails: {e}");
            *failed = true;
        }
        return 0;
    }
    match std::io::Write::write_all(writer, buf) {
        Ok(()) => buf.len(),
        Err(e) => {
            debug!("rng0: bad request buffer: {e}");
            writer.bytes_written()
        }
    }
}

impl QueueHandler for RngHandler {
    fn start(&mut self, _registry: &Registry) -> std::io::Result<()> {
        // The driver may have queued requests before it set DRIVER_OK.
        self.process(Instant::now());
        Ok(())
    }

    fn queue_notified(&mut self, _index: usize, _registry: &Registry) {
        self.process(Instant::now());
    }

    fn next_timeout(&mut self) -> Option<Duration> {
        self.throttled.then(|| {
            // Wake when a whole request's worth is there, not for every few bytes earned.
            self.bucket
                .wait_for(MAX_REQUEST_BYTES as u64 + REQUEST_COST)
                .max(Duration::from_millis(1))
        })
    }

    fn timed_out(&mut self, _registry: &Registry) {
        self.process(Instant::now());
    }
}
