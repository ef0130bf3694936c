//! The syscalls of the DHCP client: an AF_PACKET socket on one interface (the ioctls that
//! apply a lease are crate::net::sys's).

use std::ffi::CString;
use std::io;
use std::time::Duration;

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

struct Fd(libc::c_int);

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: we own the descriptor and nothing else closes it.
        unsafe { libc::close(self.0) };
    }
}

const ETH_P_IP: u16 = 0x0800;

/// A datagram packet socket for IPv4 on one interface: link headers are the kernel's.
pub struct PacketSocket {
    fd: Fd,
    ifindex: libc::c_int,
}

fn sockaddr_ll(ifindex: libc::c_int, broadcast: bool) -> libc::sockaddr_ll {
    // SAFETY: sockaddr_ll is plain data; all zeroes is a valid value.
    let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sa.sll_family = libc::AF_PACKET as libc::c_ushort;
    sa.sll_protocol = ETH_P_IP.to_be();
    sa.sll_ifindex = ifindex;
    if broadcast {
        sa.sll_halen = 6;
        sa.sll_addr[..6].fill(0xff);
    }
    sa
}

impl PacketSocket {
    pub fn open(name: &str) -> io::Result<Self> {
        let cname = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: a NUL-terminated name; the call only reads it.
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        if ifindex == 0 {
            return Err(io::Error::last_os_error());
        }
        let ifindex = ifindex as libc::c_int;
        // SAFETY: plain integer arguments; the fd is owned by the returned socket.
        let fd = Fd(cvt(unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                libc::c_int::from(ETH_P_IP.to_be()),
            )
        })?);
        let sa = sockaddr_ll(ifindex, false);
        // SAFETY: `sa` is a sockaddr_ll of the length passed.
        cvt(unsafe {
            libc::bind(
                fd.0,
                (&sa as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        })?;
        Ok(PacketSocket { fd, ifindex })
    }

    /// Sends IPv4 packet `p` to the link's broadcast address.
    pub fn send_broadcast(&self, p: &[u8]) -> io::Result<()> {
        let sa = sockaddr_ll(self.ifindex, true);
        // SAFETY: `p` and `sa` are valid for the lengths passed.
        cvt(unsafe {
            libc::sendto(
                self.fd.0,
                p.as_ptr().cast(),
                p.len(),
                0,
                (&sa as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            ) as libc::c_int
        })?;
        Ok(())
    }

    /// The next IPv4 packet, or None when `wait` passes first.
    pub fn recv(&self, wait: Duration) -> io::Result<Option<Vec<u8>>> {
        let mut pfd = libc::pollfd {
            fd: self.fd.0,
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX).max(1);
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 {
            let err = io::Error::last_os_error();
            return if err.kind() == io::ErrorKind::Interrupted {
                Ok(None)
            } else {
                Err(err)
            };
        }
        if n == 0 {
            return Ok(None);
        }
        let mut buf = vec![0u8; 2048];
        // SAFETY: `buf` is writable for its length.
        let got = unsafe { libc::recv(self.fd.0, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if got < 0 {
            return Err(io::Error::last_os_error());
        }
        buf.truncate(got as usize);
        Ok(Some(buf))
    }
}
