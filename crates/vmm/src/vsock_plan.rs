//! Which vsock device a [`VmConfig`] asks for, and what the kernel must be told about TSI.
//!
//! Kept apart from the device manager so the rules (upstream libkrun's `krun_start_enter`
//! heuristics) are plain functions with unit tests:
//! - `krun_disable_implicit_vsock` without `krun_add_vsock`: no device;
//! - `krun_add_vsock(tsi_features)`: a device with exactly those features, the port map
//!   and the bridged ports;
//! - otherwise the implicit device: TSI hijacks AF_INET/AF_INET6 when the VM has no
//!   virtio-net interface (TSI is then the guest's only network), and the device exists at
//!   all only if TSI is on or some vsock port is bridged. Without TSI the port map means
//!   nothing and is dropped.

use std::net::{IpAddr, Ipv4Addr};

use devices::vsock::{
    PortMapping, TsiScope, VsockConfig, VsockPort, DEFAULT_GUEST_CID, TSI_HIJACK_INET,
    TSI_HIJACK_UNIX,
};

use crate::config::{self, VmConfig};

/// Kernel command line word that makes libkrunfw's kernel hijack inet sockets.
pub const TSI_HIJACK_INET_FLAG: &str = "tsi_hijack";
/// Kernel command line word that makes libkrunfw's kernel hijack unix sockets.
pub const TSI_HIJACK_UNIX_FLAG: &str = "tsi_hijack_unix";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VsockPlanError {
    #[error("invalid TSI scope subnet {0:?} (want ADDRESS/PREFIX)")]
    Subnet(String),
    #[error("invalid TSI guest IP {0:?} (want an IPv4 address)")]
    Ip(String),
}

/// The vsock device to create, or None.
pub fn plan(cfg: &VmConfig) -> Result<Option<VsockConfig>, VsockPlanError> {
    let v = &cfg.vsock;
    if !v.enabled {
        return Ok(None);
    }
    let (tsi_features, port_map) = match v.tsi_features {
        Some(features) => (features, v.port_map.clone()),
        None => {
            if !cfg.nets.is_empty() {
                if v.ports.is_empty() {
                    return Ok(None);
                }
                (0, None)
            } else {
                (TSI_HIJACK_INET, v.port_map.clone())
            }
        }
    };
    let tsi_scope = v.tsi_scope.as_ref().map(scope).transpose()?;
    Ok(Some(VsockConfig {
        guest_cid: DEFAULT_GUEST_CID,
        tsi_features,
        ports: v
            .ports
            .iter()
            .map(|p| VsockPort {
                port: p.port,
                path: p.path.clone(),
                listen: p.listen,
            })
            .collect(),
        port_map: port_map.map(|m| {
            m.iter()
                .map(|p| PortMapping {
                    host_port: p.host,
                    guest_port: p.guest,
                })
                .collect()
        }),
        tsi_scope,
    }))
}

/// The kernel command line words for `features`.
pub fn cmdline_flags(features: u32) -> Vec<&'static str> {
    let mut flags = Vec::new();
    if features & TSI_HIJACK_INET != 0 {
        flags.push(TSI_HIJACK_INET_FLAG);
    }
    if features & TSI_HIJACK_UNIX != 0 {
        flags.push(TSI_HIJACK_UNIX_FLAG);
    }
    flags
}

fn scope(s: &config::TsiScope) -> Result<TsiScope, VsockPlanError> {
    let subnet = match &s.subnet {
        Some(text) => Some(parse_subnet(text).ok_or_else(|| VsockPlanError::Subnet(text.clone()))?),
        None => None,
    };
    let ip = match &s.ip {
        Some(text) => Some(guest_ip(text).ok_or_else(|| VsockPlanError::Ip(text.clone()))?),
        None => None,
    };
    Ok(TsiScope {
        scope: s.scope,
        subnet,
        ip: ip.map(IpAddr::V4),
    })
}

fn guest_ip(text: &str) -> Option<Ipv4Addr> {
    text.parse().ok()
}

/// The `KRUN_TSI_IP=` word giving the guest's TSI interface `krun_set_tsi_scope`'s address,
/// when inet sockets are hijacked and an address was set. Its prefix is the scope subnet's
/// when the address lies in it, else 32 (the guest knows no other network).
pub fn tsi_ip_word(vsock: &VsockConfig) -> Option<String> {
    if vsock.tsi_features & TSI_HIJACK_INET == 0 {
        return None;
    }
    let scope = vsock.tsi_scope.as_ref()?;
    let Some(IpAddr::V4(ip)) = scope.ip else {
        return None;
    };
    let prefix = match scope.subnet {
        Some((_, len)) if scope.in_subnet(&IpAddr::V4(ip)) => len,
        _ => 32,
    };
    Some(format!(
        "{}={}",
        contract::keys::TSI_IP,
        contract::tsi_ip::format(ip, prefix)
    ))
}

/// Parses `ADDRESS/PREFIX` (the prefix no longer than the address).
fn parse_subnet(text: &str) -> Option<(IpAddr, u8)> {
    let (addr, len) = text.split_once('/')?;
    let addr: IpAddr = addr.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((addr, len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Net, NetBackend, PortMap};

    fn with_net(cfg: &mut VmConfig) {
        cfg.nets.push(Net {
            backend: NetBackend::Tap {
                name: "tap0".into(),
            },
            mac: [2, 0, 0, 0, 0, 1],
            features: 0,
            flags: 0,
        });
    }

    fn port(n: u32) -> config::VsockPort {
        config::VsockPort {
            port: n,
            path: "/tmp/s".into(),
            listen: false,
        }
    }

    #[test]
    fn plan_default_implicit_tsi_inet() {
        let cfg = VmConfig::default();
        let v = plan(&cfg).unwrap().unwrap();
        assert_eq!(v.tsi_features, TSI_HIJACK_INET);
        assert_eq!(v.guest_cid, 3);
        assert_eq!(cmdline_flags(v.tsi_features), vec!["tsi_hijack"]);
    }

    #[test]
    fn plan_implicit_with_net_and_no_ports_none() {
        let mut cfg = VmConfig::default();
        with_net(&mut cfg);
        assert_eq!(plan(&cfg).unwrap(), None);
    }

    #[test]
    fn plan_implicit_with_net_and_ports_no_tsi_no_map() {
        let mut cfg = VmConfig::default();
        with_net(&mut cfg);
        cfg.vsock.ports.push(port(5000));
        cfg.vsock.port_map = Some(vec![PortMap {
            host: 8080,
            guest: 80,
        }]);
        let v = plan(&cfg).unwrap().unwrap();
        assert_eq!(v.tsi_features, 0);
        assert_eq!(v.port_map, None);
        assert_eq!(v.ports.len(), 1);
    }

    #[test]
    fn plan_disabled_none() {
        let mut cfg = VmConfig::default();
        cfg.disable_implicit_vsock();
        assert_eq!(plan(&cfg).unwrap(), None);
    }

    #[test]
    fn plan_explicit_features_and_map_kept() {
        let mut cfg = VmConfig::default();
        cfg.disable_implicit_vsock();
        cfg.add_vsock(TSI_HIJACK_INET | TSI_HIJACK_UNIX).unwrap();
        cfg.set_port_map(&["8080:80".to_string()]).unwrap();
        with_net(&mut cfg);
        let v = plan(&cfg).unwrap().unwrap();
        assert_eq!(v.tsi_features, 3);
        assert_eq!(
            v.port_map,
            Some(vec![PortMapping {
                host_port: 8080,
                guest_port: 80
            }])
        );
        assert_eq!(
            cmdline_flags(v.tsi_features),
            vec!["tsi_hijack", "tsi_hijack_unix"]
        );
    }

    #[test]
    fn plan_explicit_zero_no_flags() {
        let mut cfg = VmConfig::default();
        cfg.disable_implicit_vsock();
        cfg.add_vsock(0).unwrap();
        let v = plan(&cfg).unwrap().unwrap();
        assert_eq!(v.tsi_features, 0);
        assert!(cmdline_flags(0).is_empty());
    }

    #[test]
    fn plan_scope_subnet_parsed() {
        let mut cfg = VmConfig::default();
        cfg.vsock.tsi_scope = Some(config::TsiScope {
            ip: None,
            subnet: Some("10.1.0.0/16".into()),
            scope: 1,
        });
        let s = plan(&cfg).unwrap().unwrap().tsi_scope.unwrap();
        assert_eq!(s.scope, 1);
        assert_eq!(s.subnet, Some(("10.1.0.0".parse().unwrap(), 16)));
    }

    #[test]
    fn tsi_ip_word_takes_the_subnet_prefix_when_it_contains_the_address() {
        let mut cfg = VmConfig::default();
        cfg.vsock.tsi_scope = Some(config::TsiScope {
            ip: Some("10.1.2.3".into()),
            subnet: Some("10.1.0.0/16".into()),
            scope: 1,
        });
        let v = plan(&cfg).unwrap().unwrap();
        assert_eq!(
            v.tsi_scope.as_ref().unwrap().ip,
            Some("10.1.2.3".parse().unwrap())
        );
        assert_eq!(tsi_ip_word(&v).as_deref(), Some("KRUN_TSI_IP=10.1.2.3/16"));
        cfg.vsock.tsi_scope.as_mut().unwrap().subnet = Some("192.168.0.0/24".into());
        let v = plan(&cfg).unwrap().unwrap();
        assert_eq!(tsi_ip_word(&v).as_deref(), Some("KRUN_TSI_IP=10.1.2.3/32"));
        // Without inet hijacking the guest has no TSI interface.
        let mut v = v;
        v.tsi_features = 0;
        assert_eq!(tsi_ip_word(&v), None);
    }

    #[test]
    fn parse_subnet_bad_prefix_none() {
        assert_eq!(parse_subnet("10.0.0.0/33"), None);
        assert_eq!(parse_subnet("10.0.0.0"), None);
        assert_eq!(parse_subnet("::/128"), Some(("::".parse().unwrap(), 128)));
    }
}
