//! `VmBuilder`: a VM described section by section, each setter checked as it is called.
//!
//! Each section (`machine`, `kernel`, `fs`, `vsock`, `console`, `exec`) is a closure over a
//! small builder. A setter applies its value to the configuration at once, through the same
//! validating calls the C API uses, so an error names the setter that caused it; the first
//! error is kept and [`VmBuilder::build`] returns it.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use vmm::config::{
    ConfigError, ConsolePort, FsShare, TsiScope, VirtioConsole, VmConfig, VsockPort,
};

use crate::error::BuildError;

mod devices;
pub use devices::{
    DiskBuilder, DiskFormat, DiskOptions, DiskSync, NetBuilder, Nic, Ownership, ShareOptions,
    ROOT_TAG,
};

/// The state every section builder works on.
#[derive(Debug, Default)]
struct Draft {
    config: VmConfig,
    /// The first error a setter returned.
    error: Option<BuildError>,
    /// Caller fds the consoles use: open until `build` has duplicated them.
    fds: Vec<OwnedFd>,
    /// Environment entries, `KEY=VALUE`; None: a clean environment.
    env: Vec<String>,
    inherit_env: bool,
    port_map: Vec<String>,
    /// Index of the multiport console `console.port` adds to.
    multiport: Option<u32>,
    embedded_init: bool,
}

impl Draft {
    fn keep(&mut self, setting: &'static str, result: Result<(), ConfigError>) {
        if let Err(source) = result {
            self.fail(BuildError::Invalid { setting, source });
        }
    }

    fn fail(&mut self, error: BuildError) {
        if self.error.is_none() {
            log::debug!("VmBuilder: {error}");
            self.error = Some(error);
        }
    }

    fn reject(&mut self, setting: &'static str, reason: impl Into<String>) {
        self.fail(BuildError::Value {
            setting,
            reason: reason.into(),
        });
    }

    /// Text that becomes a guest string (kernel command line or exec document): no NUL.
    fn text(&mut self, setting: &'static str, value: &str) -> bool {
        if value.contains('\0') {
            self.reject(setting, format!("{value:?} contains a NUL byte"));
            return false;
        }
        true
    }

    fn fd(&mut self, fd: impl Into<OwnedFd>) -> i32 {
        let fd = fd.into();
        let raw = fd.as_raw_fd();
        self.fds.push(fd);
        raw
    }
}

/// Builds a [`Vm`](crate::Vm): set the sections you need, then call [`build`](Self::build).
///
/// Defaults: 1 vCPU, 512 MiB of RAM, libkrunfw's kernel with the embedded init, the implicit
/// console on this process's stdin/stdout/stderr, the implicit vsock device with TSI (the
/// guest's inet sockets reach the host's network), and a clean environment. A root
/// filesystem is required.
///
/// ```
/// use krun_vm::VmBuilder;
///
/// let err = VmBuilder::new()
///     .machine(|m| m.vcpus(0))
///     .build()
///     .unwrap_err();
/// assert_eq!(err.to_string(), "machine.vcpus: vCPU count 0 is outside 1..=254");
/// ```
#[derive(Debug)]
pub struct VmBuilder {
    draft: Draft,
}

impl Default for VmBuilder {
    fn default() -> Self {
        Self::new()
    }
}

macro_rules! section {
    ($(#[$doc:meta])* $method:ident, $builder:ident) => {
        $(#[$doc])*
        pub fn $method(self, f: impl FnOnce($builder) -> $builder) -> Self {
            VmBuilder {
                draft: f($builder { draft: self.draft }).draft,
            }
        }
    };
}

impl VmBuilder {
    /// A builder with the defaults above.
    pub fn new() -> Self {
        VmBuilder {
            draft: Draft {
                embedded_init: true,
                ..Draft::default()
            },
        }
    }

    section!(
        /// vCPUs, memory, nested virtualization.
        machine,
        MachineBuilder
    );
    section!(
        /// The guest kernel and init.
        kernel,
        KernelBuilder
    );
    section!(
        /// The root filesystem and the other virtio-fs shares.
        fs,
        FsBuilder
    );
    section!(
        /// The virtio-blk disks, and a root on one of them.
        disk,
        DiskBuilder
    );
    section!(
        /// The virtio-net interfaces: passt, datagram proxies, taps, a peer in Rust code.
        net,
        NetBuilder
    );
    section!(
        /// The vsock device: TSI, ports bridged to host unix sockets, the port map.
        vsock,
        VsockBuilder
    );
    section!(
        /// The consoles: where the guest's console and the workload's stdio go.
        console,
        ConsoleBuilder
    );
    section!(
        /// The workload: program, arguments, environment, working directory, limits, ids.
        exec,
        ExecBuilder
    );

    /// Checks what the setters could not check alone (a root is set; the RAM holds the
    /// kernel; the host allows the vCPUs) and creates the VM: KVM, guest memory, kernel,
    /// devices and vCPUs. Nothing runs until [`Vm::run`](crate::Vm::run).
    pub fn build(self) -> Result<crate::Vm, BuildError> {
        let mut draft = self.draft;
        if let Some(error) = draft.error.take() {
            return Err(error);
        }
        let disk_root = draft.config.disks.iter().any(|d| d.id == "root")
            || draft.config.root_disk_remount.is_some();
        if draft.config.root_share().is_none() && draft.config.kernel.is_none() && !disk_root {
            return Err(BuildError::NoRoot);
        }
        let env = if draft.inherit_env {
            None
        } else {
            Some(std::mem::take(&mut draft.env))
        };
        draft
            .config
            .set_env(env)
            .map_err(|source| BuildError::Invalid {
                setting: "exec.env",
                source,
            })?;
        if !draft.port_map.is_empty() {
            let entries = std::mem::take(&mut draft.port_map);
            draft
                .config
                .set_port_map(&entries)
                .map_err(|source| BuildError::Invalid {
                    setting: "vsock.port_map",
                    source,
                })?;
        }
        if draft.config.krunfw.is_none() && draft.config.kernel.is_none() {
            let fw = vmm::krunfw::Krunfw::open().map_err(BuildError::Kernel)?;
            draft.config.krunfw = Some(std::sync::Arc::new(fw));
        }
        let max = vmm::host::max_vcpus().unwrap_or(vmm::host::VMM_MAX_VCPUS);
        let (vcpus, ram_mib) = (draft.config.vcpus, draft.config.ram_mib);
        draft
            .config
            .set_vm_config(vcpus, ram_mib, max)
            .map_err(|source| BuildError::Invalid {
                setting: "machine",
                source,
            })?;
        if draft.embedded_init {
            draft.config.init_binary = Some(crate::GUEST_INIT);
        }
        let built = crate::Vm::from_config(draft.config);
        // The consoles hold their own duplicates now.
        drop(draft.fds);
        built
    }
}

/// vCPUs, memory and nested virtualization ([`VmBuilder::machine`]).
#[derive(Debug)]
pub struct MachineBuilder {
    draft: Draft,
}

impl MachineBuilder {
    /// vCPUs: 1 to 254 (`build` also checks the host's KVM limit). Default 1.
    pub fn vcpus(mut self, count: u8) -> Self {
        let ram = self.draft.config.ram_mib;
        let r = self
            .draft
            .config
            .set_vm_config(count, ram, vmm::host::VMM_MAX_VCPUS);
        self.draft.keep("machine.vcpus", r);
        self
    }

    /// Guest RAM in MiB, more than 0 (`build` checks that it holds the kernel). Default 512.
    pub fn memory_mib(mut self, mib: u32) -> Self {
        let vcpus = self.draft.config.vcpus;
        let r = self
            .draft
            .config
            .set_vm_config(vcpus, mib, vmm::host::VMM_MAX_VCPUS);
        self.draft.keep("machine.memory_mib", r);
        self
    }

    /// Let [`VmHandle::request_shutdown`](crate::VmHandle::request_shutdown) reach the guest:
    /// the VM gets a `krun-shutdown` console port on which init, asked, sends SIGTERM to the
    /// workload (SIGKILL 10 s later), so the VM ends with the workload's own status. Off by
    /// default (the port costs a virtio-console device).
    pub fn shutdown_requests(mut self, enabled: bool) -> Self {
        if !enabled {
            self.draft.config.shutdown_eventfd = None;
        } else if let Err(e) = self.draft.config.shutdown_eventfd() {
            self.draft.reject(
                "machine.shutdown_requests",
                format!("cannot create an eventfd: {e}"),
            );
        }
        self
    }

    /// Expose the host's SVM/VMX to the guest. Where the host's KVM does not allow nesting
    /// the guest sees none, and one warning is logged. Default off.
    pub fn nested_virt(mut self, enabled: bool) -> Self {
        self.draft.config.nested_virt = enabled;
        self
    }
}

/// The guest kernel and init ([`VmBuilder::kernel`]).
///
/// The kernel is libkrunfw's (`libkrunfw.so.5`, found on the library path when `build`
/// runs) unless [`file`](Self::file) names one.
#[derive(Debug)]
pub struct KernelBuilder {
    draft: Draft,
}

/// The format of a kernel file ([`KernelBuilder::file`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelFormat {
    /// A bzImage (`KRUN_KERNEL_FORMAT_RAW`).
    BzImage,
    /// An uncompressed ELF vmlinux (`KRUN_KERNEL_FORMAT_ELF`).
    Elf,
    /// A gzip stream of a bzImage or vmlinux (`KRUN_KERNEL_FORMAT_IMAGE_GZ`).
    Gzip,
    /// A zstd stream of a bzImage or vmlinux (`KRUN_KERNEL_FORMAT_IMAGE_ZSTD`).
    Zstd,
}

impl KernelBuilder {
    /// Boot this kernel file instead of libkrunfw's, with an optional initramfs; `cmdline`
    /// replaces the base command line (as `krun_set_kernel` does). A file that is not in
    /// the declared format fails at `build`. Without a root share the guest runs whatever
    /// the kernel and initramfs run.
    pub fn file(
        mut self,
        path: impl AsRef<Path>,
        format: KernelFormat,
        initramfs: Option<&Path>,
        cmdline: Option<&str>,
    ) -> Self {
        let setting = "kernel.file";
        if cmdline.is_some_and(|c| !self.draft.text(setting, c)) {
            return self;
        }
        for p in std::iter::once(path.as_ref()).chain(initramfs) {
            if let Err(source) = std::fs::metadata(p) {
                self.draft.fail(BuildError::Path {
                    setting,
                    path: p.to_path_buf(),
                    source,
                });
                return self;
            }
        }
        let format = match format {
            KernelFormat::BzImage => vmm::config::KernelFormat::Raw,
            KernelFormat::Elf => vmm::config::KernelFormat::Elf,
            KernelFormat::Gzip => vmm::config::KernelFormat::ImageGz,
            KernelFormat::Zstd => vmm::config::KernelFormat::ImageZstd,
        };
        let r = self.draft.config.set_kernel(vmm::config::KernelFile {
            path: path.as_ref().to_path_buf(),
            format,
            initramfs: initramfs.map(Path::to_path_buf),
            cmdline: cmdline.map(str::to_string),
        });
        self.draft.keep(setting, r);
        self
    }

    /// Serve the crate's embedded init as `/init.krun` on the root share (default true).
    /// With false the root directory must bring its own `/init.krun`.
    pub fn embedded_init(mut self, enabled: bool) -> Self {
        self.draft.embedded_init = enabled;
        self.draft.config.implicit_init_disabled = !enabled;
        self
    }
}

/// The root filesystem and other virtio-fs shares ([`VmBuilder::fs`]).
#[derive(Debug)]
pub struct FsBuilder {
    draft: Draft,
}

/// An existing directory, or the error that says why not.
fn check_dir(setting: &'static str, path: &Path) -> Result<PathBuf, BuildError> {
    let error = |source| BuildError::Path {
        setting,
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(error)?;
    if !meta.is_dir() {
        return Err(error(std::io::Error::from(
            std::io::ErrorKind::NotADirectory,
        )));
    }
    Ok(path.to_path_buf())
}

impl FsBuilder {
    /// The host directory the guest mounts as `/` (virtio-fs). Required.
    pub fn root(mut self, dir: impl AsRef<Path>) -> Self {
        match check_dir("fs.root", dir.as_ref()) {
            Ok(path) => {
                let r = self.draft.config.set_root_dir(path);
                self.draft.keep("fs.root", r);
            }
            Err(e) => self.draft.fail(e),
        }
        self
    }

    /// Another host directory, mounted in the guest with `mount -t virtiofs TAG DIR`. The
    /// tag is 1 to 36 bytes and unique.
    pub fn share(self, tag: &str, dir: impl AsRef<Path>) -> Self {
        self.add_share("fs.share", tag, dir.as_ref(), false)
    }

    /// [`share`](Self::share), but every write the guest tries fails with `EROFS`.
    pub fn share_read_only(self, tag: &str, dir: impl AsRef<Path>) -> Self {
        self.add_share("fs.share_read_only", tag, dir.as_ref(), true)
    }

    fn add_share(mut self, setting: &'static str, tag: &str, dir: &Path, read_only: bool) -> Self {
        if !self.draft.text(setting, tag) {
            return self;
        }
        match check_dir(setting, dir) {
            Ok(path) => {
                let r = self.draft.config.add_fs_share(FsShare {
                    tag: tag.to_string(),
                    path: Some(path),
                    shm_size: 0,
                    read_only,
                    semantics: Default::default(),
                    layers: Vec::new(),
                    backend: None,
                });
                self.draft.keep(setting, r);
            }
            Err(e) => self.draft.fail(e),
        }
        self
    }
}

/// Which guest socket families TSI hands to the host ([`VsockBuilder::tsi`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Tsi {
    /// AF_INET/AF_INET6 sockets: the guest reaches the host's network (`KRUN_TSI_HIJACK_INET`).
    pub inet: bool,
    /// AF_UNIX sockets: guest connects reach host paths (`KRUN_TSI_HIJACK_UNIX`).
    pub unix: bool,
}

impl Tsi {
    fn bits(self) -> u32 {
        u32::from(self.inet) | u32::from(self.unix) << 1
    }
}

/// Which destinations TSI lets guest sockets reach ([`VsockBuilder::tsi_scope`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TsiReach {
    /// No destination at all.
    None,
    /// Only the given subnet (`ADDR/PREFIX`).
    Subnet,
    /// Public addresses (not private, loopback or link-local ones).
    Public,
    /// Any destination (upstream's default).
    Any,
}

/// The vsock device ([`VmBuilder::vsock`]).
#[derive(Debug)]
pub struct VsockBuilder {
    draft: Draft,
}

impl VsockBuilder {
    /// Replace the implicit device by one with exactly these TSI families (both false: a
    /// vsock device without TSI, for ports only). Call before adding ports.
    pub fn tsi(mut self, families: Tsi) -> Self {
        if !self.draft.config.vsock.enabled || self.draft.config.vsock.tsi_features.is_some() {
            self.draft
                .reject("vsock.tsi", "the vsock device is already configured");
            return self;
        }
        self.draft.config.disable_implicit_vsock();
        let r = self.draft.config.add_vsock(families.bits());
        self.draft.keep("vsock.tsi", r);
        self
    }

    /// No vsock device at all (and so no TSI and no ports).
    pub fn disable(mut self) -> Self {
        self.draft.config.disable_implicit_vsock();
        self
    }

    /// Guest-initiated: the guest connects to vsock `port` (host CID 2) and reaches the host
    /// unix socket at `path`, where something must listen.
    pub fn port(self, port: u32, path: impl AsRef<Path>) -> Self {
        self.add_port("vsock.port", port, path.as_ref(), false)
    }

    /// Host-initiated: the VMM listens on a unix socket at `path`; each connection to it
    /// reaches the guest's listener on vsock `port`.
    pub fn listen_port(self, port: u32, path: impl AsRef<Path>) -> Self {
        self.add_port("vsock.listen_port", port, path.as_ref(), true)
    }

    fn add_port(mut self, setting: &'static str, port: u32, path: &Path, listen: bool) -> Self {
        let r = self.draft.config.add_vsock_port(VsockPort {
            port,
            path: path.to_path_buf(),
            listen,
        });
        self.draft.keep(setting, r);
        self
    }

    /// Expose the guest's TCP listener on `guest` as the host's 127.0.0.1:`host` (TSI).
    /// Once any mapping is set, only mapped guest ports are exposed.
    pub fn port_map(mut self, host: u16, guest: u16) -> Self {
        self.draft.port_map.push(format!("{host}:{guest}"));
        self
    }

    /// Which destinations guest sockets may reach through TSI; `subnet` (`ADDR/PREFIX`) is
    /// used with [`TsiReach::Subnet`].
    pub fn tsi_scope(self, reach: TsiReach, subnet: Option<&str>) -> Self {
        self.tsi_scope_with_ip(reach, subnet, None)
    }

    /// [`Self::tsi_scope`], and the guest's own IPv4 address `ip`: its TSI interface carries
    /// it, and guest listeners are exposed only when bound to it or to the wildcard.
    pub fn tsi_scope_with_ip(
        mut self,
        reach: TsiReach,
        subnet: Option<&str>,
        ip: Option<&str>,
    ) -> Self {
        let scope = match reach {
            TsiReach::None => 0,
            TsiReach::Subnet => 1,
            TsiReach::Public => 2,
            TsiReach::Any => 3,
        };
        let r = self.draft.config.set_tsi_scope(TsiScope {
            ip: ip.map(str::to_string),
            subnet: subnet.map(str::to_string),
            scope,
        });
        self.draft.keep("vsock.tsi_scope", r);
        self
    }
}

/// The consoles ([`VmBuilder::console`]).
///
/// By default the guest's console and the workload's stdio use this process's stdin, stdout
/// and stderr (a terminal among them becomes the guest's `hvc0`, in raw mode until the VM
/// ends). Several VMs in one process give each its own with [`stdio`](Self::stdio).
#[derive(Debug)]
pub struct ConsoleBuilder {
    draft: Draft,
}

impl ConsoleBuilder {
    /// The guest's console output (kernel messages, and the workload's output when no other
    /// console carries it) goes to this file, created or truncated, not to stdout.
    pub fn output(mut self, path: impl AsRef<Path>) -> Self {
        let r = self
            .draft
            .config
            .set_console_output(path.as_ref().to_path_buf());
        self.draft.keep("console.output", r);
        self
    }

    /// The workload's stdin, stdout and stderr are these fds (files, pipes, sockets or a
    /// terminal) instead of this process's; `None` for stdin gives it no input. Replaces
    /// the implicit console. The fds are duplicated by `build` and closed with the VM.
    pub fn stdio(
        mut self,
        stdin: Option<OwnedFd>,
        stdout: impl Into<OwnedFd>,
        stderr: impl Into<OwnedFd>,
    ) -> Self {
        let input_fd = stdin.map_or(-1, |fd| self.draft.fd(fd));
        let output_fd = self.draft.fd(stdout);
        let err_fd = self.draft.fd(stderr);
        self.draft.config.console.implicit_disabled = true;
        let r = self
            .draft
            .config
            .add_virtio_console(VirtioConsole::Default {
                input_fd,
                output_fd,
                err_fd,
            })
            .map(drop);
        self.draft.keep("console.stdio", r);
        self
    }

    /// No implicit console: the guest has only the consoles added here.
    pub fn disable_implicit(mut self) -> Self {
        self.draft.config.console.implicit_disabled = true;
        self
    }

    /// The `console=` device of the kernel command line (`hvc0`, `ttyS0`).
    pub fn kernel_console(mut self, name: &str) -> Self {
        let r = self.draft.config.set_kernel_console(name);
        self.draft.keep("console.kernel_console", r);
        self
    }

    /// A named port (`/dev/vport*p*`, name in `/sys/class/virtio-ports/*/name`) on one extra
    /// multiport console: guest writes go to `output`, `input` feeds guest reads.
    pub fn port(mut self, name: &str, input: Option<OwnedFd>, output: Option<OwnedFd>) -> Self {
        if name.is_empty() || !self.draft.text("console.port", name) {
            self.draft
                .reject("console.port", "a port name must not be empty");
            return self;
        }
        let id = match self.draft.multiport {
            Some(id) => id,
            None => match self
                .draft
                .config
                .add_virtio_console(VirtioConsole::Multiport(Vec::new()))
            {
                Ok(id) => {
                    self.draft.multiport = Some(id);
                    id
                }
                Err(source) => {
                    self.draft.fail(BuildError::Invalid {
                        setting: "console.port",
                        source,
                    });
                    return self;
                }
            },
        };
        let input_fd = input.map_or(-1, |fd| self.draft.fd(fd));
        let output_fd = output.map_or(-1, |fd| self.draft.fd(fd));
        let r = self.draft.config.add_console_port(
            id,
            ConsolePort::InOut {
                name: name.to_string(),
                input_fd,
                output_fd,
            },
        );
        self.draft.keep("console.port", r);
        self
    }
}

/// The workload ([`VmBuilder::exec`]).
#[derive(Debug)]
pub struct ExecBuilder {
    draft: Draft,
}

impl ExecBuilder {
    /// The program init runs (a path in the guest). Without one, init reads the workload
    /// from `/.krun_config.json` in the root (an OCI-style config, as crun writes it).
    pub fn path(mut self, program: &str) -> Self {
        if self.draft.text("exec.path", program) {
            let args = std::mem::take(&mut self.draft.config.exec.args);
            let env = self.draft.config.exec.env.take();
            let r = self.draft.config.set_exec(program.to_string(), args, env);
            self.draft.keep("exec.path", r);
        }
        self
    }

    /// The arguments after the program name (replacing earlier ones).
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let args: Vec<String> = args.into_iter().map(|a| a.as_ref().to_string()).collect();
        if args.iter().all(|a| self.draft.text("exec.args", a)) {
            self.draft.config.exec.args = args;
        }
        self
    }

    /// One environment variable. The workload gets only the variables set here (init adds
    /// nothing of the host's) unless [`inherit_env`](Self::inherit_env) is called.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        if key.is_empty() || key.contains('=') {
            self.draft.reject(
                "exec.env",
                format!("{key:?} is not a variable name (empty or with '=')"),
            );
        } else if self.draft.text("exec.env", key) && self.draft.text("exec.env", value) {
            self.draft.env.push(format!("{key}={value}"));
        }
        self
    }

    /// The workload gets this process's environment as it is when `build` runs (what the C
    /// API does for a NULL `envp`); `env` entries are then ignored.
    pub fn inherit_env(mut self) -> Self {
        self.draft.inherit_env = true;
        self
    }

    /// The working directory in the guest (default `/`).
    pub fn workdir(mut self, dir: &str) -> Self {
        if self.draft.text("exec.workdir", dir) {
            let r = self.draft.config.set_workdir(dir.to_string());
            self.draft.keep("exec.workdir", r);
        }
        self
    }

    /// A resource limit for the workload: `resource` is a Linux number or an `RLIMIT_*` name
    /// (with or without the prefix), `soft <= hard`. Adds to earlier ones.
    pub fn rlimit(mut self, resource: &str, soft: u64, hard: u64) -> Self {
        let mut entries = self.draft.config.exec.rlimits.clone();
        entries.push(format!("{resource}={soft}:{hard}"));
        let r = self.draft.config.set_rlimits(&entries);
        self.draft.keep("exec.rlimit", r);
        self
    }

    /// The user id the workload runs as in the guest (init switches to it before exec).
    pub fn uid(mut self, uid: u32) -> Self {
        if uid == u32::MAX {
            self.draft.reject("exec.uid", "-1 is not a user id");
        } else {
            self.draft.config.exec.uid = Some(uid);
        }
        self
    }

    /// The group id the workload runs as in the guest.
    pub fn gid(mut self, gid: u32) -> Self {
        if gid == u32::MAX {
            self.draft.reject("exec.gid", "-1 is not a group id");
        } else {
            self.draft.config.exec.gid = Some(gid);
        }
        self
    }
}

#[cfg(test)]
mod tests;
