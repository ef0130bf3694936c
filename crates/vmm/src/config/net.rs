//! Networking: virtio-net interfaces, the vsock device, TSI and port maps.

use std::path::PathBuf;

use super::{check_fd, check_mac, non_empty, ConfigError, VmConfig};

/// A virtio-net device backed by a host socket or tap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetBackend {
    UnixStream {
        path: Option<PathBuf>,
        fd: Option<i32>,
    },
    UnixGram {
        path: Option<PathBuf>,
        fd: Option<i32>,
    },
    Tap {
        name: String,
    },
    /// `krun_set_passt_fd`.
    Passt {
        fd: i32,
    },
    /// `krun_set_gvproxy_path`.
    Gvproxy {
        path: PathBuf,
    },
    /// A peer in the embedding program's own code (the Rust API's `net.backend`).
    Custom(CustomNet),
}

/// A [`devices::net::FrameBackend`] waiting in a config: taken by the first VM built from
/// it (a peer serves one interface), compared by identity.
#[derive(Clone)]
pub struct CustomNet(
    pub std::sync::Arc<std::sync::Mutex<Option<Box<dyn devices::net::FrameBackend>>>>,
);

impl CustomNet {
    /// Wraps `peer` for [`Net::backend`].
    pub fn new(peer: Box<dyn devices::net::FrameBackend>) -> Self {
        CustomNet(std::sync::Arc::new(std::sync::Mutex::new(Some(peer))))
    }

    /// The peer, once: None when a VM already took it.
    pub fn take(&self) -> Option<Box<dyn devices::net::FrameBackend>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

impl std::fmt::Debug for CustomNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CustomNet@{:p}", std::sync::Arc::as_ptr(&self.0))
    }
}

impl PartialEq for CustomNet {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for CustomNet {}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Net {
    pub backend: NetBackend,
    pub mac: [u8; 6],
    pub features: u32,
    pub flags: u32,
}

/// A host port forwarded to a guest port by TSI (`krun_set_port_map`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortMap {
    pub host: u16,
    pub guest: u16,
}

/// A vsock port bridged to a host unix socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VsockPort {
    pub port: u32,
    pub path: PathBuf,
    /// true: the VMM listens on `path` and connects to the guest; false: the guest connects.
    pub listen: bool,
}

/// TSI destinations guest sockets may reach (`krun_set_tsi_scope`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TsiScope {
    pub ip: Option<String>,
    pub subnet: Option<String>,
    pub scope: u8,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vsock {
    /// false after `krun_disable_implicit_vsock` without `krun_add_vsock`.
    pub enabled: bool,
    /// `KRUN_TSI_HIJACK_*` bits; None: the implicit device's heuristics (upstream: INET
    /// hijack unless a virtio-net device is configured).
    pub tsi_features: Option<u32>,
    pub ports: Vec<VsockPort>,
    /// None: every guest listener is exposed; Some(empty): none.
    pub port_map: Option<Vec<PortMap>>,
    pub tsi_scope: Option<TsiScope>,
}

impl Default for Vsock {
    fn default() -> Self {
        Vsock {
            enabled: true,
            tsi_features: None,
            ports: Vec::new(),
            port_map: None,
            tsi_scope: None,
        }
    }
}

/// MAC of the legacy interface when the caller sets none (upstream's default).
pub const DEFAULT_LEGACY_MAC: [u8; 6] = [0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xee];

/// `NET_FLAG_VFKIT`: send vfkit's magic after connecting (unixgram paths only).
pub const NET_FLAG_VFKIT: u32 = 1 << 0;
/// `NET_FLAG_DHCP_CLIENT`: init runs a DHCP client on the interface.
pub const NET_FLAG_DHCP_CLIENT: u32 = 1 << 1;
/// Every `NET_FEATURE_*` bit (virtio-net feature bits libkrun lets callers request).
pub const NET_ALL_FEATURES: u32 =
    1 << 0 | 1 << 1 | 1 << 7 | 1 << 8 | 1 << 10 | 1 << 11 | 1 << 12 | 1 << 14;
/// Features of the legacy passt/gvproxy interface (`COMPAT_NET_FEATURES`).
pub const NET_COMPAT_FEATURES: u32 = 1 << 0 | 1 << 1 | 1 << 7 | 1 << 10 | 1 << 11 | 1 << 14;
const NET_FEATURE_GUEST_CSUM: u32 = 1 << 1;
const NET_GUEST_OFFLOADS: u32 = 1 << 7 | 1 << 8 | 1 << 10;
/// The longest interface name Linux takes (IFNAMSIZ - 1).
pub const MAX_TAP_NAME_LEN: usize = 15;
/// Every `KRUN_TSI_HIJACK_*` bit.
pub const TSI_ALL_FEATURES: u32 = 1 << 0 | 1 << 1;

/// Parses `HOST:GUEST`.
pub fn parse_port_map(entry: &str) -> Result<PortMap, ConfigError> {
    let bad = || ConfigError::PortMapEntry(entry.to_string());
    let (host, guest) = entry.split_once(':').ok_or_else(bad)?;
    Ok(PortMap {
        host: host.parse().map_err(|_| bad())?,
        guest: guest.parse().map_err(|_| bad())?,
    })
}

impl VmConfig {
    fn vsock_enabled(&self) -> Result<(), ConfigError> {
        if !self.vsock.enabled {
            return Err(ConfigError::VsockDisabled);
        }
        Ok(())
    }

    /// `krun_set_port_map`: no host port and no guest port may appear twice.
    pub fn set_port_map(&mut self, entries: &[String]) -> Result<(), ConfigError> {
        let mut map: Vec<PortMap> = Vec::with_capacity(entries.len());
        for entry in entries {
            let pm = parse_port_map(entry)?;
            if let Some(dup) = map
                .iter()
                .find(|m| m.host == pm.host || m.guest == pm.guest)
            {
                let port = if dup.host == pm.host {
                    pm.host
                } else {
                    pm.guest
                };
                return Err(ConfigError::DuplicatePort(port));
            }
            map.push(pm);
        }
        self.vsock_enabled()?;
        self.vsock.port_map = Some(map);
        Ok(())
    }

    /// `krun_add_vsock_port*`.
    pub fn add_vsock_port(&mut self, port: VsockPort) -> Result<(), ConfigError> {
        non_empty(&port.path.to_string_lossy(), "vsock socket path")?;
        self.vsock_enabled()?;
        if self.vsock.ports.iter().any(|p| p.port == port.port) {
            return Err(ConfigError::DuplicateVsockPort(port.port));
        }
        self.vsock.ports.push(port);
        Ok(())
    }

    /// `krun_disable_implicit_vsock`.
    pub fn disable_implicit_vsock(&mut self) {
        self.vsock.enabled = false;
        self.vsock.tsi_features = None;
    }

    /// `krun_add_vsock`: only after `krun_disable_implicit_vsock`, and only once.
    pub fn add_vsock(&mut self, tsi_features: u32) -> Result<(), ConfigError> {
        if tsi_features & !TSI_ALL_FEATURES != 0 {
            return Err(ConfigError::TsiFeatures(tsi_features));
        }
        if self.vsock.enabled {
            return Err(ConfigError::VsockExists);
        }
        self.vsock.enabled = true;
        self.vsock.tsi_features = Some(tsi_features);
        Ok(())
    }

    /// `krun_set_tsi_scope`: `ip` an IPv4 address, `subnet` an `ADDR/PREFIX` network.
    pub fn set_tsi_scope(&mut self, scope: TsiScope) -> Result<(), ConfigError> {
        if scope.scope > 3 {
            return Err(ConfigError::TsiScope(scope.scope));
        }
        // The guest's TSI interface (dummy0) is IPv4, as in microsandbox's fork.
        if let Some(ip) = &scope.ip {
            if ip.parse::<std::net::Ipv4Addr>().is_err() {
                return Err(ConfigError::Address {
                    what: "TSI IP",
                    value: ip.clone(),
                });
            }
        }
        if let Some(subnet) = &scope.subnet {
            let ok = subnet.split_once('/').is_some_and(|(addr, prefix)| {
                match (addr.parse::<std::net::IpAddr>(), prefix.parse::<u8>()) {
                    (Ok(std::net::IpAddr::V4(_)), Ok(p)) => p <= 32,
                    (Ok(std::net::IpAddr::V6(_)), Ok(p)) => p <= 128,
                    _ => false,
                }
            });
            if !ok {
                return Err(ConfigError::Address {
                    what: "TSI subnet",
                    value: subnet.clone(),
                });
            }
        }
        self.vsock.tsi_scope = Some(scope);
        Ok(())
    }

    fn is_legacy(net: &Net) -> bool {
        matches!(
            net.backend,
            NetBackend::Passt { .. } | NetBackend::Gvproxy { .. }
        )
    }

    /// `krun_add_net_*`: one more virtio-net interface (eth0, eth1, ... in call order).
    pub fn add_net(&mut self, net: Net) -> Result<(), ConfigError> {
        if net.features & !NET_ALL_FEATURES != 0 {
            return Err(ConfigError::NetFeatures(net.features & !NET_ALL_FEATURES));
        }
        let allowed = match &net.backend {
            NetBackend::UnixGram { path: Some(_), .. } => NET_FLAG_VFKIT | NET_FLAG_DHCP_CLIENT,
            _ => NET_FLAG_DHCP_CLIENT,
        };
        if net.flags & !allowed != 0 {
            return Err(ConfigError::NetFlags(net.flags & !allowed));
        }
        match &net.backend {
            NetBackend::UnixStream { path, fd } | NetBackend::UnixGram { path, fd } => {
                if path.is_some() == fd.is_some() {
                    return Err(ConfigError::NetEndpoint);
                }
                if let Some(fd) = fd {
                    check_fd(*fd)?;
                }
            }
            NetBackend::Tap { name } => {
                non_empty(name, "tap name")?;
                if name.len() > MAX_TAP_NAME_LEN || name.contains('/') {
                    return Err(ConfigError::TapName(name.clone()));
                }
                if net.features & NET_GUEST_OFFLOADS != 0
                    && net.features & NET_FEATURE_GUEST_CSUM == 0
                {
                    return Err(ConfigError::TapNeedsGuestCsum);
                }
            }
            NetBackend::Passt { .. } | NetBackend::Gvproxy { .. } | NetBackend::Custom(_) => {}
        }
        check_mac(net.mac)?;
        if self.nets.iter().any(Self::is_legacy) {
            return Err(ConfigError::LegacyNet(self.nets.len()));
        }
        self.nets.push(net);
        Ok(())
    }

    /// `krun_set_passt_fd` / `krun_set_gvproxy_path`: the single legacy interface. It
    /// replaces an earlier legacy interface and conflicts with `krun_add_net_*` ones.
    pub fn set_legacy_net(&mut self, backend: NetBackend) -> Result<(), ConfigError> {
        match &backend {
            NetBackend::Passt { fd } => check_fd(*fd)?,
            NetBackend::Gvproxy { path } => non_empty(&path.to_string_lossy(), "gvproxy path")?,
            _ => return Err(ConfigError::NetEndpoint),
        }
        if self.nets.iter().any(|n| !Self::is_legacy(n)) {
            return Err(ConfigError::LegacyNet(self.nets.len()));
        }
        self.nets = vec![Net {
            backend,
            mac: self.legacy_net_mac.unwrap_or(DEFAULT_LEGACY_MAC),
            features: NET_COMPAT_FEATURES,
            flags: 0,
        }];
        Ok(())
    }

    /// `krun_set_net_mac`: the MAC of the legacy interface, set before or after it.
    pub fn set_legacy_net_mac(&mut self, mac: [u8; 6]) -> Result<(), ConfigError> {
        check_mac(mac)?;
        self.legacy_net_mac = Some(mac);
        for net in self.nets.iter_mut().filter(|n| Self::is_legacy(n)) {
            net.mac = mac;
        }
        Ok(())
    }
}
