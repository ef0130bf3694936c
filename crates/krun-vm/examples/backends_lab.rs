//! Custom backends and devices through the builder: the lab program of
//! tests/e2e/cases/71-rust-api-backends.sh, and an example of each trait.
//!
//!   backends_lab memfs ROOT DIR       a share served from an in-memory tree ([`MemFs`]);
//!                                     afterwards the tree is written out under DIR/mem
//!   backends_lab arp ROOT DIR         a NIC whose far end is [`ArpPeer`], answering the
//!                                     guest's ARP request and ping for 10.0.2.2
//!   backends_lab disk ROOT IMAGE DIR  IMAGE as the guest's /dev/vda (serial `disk0`)
//!   backends_lab gram ROOT DIR        the same peer behind a unix datagram socket, the
//!                                     NIC added with `net.unix_gram`
//!   backends_lab files ROOT DATA DIR  a virtual file on the root, DATA shared read-only
//!   backends_lab layers LOWER TOP DIR the root as an overlay of LOWER under TOP
//!   backends_lab panic ROOT DIR       a peer ([`BrokenPeer`]) that panics on the guest's
//!                                     first IPv4 frame: `run` returns the device's error
//!                                     and this program goes on
//!
//! Each VM's stdout and stderr go to DIR/NAME.out and DIR/NAME.err; this program prints one
//! line per fact the case checks.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use krun_vm::{
    DirItem, DiskOptions, FrameBackend, FrameSender, FsBackend, Nic, NodeAttr, NodeKind, VmBuilder,
    ROOT_NODE,
};

// ---- an in-memory filesystem ---------------------------------------------------------------

/// One node of [`MemFs`].
struct Node {
    kind: NodeKind,
    perm: u32,
    data: Vec<u8>,
    children: BTreeMap<String, u64>,
}

/// A whole filesystem in a map from node id to node, behind one lock.
struct MemFs {
    nodes: Mutex<(BTreeMap<u64, Node>, u64)>,
}

fn errno(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

impl MemFs {
    fn new() -> Self {
        let root = Node {
            kind: NodeKind::Dir,
            perm: 0o755,
            data: Vec::new(),
            children: BTreeMap::new(),
        };
        MemFs {
            nodes: Mutex::new((BTreeMap::from([(ROOT_NODE, root)]), ROOT_NODE + 1)),
        }
    }

    fn attr(id: u64, n: &Node) -> NodeAttr {
        NodeAttr {
            node: id,
            kind: n.kind,
            size: n.data.len() as u64,
            perm: n.perm,
        }
    }

    fn add(
        &self,
        parent: u64,
        name: &str,
        kind: NodeKind,
        perm: u32,
        data: &[u8],
    ) -> io::Result<NodeAttr> {
        let mut guard = self.nodes.lock().unwrap();
        let (nodes, next) = &mut *guard;
        let dir = nodes.get(&parent).ok_or_else(|| errno(libc::ENOENT))?;
        if dir.kind != NodeKind::Dir {
            return Err(errno(libc::ENOTDIR));
        }
        if dir.children.contains_key(name) {
            return Err(errno(libc::EEXIST));
        }
        let id = *next;
        *next += 1;
        let node = Node {
            kind,
            perm,
            data: data.to_vec(),
            children: BTreeMap::new(),
        };
        let attr = Self::attr(id, &node);
        nodes.insert(id, node);
        nodes
            .get_mut(&parent)
            .expect("looked up above")
            .children
            .insert(name.to_string(), id);
        Ok(attr)
    }

    /// Writes the tree out below `dir` and lists its paths (directories end in `/`).
    fn dump(&self, dir: &Path) -> io::Result<Vec<String>> {
        let guard = self.nodes.lock().unwrap();
        let mut paths = Vec::new();
        let mut stack = vec![(ROOT_NODE, String::new())];
        while let Some((id, path)) = stack.pop() {
            let node = &guard.0[&id];
            for (name, child) in node.children.iter().rev() {
                let p = format!("{path}/{name}");
                match guard.0[child].kind {
                    NodeKind::Dir => {
                        std::fs::create_dir_all(dir.join(&p[1..]))?;
                        stack.push((*child, p));
                    }
                    NodeKind::File => std::fs::write(dir.join(&p[1..]), &guard.0[child].data)?,
                }
            }
            if !path.is_empty() {
                paths.push(format!("{path}/"));
            }
            paths.extend(
                node.children
                    .iter()
                    .filter(|(_, c)| guard.0[*c].kind == NodeKind::File)
                    .map(|(name, _)| format!("{path}/{name}")),
            );
        }
        paths.sort();
        Ok(paths)
    }
}

impl FsBackend for MemFs {
    fn lookup(&self, parent: u64, name: &str) -> io::Result<NodeAttr> {
        let guard = self.nodes.lock().unwrap();
        let dir = guard.0.get(&parent).ok_or_else(|| errno(libc::ENOENT))?;
        let id = dir.children.get(name).ok_or_else(|| errno(libc::ENOENT))?;
        Ok(Self::attr(*id, &guard.0[id]))
    }

    fn getattr(&self, node: u64) -> io::Result<NodeAttr> {
        let guard = self.nodes.lock().unwrap();
        let n = guard.0.get(&node).ok_or_else(|| errno(libc::ENOENT))?;
        Ok(Self::attr(node, n))
    }

    fn read_dir(&self, dir: u64) -> io::Result<Vec<DirItem>> {
        let guard = self.nodes.lock().unwrap();
        let d = guard.0.get(&dir).ok_or_else(|| errno(libc::ENOENT))?;
        Ok(d.children
            .iter()
            .map(|(name, id)| DirItem {
                name: name.clone(),
                node: *id,
                kind: guard.0[id].kind,
            })
            .collect())
    }

    fn read(&self, node: u64, offset: u64, size: u32) -> io::Result<Vec<u8>> {
        let guard = self.nodes.lock().unwrap();
        let n = guard.0.get(&node).ok_or_else(|| errno(libc::ENOENT))?;
        let start = (offset as usize).min(n.data.len());
        let end = start.saturating_add(size as usize).min(n.data.len());
        Ok(n.data[start..end].to_vec())
    }

    fn write(&self, node: u64, offset: u64, data: &[u8]) -> io::Result<usize> {
        let mut guard = self.nodes.lock().unwrap();
        let n = guard.0.get_mut(&node).ok_or_else(|| errno(libc::ENOENT))?;
        let end = offset as usize + data.len();
        if end > 64 << 20 {
            return Err(errno(libc::EFBIG));
        }
        if n.data.len() < end {
            n.data.resize(end, 0);
        }
        n.data[offset as usize..end].copy_from_slice(data);
        Ok(data.len())
    }

    fn create(&self, parent: u64, name: &str, perm: u32) -> io::Result<NodeAttr> {
        self.add(parent, name, NodeKind::File, perm, b"")
    }

    fn mkdir(&self, parent: u64, name: &str, perm: u32) -> io::Result<NodeAttr> {
        self.add(parent, name, NodeKind::Dir, perm, b"")
    }

    fn remove(&self, parent: u64, name: &str, dir: bool) -> io::Result<()> {
        let mut guard = self.nodes.lock().unwrap();
        let nodes = &mut guard.0;
        let id = *nodes
            .get(&parent)
            .and_then(|d| d.children.get(name))
            .ok_or_else(|| errno(libc::ENOENT))?;
        let node = &nodes[&id];
        match (node.kind, dir) {
            (NodeKind::Dir, false) => return Err(errno(libc::EISDIR)),
            (NodeKind::File, true) => return Err(errno(libc::ENOTDIR)),
            (NodeKind::Dir, true) if !node.children.is_empty() => {
                return Err(errno(libc::ENOTEMPTY))
            }
            _ => {}
        }
        nodes.remove(&id);
        nodes
            .get_mut(&parent)
            .expect("found above")
            .children
            .remove(name);
        Ok(())
    }

    fn set_size(&self, node: u64, size: u64) -> io::Result<NodeAttr> {
        let mut guard = self.nodes.lock().unwrap();
        let n = guard.0.get_mut(&node).ok_or_else(|| errno(libc::ENOENT))?;
        if size > 64 << 20 {
            return Err(errno(libc::EFBIG));
        }
        n.data.resize(size as usize, 0);
        Ok(Self::attr(node, n))
    }
}

// ---- a network peer that answers ARP and ping ---------------------------------------------

const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const PEER_IP: [u8; 4] = [10, 0, 2, 2];
const GUEST_MAC: [u8; 6] = [0x02, 0x4b, 0x52, 0x55, 0x4e, 0x01];

/// What the peer saw, for the report.
#[derive(Default)]
struct Seen {
    frames: usize,
    arp_request: Option<String>,
    echo_requests: usize,
}

/// Plays the host 10.0.2.2 on a one-wire Ethernet: answers ARP requests for its address
/// and ICMP echo requests to it; ignores everything else.
struct ArpPeer {
    to_guest: Option<FrameSender>,
    seen: Arc<Mutex<Seen>>,
}

fn mac(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn ip(b: &[u8]) -> String {
    b.iter().map(u8::to_string).collect::<Vec<_>>().join(".")
}

/// The 16-bit ones' complement checksum of `data`.
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

impl ArpPeer {
    fn arp(&mut self, f: &[u8]) -> Option<Vec<u8>> {
        let a = f.get(14..42)?;
        if u16::from_be_bytes([a[6], a[7]]) != 1 || a[24..28] != PEER_IP {
            return None;
        }
        let line = format!(
            "arp request: dst={} src={} type={:02x}{:02x} htype={} ptype={:02x}{:02x} hlen={} plen={} oper={} sha={} spa={} tha={} tpa={}",
            mac(&f[0..6]), mac(&f[6..12]), f[12], f[13],
            u16::from_be_bytes([a[0], a[1]]), a[2], a[3], a[4], a[5],
            u16::from_be_bytes([a[6], a[7]]),
            mac(&a[8..14]), ip(&a[14..18]), mac(&a[18..24]), ip(&a[24..28]),
        );
        self.seen.lock().unwrap().arp_request.get_or_insert(line);
        let mut reply = Vec::with_capacity(42);
        reply.extend_from_slice(&a[8..14]); // to the asker
        reply.extend_from_slice(&PEER_MAC);
        reply.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 2]);
        reply.extend_from_slice(&PEER_MAC);
        reply.extend_from_slice(&PEER_IP);
        reply.extend_from_slice(&a[8..18]); // the asker's MAC and IP
        Some(reply)
    }

    fn icmp(&mut self, f: &[u8]) -> Option<Vec<u8>> {
        let ihl = usize::from(*f.get(14)? & 0xf) * 4;
        let total = usize::from(u16::from_be_bytes([*f.get(16)?, *f.get(17)?]));
        let ip_hdr = f.get(14..14 + ihl)?;
        if ip_hdr[9] != 1 || ip_hdr[16..20] != PEER_IP || *f.get(14 + ihl)? != 8 {
            return None;
        }
        self.seen.lock().unwrap().echo_requests += 1;
        let mut reply = f.get(..14 + total)?.to_vec();
        reply[0..6].copy_from_slice(&f[6..12]);
        reply[6..12].copy_from_slice(&PEER_MAC);
        // Swapping the addresses leaves the IP header checksum as it is.
        reply[26..30].copy_from_slice(&f[30..34]);
        reply[30..34].copy_from_slice(&f[26..30]);
        let icmp = 14 + ihl;
        reply[icmp] = 0; // echo reply
        reply[icmp + 2..icmp + 4].fill(0);
        let sum = checksum(&reply[icmp..]);
        reply[icmp + 2..icmp + 4].copy_from_slice(&sum.to_be_bytes());
        Some(reply)
    }
}

impl ArpPeer {
    /// The peer's answer to `frame`, if it has one.
    fn answer(&mut self, frame: &[u8]) -> Option<Vec<u8>> {
        self.seen.lock().unwrap().frames += 1;
        match frame.get(12..14) {
            Some([0x08, 0x06]) => self.arp(frame),
            Some([0x08, 0x00]) => self.icmp(frame),
            _ => None,
        }
    }
}

impl FrameBackend for ArpPeer {
    fn start(&mut self, to_guest: FrameSender) {
        self.to_guest = Some(to_guest);
    }

    fn receive(&mut self, frame: &[u8]) {
        let reply = self.answer(frame);
        if let (Some(reply), Some(tx)) = (reply, &self.to_guest) {
            if let Err(e) = tx.send(&reply) {
                eprintln!("peer: cannot answer: {e}");
            }
        }
    }
}

/// [`ArpPeer`] with a bug: it panics on the first IPv4 frame (the guest's ping). A panic in
/// `receive` is a failure of the device: the VM stops and `Vm::run` returns
/// `VmError::Device` naming the interface, while this process goes on.
struct BrokenPeer(ArpPeer);

impl FrameBackend for BrokenPeer {
    fn start(&mut self, to_guest: FrameSender) {
        self.0.start(to_guest);
    }

    fn receive(&mut self, frame: &[u8]) {
        if frame.get(12..14) == Some(&[0x08, 0x00]) {
            panic!("BrokenPeer cannot take IPv4 frames");
        }
        self.0.receive(frame);
    }
}

// ---- the lab modes ---------------------------------------------------------------------------

fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Builds and runs one VM running `sh -c SCRIPT` with its stdio in DIR/NAME.*; prints its
/// status.
fn run(
    name: &str,
    root: &str,
    dir: &Path,
    script: &str,
    more: impl FnOnce(VmBuilder) -> VmBuilder,
) -> Result<(), String> {
    let out = File::create(dir.join(format!("{name}.out"))).map_err(|e| e.to_string())?;
    let err = File::create(dir.join(format!("{name}.err"))).map_err(|e| e.to_string())?;
    let builder = VmBuilder::new()
        .machine(|m| m.vcpus(1).memory_mib(256))
        .fs(|fs| fs.root(root))
        .console(|c| c.stdio(None, out, err))
        .exec(|e| e.path("/bin/sh").args(["-c", script]));
    let vm = more(builder)
        .build()
        .map_err(|e| format!("{name}: build: {}", chain(&e)))?;
    let status = vm
        .run()
        .map_err(|e| format!("{name}: run: {}", chain(&e)))?;
    println!("{name}: {status}");
    Ok(())
}

const MEMFS_SCRIPT: &str = "mount -t virtiofs mem /mnt || exit 10
cat /mnt/hello.txt /mnt/sub/deep.txt
printf 'guest wrote this\\n' >/mnt/new.txt || exit 11
mkdir /mnt/gdir && printf x >/mnt/gdir/f || exit 12
printf more >>/mnt/hello.txt || exit 13
rm /mnt/sub/deep.txt || exit 14
ls /mnt /mnt/sub
cat /mnt/new.txt
exit 3";

fn memfs(root: &str, dir: &Path) -> Result<(), String> {
    let fs = Arc::new(MemFs::new());
    let sub = fs
        .mkdir(ROOT_NODE, "sub", 0o755)
        .map_err(|e| e.to_string())?;
    fs.add(
        ROOT_NODE,
        "hello.txt",
        NodeKind::File,
        0o644,
        b"hello from rust\n",
    )
    .and_then(|_| fs.add(sub.node, "deep.txt", NodeKind::File, 0o644, b"deep\n"))
    .map_err(|e| e.to_string())?;
    let share = fs.clone();
    run("memfs", root, dir, MEMFS_SCRIPT, |b| {
        b.fs(|f| f.backend("mem", share))
    })?;
    let paths = fs.dump(&dir.join("mem")).map_err(|e| e.to_string())?;
    println!("tree: {}", paths.join(" "));
    Ok(())
}

const ARP_SCRIPT: &str = "ip addr add 10.0.2.15/24 dev eth0 || exit 10
ping -c 1 -W 10 10.0.2.2 >/dev/null 2>&1; echo \"ping=$?\"
awk '$1 == \"10.0.2.2\" {print $1, $3, $4, $6}' /proc/net/arp
exit 4";

fn arp(root: &str, dir: &Path) -> Result<(), String> {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let peer = ArpPeer {
        to_guest: None,
        seen: seen.clone(),
    };
    run("arp", root, dir, ARP_SCRIPT, |b| {
        b.net(|n| n.backend(peer, Nic::new(GUEST_MAC)))
    })?;
    let seen = seen.lock().unwrap();
    println!(
        "{}",
        seen.arp_request.as_deref().unwrap_or("arp request: none")
    );
    println!("echo requests: {}", seen.echo_requests);
    println!(
        "frames seen: {}",
        if seen.frames > 0 { "yes" } else { "no" }
    );
    Ok(())
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

const PANIC_SCRIPT: &str = "ip addr add 10.0.2.15/24 dev eth0 || exit 10
echo pinging
ping -c 1 -W 10 10.0.2.2 >/dev/null 2>&1
echo \"ping=$? (the VM was not stopped)\"
sleep 600
exit 4";

/// A VM whose peer panics: prints the error `run` returned, then goes on.
fn panic(root: &str, dir: &Path) -> Result<(), String> {
    let before = threads();
    println!("threads before: {before}");
    let peer = BrokenPeer(ArpPeer {
        to_guest: None,
        seen: Arc::new(Mutex::new(Seen::default())),
    });
    match run("panic", root, dir, PANIC_SCRIPT, |b| {
        b.net(|n| n.backend(peer, Nic::new(GUEST_MAC)))
    }) {
        Ok(()) => println!("panic: run returned a status, not an error"),
        Err(e) => println!("{e}"),
    }
    println!("after: this process goes on");
    println!("threads after: {}", threads());
    Ok(())
}

/// The same peer behind a unix datagram socket at DIR/peer.sock (gvproxy's shape), the
/// NIC added with `net.unix_gram`: one frame per datagram, answers to the sender.
fn gram(root: &str, dir: &Path) -> Result<(), String> {
    use std::os::unix::net::UnixDatagram;
    use std::sync::atomic::{AtomicBool, Ordering};
    let path = dir.join("peer.sock");
    let _ = std::fs::remove_file(&path);
    let sock = UnixDatagram::bind(&path).map_err(|e| format!("bind: {e}"))?;
    sock.set_read_timeout(Some(std::time::Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let done = Arc::new(AtomicBool::new(false));
    let mut peer = ArpPeer {
        to_guest: None,
        seen: seen.clone(),
    };
    let stop = done.clone();
    let thread = std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while !stop.load(Ordering::Relaxed) {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                continue;
            };
            let (Some(reply), Some(to)) = (peer.answer(&buf[..n]), from.as_pathname()) else {
                continue;
            };
            if let Err(e) = sock.send_to(&reply, to) {
                eprintln!("peer: cannot answer: {e}");
            }
        }
    });
    let result = run("gram", root, dir, ARP_SCRIPT, |b| {
        b.net(|n| n.unix_gram(&path, false, Nic::new(GUEST_MAC)))
    });
    done.store(true, Ordering::Relaxed);
    let _ = thread.join();
    result?;
    let seen = seen.lock().unwrap();
    println!(
        "{}",
        seen.arp_request.as_deref().unwrap_or("arp request: none")
    );
    println!("echo requests: {}", seen.echo_requests);
    Ok(())
}

const FILES_SCRIPT: &str = "cat /etc/krun-motd
mount -t virtiofs data /mnt || exit 10
cat /mnt/host.txt
touch /mnt/new.txt 2>&1; echo \"touch=$?\"
exit 6";

/// A virtual file on the root and a read-only share through `fs.share_with`.
fn files(root: &str, data: &str, dir: &Path) -> Result<(), String> {
    use krun_vm::{ShareOptions, ROOT_TAG};
    let opts = ShareOptions {
        read_only: true,
        ..ShareOptions::default()
    };
    run("files", root, dir, FILES_SCRIPT, |b| {
        b.fs(|f| {
            f.virtual_file(ROOT_TAG, "etc/krun-motd", "virtual bytes\n", 0o444)
                .share_with("data", data, opts)
        })
    })
}

const LAYERS_SCRIPT: &str = "printf 'top bytes\\n' >/made-in-guest || exit 10
cat /made-in-guest
ls /bin/busybox
exit 8";

/// The root as an overlay: LOWER (read-only) under TOP (writable), through
/// `fs.overlay_root`.
fn layers(lower: &str, top: &str, dir: &Path) -> Result<(), String> {
    let out = File::create(dir.join("layers.out")).map_err(|e| e.to_string())?;
    let err = File::create(dir.join("layers.err")).map_err(|e| e.to_string())?;
    let vm = VmBuilder::new()
        .machine(|m| m.vcpus(1).memory_mib(256))
        .fs(|fs| fs.overlay_root([lower, top]))
        .console(|c| c.stdio(None, out, err))
        .exec(|e| e.path("/bin/sh").args(["-c", LAYERS_SCRIPT]))
        .build()
        .map_err(|e| format!("layers: build: {}", chain(&e)))?;
    let status = vm
        .run()
        .map_err(|e| format!("layers: run: {}", chain(&e)))?;
    println!("layers: {status}");
    Ok(())
}

const DISK_SCRIPT: &str = "printf '<serial='; cat /sys/block/vda/serial; printf '>\\n'
head -c 16 /dev/vda; echo
printf written-by-guest | dd of=/dev/vda bs=512 seek=1 conv=fsync 2>/dev/null; echo \"dd=$?\"
exit 5";

fn disk(root: &str, image: &str, dir: &Path) -> Result<(), String> {
    run("disk", root, dir, DISK_SCRIPT, |b| {
        b.disk(|d| d.add("disk0", image, DiskOptions::default()))
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["memfs", root, dir] => memfs(root, Path::new(dir)),
        ["arp", root, dir] => arp(root, Path::new(dir)),
        ["disk", root, image, dir] => disk(root, image, Path::new(dir)),
        ["gram", root, dir] => gram(root, Path::new(dir)),
        ["layers", lower, top, dir] => layers(lower, top, Path::new(dir)),
        ["files", root, data, dir] => files(root, data, Path::new(dir)),
        ["panic", root, dir] => panic(root, Path::new(dir)),
        _ => Err("usage: backends_lab memfs|arp|gram|panic ROOT DIR | disk ROOT IMAGE DIR | files ROOT DATA DIR".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("backends_lab: {e}");
            ExitCode::FAILURE
        }
    }
}
