//! The virtio-net interfaces the VMM lists in `KRUN_NET` (contract::nics): each is found by
//! its MAC, brought up, and, when marked `+dhcp`, configured by a short DHCP exchange
//! (address, netmask, default route, MTU, and DNS in /etc/resolv.conf when that is
//! writable). DHCP gives up after [`DHCP_DEADLINE`], so a silent network never holds the
//! workload back for long; the interface then stays up without an address.

mod dhcp;
mod packet;
mod sys;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use contract::nics::Nic;

use crate::exec::describe;

/// How long one interface's DHCP exchange may take in all.
pub const DHCP_DEADLINE: Duration = Duration::from_secs(5);
/// How long to wait for an answer before sending again.
const RETRANSMIT: Duration = Duration::from_millis(700);
/// How long an interface may take to appear (the driver probes during boot).
const APPEAR_DEADLINE: Duration = Duration::from_secs(2);
const RESOLV_CONF: &str = "/etc/resolv.conf";

/// Brings up every interface `KRUN_NET` names (the variable's value, if any).
pub fn configure_all(krun_net: Option<&str>) {
    let Some(value) = krun_net else {
        return;
    };
    for nic in contract::nics::parse(value) {
        configure(&nic);
    }
}

fn configure(nic: &Nic) {
    let Some(name) = find_interface(nic.mac) else {
        crate::diag!("no network interface has MAC {}", mac_text(nic.mac));
        return;
    };
    if let Err(err) = crate::net::set_interface_up(&name) {
        crate::diag!("cannot bring up {name}: {}", describe(&err));
        return;
    }
    if !nic.dhcp {
        return;
    }
    match run_dhcp(&name, nic.mac) {
        Ok(lease) => apply(&name, &lease),
        Err(why) => crate::diag!("DHCP on {name} gave up: {why}"),
    }
}

fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The interface whose address is `mac`, waiting a little for it to appear.
fn find_interface(mac: [u8; 6]) -> Option<String> {
    let want = mac_text(mac);
    let deadline = Instant::now() + APPEAR_DEADLINE;
    loop {
        if let Ok(entries) = std::fs::read_dir("/sys/class/net") {
            for entry in entries.flatten() {
                let addr =
                    std::fs::read_to_string(entry.path().join("address")).unwrap_or_default();
                if addr.trim() == want {
                    return entry.file_name().into_string().ok();
                }
            }
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// DISCOVER (rapid commit) then, unless the server committed at once, REQUEST; returns
/// the ACK.
fn run_dhcp(name: &str, mac: [u8; 6]) -> Result<dhcp::Lease, String> {
    let sock =
        sys::PacketSocket::open(name).map_err(|e| format!("packet socket: {}", describe(&e)))?;
    let deadline = Instant::now() + DHCP_DEADLINE;
    let xid = transaction_id(mac);
    let mut offer: Option<dhcp::Lease> = None;
    while Instant::now() < deadline {
        let msg = dhcp::request(mac, xid, offer.as_ref());
        let frame = packet::udp_broadcast(dhcp::CLIENT_PORT, dhcp::SERVER_PORT, &msg);
        sock.send_broadcast(&frame)
            .map_err(|e| format!("send: {}", describe(&e)))?;
        let resend_at = (Instant::now() + RETRANSMIT).min(deadline);
        while let Some(wait) = resend_at.checked_duration_since(Instant::now()) {
            let Some(datagram) = sock
                .recv(wait)
                .map_err(|e| format!("receive: {}", describe(&e)))?
            else {
                break;
            };
            let Some(payload) = packet::udp_payload(&datagram, dhcp::CLIENT_PORT) else {
                continue;
            };
            let Some(lease) = dhcp::parse_reply(payload, xid, mac) else {
                continue;
            };
            match lease.message_type {
                dhcp::ACK if lease.address.is_some() => return Ok(lease),
                dhcp::OFFER if offer.is_none() && lease.address.is_some() => {
                    offer = Some(lease);
                    break;
                }
                dhcp::NAK => {
                    offer = None;
                    break;
                }
                _ => {}
            }
        }
    }
    Err(format!("no answer within {DHCP_DEADLINE:?}"))
}

/// A transaction id that differs between boots and interfaces.
fn transaction_id(mac: [u8; 6]) -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    nanos ^ u32::from_be_bytes([mac[2], mac[3], mac[4], mac[5]])
}

fn apply(name: &str, lease: &dhcp::Lease) {
    let Some(address) = lease.address else {
        return;
    };
    let netmask = lease
        .netmask
        .unwrap_or_else(|| Ipv4Addr::new(255, 255, 255, 0));
    let result = crate::net::sys::Socket::inet().and_then(|s| {
        s.set_ipv4(libc::SIOCSIFADDR, name, address.octets())?;
        s.set_ipv4(libc::SIOCSIFNETMASK, name, netmask.octets())?;
        if let Some(mtu) = lease.mtu {
            if let Err(err) = s.set_mtu(name, mtu) {
                crate::diag!("cannot set the MTU of {name} to {mtu}: {}", describe(&err));
            }
        }
        if let Some(router) = lease.router {
            s.add_default_route(name, router.octets())?;
        }
        Ok(())
    });
    if let Err(err) = result {
        crate::diag!("cannot configure {name} with {address}: {}", describe(&err));
        return;
    }
    if !lease.dns.is_empty() {
        let text: String = lease
            .dns
            .iter()
            .map(|d| format!("nameserver {d}\n"))
            .collect();
        // A read-only root keeps its own resolver configuration: not an error.
        let _ = std::fs::write(RESOLV_CONF, text);
    }
}
