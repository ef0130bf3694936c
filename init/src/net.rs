//! The guest's network identity: hostname, loopback, and the placeholder interface TSI needs.

use std::io;

/// Address upstream gives `dummy0` (TEST-NET-3, never routed) when TSI is on.
pub const TSI_DUMMY_ADDR: [u8; 4] = [203, 0, 113, 1];
pub const TSI_DUMMY_NETMASK: [u8; 4] = [255, 255, 255, 0];

pub fn set_hostname(name: &str) {
    if let Err(err) = sys::sethostname(name) {
        crate::diag!("sethostname({name}): {}", crate::exec::describe(&err));
    }
}

/// Brings `lo` up so the workload can talk to 127.0.0.1 (with TSI, loopback stays local).
pub fn bring_up_loopback() {
    if let Err(err) = set_interface_up("lo") {
        crate::diag!("cannot bring up lo: {}", crate::exec::describe(&err));
    }
}

/// Whether the kernel was told to hijack sockets (`tsi_hijack` before any ` -- `).
pub fn tsi_enabled(cmdline: &str) -> bool {
    cmdline
        .split_whitespace()
        .take_while(|word| *word != "--")
        .any(|word| word == "tsi_hijack")
}

/// The address `dummy0` gets: `KRUN_TSI_IP`'s (`krun_set_tsi_scope`'s IP) when given and
/// well-formed, else [`TSI_DUMMY_ADDR`]/24 as upstream. A malformed value is reported once
/// and the default is used.
pub fn tsi_address(value: Option<&str>) -> ([u8; 4], [u8; 4]) {
    if let Some(text) = value {
        match contract::tsi_ip::parse(text) {
            Some((addr, prefix)) => {
                return (addr.octets(), contract::tsi_ip::netmask(prefix).octets());
            }
            None => crate::diag!(
                "ignoring {}={text:?}: not A.B.C.D/PREFIX",
                contract::keys::TSI_IP
            ),
        }
    }
    (TSI_DUMMY_ADDR, TSI_DUMMY_NETMASK)
}

/// With TSI (issue #5) programs that probe for a configured interface before connecting
/// must see one: bring up `dummy0` with `addr`/`netmask` ([`tsi_address`]). A kernel
/// without the dummy driver (ENODEV) is normal and silent.
pub fn enable_tsi_dummy_interface((addr, netmask): ([u8; 4], [u8; 4])) {
    match set_interface_up("dummy0") {
        Ok(()) => {}
        Err(err) if err.raw_os_error() == Some(libc::ENODEV) => return,
        Err(err) => {
            crate::diag!("cannot bring up dummy0: {}", crate::exec::describe(&err));
            return;
        }
    }
    let result = sys::Socket::inet().and_then(|sock| {
        sock.set_ipv4(libc::SIOCSIFADDR, "dummy0", addr)?;
        sock.set_ipv4(libc::SIOCSIFNETMASK, "dummy0", netmask)
    });
    if let Err(err) = result {
        crate::diag!("cannot configure dummy0: {}", crate::exec::describe(&err));
    }
}

pub(crate) fn set_interface_up(name: &str) -> io::Result<()> {
    let sock = sys::Socket::inet()?;
    let flags = sock.flags(name)?;
    sock.set_flags(name, flags | libc::IFF_UP as libc::c_short)
}

/// The interface ioctls init needs (also the DHCP client's, crate::nics).
pub(crate) mod sys {
    use std::io;

    pub fn sethostname(name: &str) -> io::Result<()> {
        // SAFETY: the pointer and length describe `name`'s bytes; no NUL is required.
        let ret = unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) };
        if ret == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// An AF_INET datagram socket, the handle the SIOC*IF* ioctls need.
    pub struct Socket(libc::c_int);

    impl Drop for Socket {
        fn drop(&mut self) {
            // SAFETY: we own the descriptor and nothing else closes it.
            unsafe { libc::close(self.0) };
        }
    }

    fn ifreq(name: &str) -> io::Result<libc::ifreq> {
        // SAFETY: ifreq is plain data (a name and a union of plain fields); zero is valid.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        if name.len() >= req.ifr_name.len() {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
            *dst = src as libc::c_char;
        }
        Ok(req)
    }

    impl Socket {
        pub fn inet() -> io::Result<Self> {
            // SAFETY: plain integer arguments; the fd is owned by the returned Socket.
            let fd =
                unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
            if fd < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(Socket(fd))
            }
        }

        fn ioctl(&self, request: libc::c_ulong, req: &mut libc::ifreq) -> io::Result<()> {
            // SAFETY: every request used here reads or writes one `struct ifreq`, which `req`
            // points to for the duration of the call.
            let ret = unsafe { libc::ioctl(self.0, request, req as *mut libc::ifreq) };
            if ret < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        }

        pub fn flags(&self, name: &str) -> io::Result<libc::c_short> {
            let mut req = ifreq(name)?;
            self.ioctl(libc::SIOCGIFFLAGS, &mut req)?;
            // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
            Ok(unsafe { req.ifr_ifru.ifru_flags })
        }

        pub fn set_flags(&self, name: &str, flags: libc::c_short) -> io::Result<()> {
            let mut req = ifreq(name)?;
            req.ifr_ifru.ifru_flags = flags;
            self.ioctl(libc::SIOCSIFFLAGS, &mut req)
        }

        /// SIOCSIFADDR / SIOCSIFNETMASK with an AF_INET address.
        pub fn set_ipv4(
            &self,
            request: libc::c_ulong,
            name: &str,
            addr: [u8; 4],
        ) -> io::Result<()> {
            let mut req = ifreq(name)?;
            req.ifr_ifru.ifru_addr = sockaddr_in4(addr);
            self.ioctl(request, &mut req)
        }

        pub fn set_mtu(&self, name: &str, mtu: u16) -> io::Result<()> {
            let mut req = ifreq(name)?;
            req.ifr_ifru.ifru_mtu = libc::c_int::from(mtu);
            self.ioctl(libc::SIOCSIFMTU, &mut req)
        }

        /// A default route through `gateway` on `name` (SIOCADDRT).
        pub fn add_default_route(&self, name: &str, gateway: [u8; 4]) -> io::Result<()> {
            let dev = std::ffi::CString::new(name)
                .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
            // SAFETY: rtentry is plain data (pointers may be null); all zeroes is valid.
            let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
            rt.rt_dst = sockaddr_in4([0; 4]);
            rt.rt_genmask = sockaddr_in4([0; 4]);
            rt.rt_gateway = sockaddr_in4(gateway);
            rt.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
            rt.rt_dev = dev.as_ptr() as *mut libc::c_char;
            // SAFETY: SIOCADDRT reads one rtentry, which `rt` is; `dev` outlives the call.
            let ret =
                unsafe { libc::ioctl(self.0, libc::SIOCADDRT, &mut rt as *mut libc::rtentry) };
            if ret < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        }
    }

    /// An AF_INET address as the generic sockaddr the interface and route ioctls take.
    fn sockaddr_in4(addr: [u8; 4]) -> libc::sockaddr {
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(addr),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: sockaddr_in and sockaddr have the same size on Linux; every byte is set.
        unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsi_address_from_krun_tsi_ip_or_upstreams_default() {
        assert_eq!(
            tsi_address(Some("10.0.2.15/24")),
            ([10, 0, 2, 15], [255, 255, 255, 0])
        );
        assert_eq!(tsi_address(None), (TSI_DUMMY_ADDR, TSI_DUMMY_NETMASK));
        assert_eq!(
            tsi_address(Some("junk")),
            (TSI_DUMMY_ADDR, TSI_DUMMY_NETMASK)
        );
    }

    #[test]
    fn tsi_enabled_word_before_dashes_is_true() {
        assert!(tsi_enabled("console=hvc0 tsi_hijack rw -- arg"));
    }

    #[test]
    fn tsi_enabled_word_after_dashes_or_partial_is_false() {
        assert!(!tsi_enabled("console=hvc0 rw -- tsi_hijack"));
        assert!(!tsi_enabled("tsi_hijack=0 notsi_hijack"));
    }
}
