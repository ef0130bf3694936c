//! The host terminals the consoles use: raw mode while the VM runs and its restoration on
//! every way out (the guard's drop, and SIGTERM/SIGINT/SIGHUP to the VMM), the window size
//! and SIGWINCH, and SIGINT forwarded as ^C when stdin is not a terminal.

use std::io;
use std::os::fd::FromRawFd;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::Mutex;

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
    /// Dropped after the mode is restored (fields drop after `Drop::drop`).
    _handlers: SignalHandlers,
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
        let dup = crate::process::dup_fd(fd)?;
        let saved = tcgetattr(dup.as_raw_fd())?;
        let mut raw = saved;
        // SAFETY: `raw` is a valid termios.
        unsafe { libc::cfmakeraw(&mut raw) };
        if keep_signals {
            raw.c_lflag |= libc::ISIG;
        }
        let slot = publish(dup.as_raw_fd(), &saved);
        let handlers = SignalHandlers::acquire(false);
        let mut mode = RawMode {
            slot,
            fd: dup,
            saved,
            _handlers: handlers,
        };
        tcsetattr(mode.fd.as_raw_fd(), &raw).inspect_err(|_| mode.slot_release())?;
        Ok(mode)
    }

    /// Puts the saved mode back; idempotent.
    pub fn restore(&mut self) {
        if let Err(e) = tcsetattr(self.fd.as_raw_fd(), &self.saved) {
            log::warn!("cannot restore the terminal mode: {e}");
        }
        self.slot_release();
    }

    fn slot_release(&mut self) {
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

/// The process's SIGINT and SIGWINCH eventfds (-1: not created yet). Each is created once
/// and kept for the life of the process: a handler may fire at any moment, and an fd it
/// writes must never be closed and reused under it. Every user gets its own clone.
static SIGINT_EVT: AtomicI32 = AtomicI32::new(-1);
static SIGWINCH_EVT: AtomicI32 = AtomicI32::new(-1);
/// Live `SignalHandlers` that forward SIGINT to the guest instead of ending the VMM.
static SIGINT_FORWARDERS: AtomicUsize = AtomicUsize::new(0);

fn signal_eventfd(fd: i32) {
    if fd < 0 {
        return;
    }
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a valid u64 to an eventfd; write is async-signal-safe.
    unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
}

extern "C" fn on_terminating_signal(signum: libc::c_int) {
    if signum == libc::SIGINT && SIGINT_FORWARDERS.load(Ordering::SeqCst) > 0 {
        signal_eventfd(SIGINT_EVT.load(Ordering::SeqCst));
        return;
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
    signal_eventfd(SIGWINCH_EVT.load(Ordering::SeqCst));
}

/// Installs `handler` for `signum` and returns the disposition it replaced.
fn install_handler(
    signum: libc::c_int,
    handler: extern "C" fn(libc::c_int),
) -> Option<libc::sigaction> {
    // SAFETY: a zeroed sigaction with a handler and an empty mask is valid; the handlers
    // only touch atomics and call async-signal-safe functions. `old` is written by the call.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler as usize;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(signum, &action, &mut old) != 0 {
            log::warn!(
                "cannot install the handler of signal {signum}: {}",
                io::Error::last_os_error()
            );
            return None;
        }
        Some(old)
    }
}

fn restore_handler(signum: libc::c_int, old: &libc::sigaction) {
    // SAFETY: `old` is a disposition sigaction returned for this signal.
    if unsafe { libc::sigaction(signum, old, std::ptr::null_mut()) } != 0 {
        log::warn!(
            "cannot restore the handler of signal {signum}: {}",
            io::Error::last_os_error()
        );
    }
}

/// The dispositions our handlers replaced, while at least one `SignalHandlers` lives.
struct Installed {
    users: usize,
    previous: Vec<(libc::c_int, libc::sigaction)>,
}

// SAFETY: sigaction is plain data (a handler address, flags and a mask); it is only moved
// between threads under the mutex.
unsafe impl Send for Installed {}

static INSTALLED: Mutex<Installed> = Mutex::new(Installed {
    users: 0,
    previous: Vec::new(),
});

/// The VMM's signal handlers: SIGTERM, SIGINT and SIGHUP restore the raw terminals and end
/// the process as the signal would have; SIGINT goes to the guest instead while a console
/// forwards it; SIGWINCH tells the consoles the terminal was resized. They are installed
/// while at least one guard lives, and the last guard's drop puts back what the process had
/// before, so a program that ran a VM gets its own handlers back.
pub struct SignalHandlers {
    forwards_sigint: bool,
}

impl SignalHandlers {
    fn acquire(forwards_sigint: bool) -> SignalHandlers {
        let mut installed = INSTALLED.lock().unwrap_or_else(|p| p.into_inner());
        if installed.users == 0 {
            for signum in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
                if let Some(old) = install_handler(signum, on_terminating_signal) {
                    installed.previous.push((signum, old));
                }
            }
            if let Some(old) = install_handler(libc::SIGWINCH, on_sigwinch) {
                installed.previous.push((libc::SIGWINCH, old));
            }
        }
        installed.users += 1;
        if forwards_sigint {
            SIGINT_FORWARDERS.fetch_add(1, Ordering::SeqCst);
        }
        SignalHandlers { forwards_sigint }
    }
}

impl Drop for SignalHandlers {
    fn drop(&mut self) {
        let mut installed = INSTALLED.lock().unwrap_or_else(|p| p.into_inner());
        if self.forwards_sigint {
            SIGINT_FORWARDERS.fetch_sub(1, Ordering::SeqCst);
        }
        installed.users -= 1;
        if installed.users == 0 {
            for (signum, old) in std::mem::take(&mut installed.previous) {
                restore_handler(signum, &old);
            }
        }
    }
}

/// A clone of the process-wide eventfd kept in `slot`, created on first use. `drain`:
/// counts left from signals before this user are discarded.
fn process_eventfd(slot: &AtomicI32, drain: bool) -> io::Result<EventFd> {
    static CREATE: Mutex<()> = Mutex::new(());
    let _guard = CREATE.lock().unwrap_or_else(|p| p.into_inner());
    let mut fd = slot.load(Ordering::SeqCst);
    if fd < 0 {
        let evt = EventFd::new(EFD_NONBLOCK)?;
        fd = evt.as_raw_fd();
        // Kept open for the process's life (see SIGINT_EVT).
        std::mem::forget(evt);
        slot.store(fd, Ordering::SeqCst);
    }
    let dup = nix::fcntl::fcntl(
        // SAFETY: the process eventfd is never closed; borrowed only for the dup.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
        nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(0),
    )?;
    // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
    let evt = unsafe { EventFd::from_raw_fd(dup) };
    if drain {
        let _ = evt.read();
    }
    Ok(evt)
}

/// From now on, while the returned guard lives, SIGINT to the VMM is a ^C for the guest:
/// the eventfd is signalled once per SIGINT (upstream's forwarding when stdin is not a
/// terminal). Dropping the guard gives SIGINT back to the process.
pub fn forward_sigint() -> io::Result<(EventFd, SignalHandlers)> {
    let first = SIGINT_FORWARDERS.load(Ordering::SeqCst) == 0;
    let evt = process_eventfd(&SIGINT_EVT, first)?;
    Ok((evt, SignalHandlers::acquire(true)))
}

/// An eventfd signalled on every SIGWINCH while the returned guard lives.
pub fn sigwinch_evt() -> io::Result<(EventFd, SignalHandlers)> {
    let evt = process_eventfd(&SIGWINCH_EVT, false)?;
    Ok((evt, SignalHandlers::acquire(false)))
}

/// The window size of a terminal fd.
pub struct TtySize {
    fd: OwnedFd,
}

impl TtySize {
    pub fn new(fd: RawFd) -> io::Result<TtySize> {
        let fd = crate::process::dup_fd(fd)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Signal dispositions are process-wide: the tests that change them run one at a time.
    static SERIAL: Mutex<()> = Mutex::new(());

    fn handler_of(signum: libc::c_int) -> usize {
        // SAFETY: a null new action only reads the current one into `old`.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            assert_eq!(libc::sigaction(signum, std::ptr::null(), &mut old), 0);
            old.sa_sigaction
        }
    }

    extern "C" fn callers_handler(_signum: libc::c_int) {}

    #[test]
    fn the_callers_handlers_come_back_when_the_last_guard_drops() {
        let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let previous = install_handler(libc::SIGHUP, callers_handler).unwrap();
        let (evt, forwarding) = forward_sigint().unwrap();
        let (_winch, resize) = sigwinch_evt().unwrap();
        assert_eq!(
            handler_of(libc::SIGINT),
            on_terminating_signal as *const () as usize
        );
        assert_eq!(
            handler_of(libc::SIGHUP),
            on_terminating_signal as *const () as usize
        );
        assert_eq!(
            handler_of(libc::SIGWINCH),
            on_sigwinch as *const () as usize
        );

        // SAFETY: raising SIGINT runs the forwarding handler installed above, which only
        // writes the eventfd while a forwarder lives.
        assert_eq!(unsafe { libc::raise(libc::SIGINT) }, 0);
        assert_eq!(evt.read().unwrap(), 1);

        drop(forwarding);
        assert_eq!(
            handler_of(libc::SIGINT),
            on_terminating_signal as *const () as usize
        );
        drop(resize);
        assert_eq!(
            handler_of(libc::SIGHUP),
            callers_handler as *const () as usize
        );
        assert_eq!(handler_of(libc::SIGINT), libc::SIG_DFL);
        assert_eq!(handler_of(libc::SIGWINCH), libc::SIG_DFL);
        restore_handler(libc::SIGHUP, &previous);
    }

    #[test]
    fn a_later_forwarder_does_not_see_an_earlier_sigint() {
        let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let (first, guard) = forward_sigint().unwrap();
        // SAFETY: as above, the forwarding handler only writes the eventfd.
        assert_eq!(unsafe { libc::raise(libc::SIGINT) }, 0);
        drop(first);
        drop(guard);
        let (second, _guard) = forward_sigint().unwrap();
        assert_eq!(
            second.read().unwrap_err().kind(),
            io::ErrorKind::WouldBlock,
            "the count of the earlier SIGINT was drained"
        );
    }
}
