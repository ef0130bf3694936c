//! The host terminals the consoles use: raw mode while the VM runs and its restoration on
//! every way out (the guard's drop, and SIGTERM/SIGINT/SIGHUP to the VMM), the window size
//! and SIGWINCH, and SIGINT forwarded as ^C when stdin is not a terminal.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Mutex, Once};

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Terminals put in raw mode at once, at most.
const MAX_RAW_TTYS: usize = 4;

/// A saved terminal mode the signal handler may restore: the fd, and the mode, stored
/// before `used` is set (release) and read after it (acquire).
struct SavedSlot {
    used: AtomicBool,
    fd: AtomicI32,
    /// A copy the signal handler reads without locking; written once before `used`.
    raw_copy: std::cell::UnsafeCell<libc::termios>,
}

// SAFETY: `raw_copy` is written only by `RawMode::enable` before `used` is published with
// release ordering, and only read after an acquire load of `used`; no concurrent writer.
unsafe impl Sync for SavedSlot {}

static SLOTS: [SavedSlot; MAX_RAW_TTYS] = [const {
    SavedSlot {
        used: AtomicBool::new(false),
        fd: AtomicI32::new(-1),
        // SAFETY: termios is plain integers and arrays; all zeros is a valid value.
        raw_copy: std::cell::UnsafeCell::new(unsafe { std::mem::zeroed() }),
    }
}; MAX_RAW_TTYS];
static SLOT_LOCK: Mutex<()> = Mutex::new(());

/// A terminal in raw mode; dropping it (or [`RawMode::restore`]) puts the saved mode back.
pub struct RawMode {
    slot: Option<usize>,
    fd: OwnedFd,
    saved: libc::termios,
}

fn tcgetattr(fd: RawFd) -> io::Result<libc::termios> {
    // SAFETY: termios is plain data; tcgetattr writes it fully on success.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: `t` is a valid termios to write to; an invalid fd fails with EBADF.
    if unsafe { libc::tcgetattr(fd, &mut t) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(t)
}

fn tcsetattr(fd: RawFd, t: &libc::termios) -> io::Result<()> {
    // SAFETY: `t` points to a valid termios; an invalid fd fails with EBADF.
    if unsafe { libc::tcsetattr(fd, libc::TCSANOW, t) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl RawMode {
    /// Saves `fd`'s mode and makes it raw. `keep_signals`: ^C still raises SIGINT on the
    /// host (upstream does so when the VMM forwards SIGINT itself).
    pub fn enable(fd: RawFd, keep_signals: bool) -> io::Result<RawMode> {
        let dup = nix::unistd::dup(
            // SAFETY: borrowed only for the dup call; an invalid fd fails with EBADF.
            unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
        )?;
        let saved = tcgetattr(dup.as_raw_fd())?;
        let mut raw = saved;
        // SAFETY: `raw` is a valid termios.
        unsafe { libc::cfmakeraw(&mut raw) };
        if keep_signals {
            raw.c_lflag |= libc::ISIG;
        }
        let slot = publish(dup.as_raw_fd(), &saved);
        install_restore_handlers();
        tcsetattr(dup.as_raw_fd(), &raw)?;
        Ok(RawMode {
            slot,
            fd: dup,
            saved,
        })
    }

    /// Puts the saved mode back; idempotent.
    pub fn restore(&mut self) {
        if let Err(e) = tcsetattr(self.fd.as_raw_fd(), &self.saved) {
            log::warn!("cannot restore the terminal mode: {e}");
        }
        if let Some(slot) = self.slot.take() {
            let _guard = SLOT_LOCK.lock().unwrap_or_else(|p| p.into_inner());
            SLOTS[slot].used.store(false, Ordering::SeqCst);
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        self.restore();
    }
}

/// Records `saved` where the signal handler finds it; `None` when every slot is taken (the
/// terminal is then restored only on a normal exit).
fn publish(fd: RawFd, saved: &libc::termios) -> Option<usize> {
    let _guard = SLOT_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let index = SLOTS.iter().position(|s| !s.used.load(Ordering::SeqCst))?;
    let slot = &SLOTS[index];
    // SAFETY: the slot is unused and SLOT_LOCK is held: nobody else writes it, and the
    // signal handler only reads it after `used` is set below.
    unsafe { *slot.raw_copy.get() = *saved };
    slot.fd.store(fd, Ordering::SeqCst);
    slot.used.store(true, Ordering::Release);
    Some(index)
}

/// Restores every published terminal; async-signal-safe (atomics and tcsetattr only).
fn restore_published() {
    for slot in &SLOTS {
        if slot.used.load(Ordering::Acquire) {
            let fd = slot.fd.load(Ordering::SeqCst);
            // SAFETY: raw_copy was written before `used` was published (see SavedSlot);
            // tcsetattr is an ioctl, safe in a signal handler.
            unsafe { libc::tcsetattr(fd, libc::TCSANOW, slot.raw_copy.get()) };
        }
    }
}

/// The eventfd SIGINT is forwarded to (-1: not forwarding).
static SIGINT_EVT: AtomicI32 = AtomicI32::new(-1);
/// The eventfd SIGWINCH is forwarded to (-1: none).
static SIGWINCH_EVT: AtomicI32 = AtomicI32::new(-1);

fn signal_eventfd(fd: i32) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a valid u64 to an eventfd; write is async-signal-safe.
    unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
}

extern "C" fn on_terminating_signal(signum: libc::c_int) {
    if signum == libc::SIGINT {
        let fd = SIGINT_EVT.load(Ordering::SeqCst);
        if fd >= 0 {
            signal_eventfd(fd);
            return;
        }
    }
    restore_published();
    // SAFETY: back to the default action, then the same signal ends the process as it
    // would have without us; both calls are async-signal-safe.
    unsafe {
        libc::signal(signum, libc::SIG_DFL);
        libc::raise(signum);
    }
}

extern "C" fn on_sigwinch(_signum: libc::c_int) {
    let fd = SIGWINCH_EVT.load(Ordering::SeqCst);
    if fd >= 0 {
        signal_eventfd(fd);
    }
}

fn install_handler(signum: libc::c_int, handler: extern "C" fn(libc::c_int)) {
    // SAFETY: a zeroed sigaction with a handler and an empty mask is valid; the handlers
    // only touch atomics and call async-signal-safe functions.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler as usize;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(signum, &action, std::ptr::null_mut()) != 0 {
            log::warn!(
                "cannot install the handler of signal {signum}: {}",
                io::Error::last_os_error()
            );
        }
    }
}

static RESTORE_HANDLERS: Once = Once::new();

fn install_restore_handlers() {
    RESTORE_HANDLERS.call_once(|| {
        for signum in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            install_handler(signum, on_terminating_signal);
        }
    });
}

/// From now on SIGINT to the VMM is a ^C for the guest: the returned eventfd is signalled
/// once per SIGINT (upstream's forwarding when stdin is not a terminal).
pub fn forward_sigint() -> io::Result<EventFd> {
    let evt = EventFd::new(EFD_NONBLOCK)?;
    let ours = evt.try_clone()?;
    // The clone stays open for the process's life: the handler may write it at any time.
    SIGINT_EVT.store(ours.as_raw_fd(), Ordering::SeqCst);
    std::mem::forget(ours);
    install_restore_handlers();
    Ok(evt)
}

/// An eventfd signalled on every SIGWINCH.
pub fn sigwinch_evt() -> io::Result<EventFd> {
    let evt = EventFd::new(EFD_NONBLOCK)?;
    let ours = evt.try_clone()?;
    let old = SIGWINCH_EVT.swap(ours.as_raw_fd(), Ordering::SeqCst);
    std::mem::forget(ours);
    if old < 0 {
        install_handler(libc::SIGWINCH, on_sigwinch);
    }
    Ok(evt)
}

/// The window size of a terminal fd.
pub struct TtySize {
    fd: OwnedFd,
}

impl TtySize {
    pub fn new(fd: RawFd) -> io::Result<TtySize> {
        let fd = nix::unistd::dup(
            // SAFETY: borrowed only for the dup call.
            unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
        )?;
        Ok(TtySize { fd })
    }
}

impl devices::console::WindowSize for TtySize {
    fn size(&self) -> Option<(u16, u16)> {
        // SAFETY: winsize is plain data; TIOCGWINSZ fills it on success.
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: TIOCGWINSZ writes one winsize to the valid pointer.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
        (rc == 0).then_some((ws.ws_col, ws.ws_row))
    }
}

/// Whether `fd` is an open terminal.
pub fn is_tty(fd: RawFd) -> bool {
    // SAFETY: isatty only inspects the fd number; an invalid fd yields 0.
    fd >= 0 && unsafe { libc::isatty(fd) } == 1
}
