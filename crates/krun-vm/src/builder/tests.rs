//! Builder validation: each setter's error names the setter; `build` returns the first.

use super::*;
use std::sync::Arc;

fn build_error(b: VmBuilder) -> BuildError {
    b.build().expect_err("the builder must refuse this")
}

fn tmp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("krun-vm-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn vcpus_zero_refused_naming_setter() {
    let err = build_error(VmBuilder::new().machine(|m| m.vcpus(0)));
    assert!(
        matches!(
            err,
            BuildError::Invalid {
                setting: "machine.vcpus",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "machine.vcpus: vCPU count 0 is outside 1..=254"
    );
}

#[test]
fn memory_zero_refused() {
    let err = build_error(VmBuilder::new().machine(|m| m.memory_mib(0)));
    assert_eq!(
        err.to_string(),
        "machine.memory_mib: RAM size must be greater than 0 MiB"
    );
}

#[test]
fn first_error_wins_and_later_setters_still_apply() {
    let b = VmBuilder::new()
        .machine(|m| m.vcpus(0).memory_mib(0).vcpus(2))
        .exec(|e| e.workdir(""));
    assert_eq!(b.draft.config.vcpus, 2);
    assert!(matches!(
        build_error(b),
        BuildError::Invalid {
            setting: "machine.vcpus",
            ..
        }
    ));
}

#[test]
fn missing_root_dir_is_path_error_not_found() {
    let err = build_error(VmBuilder::new().fs(|f| f.root("/nonexistent/krun-vm-root")));
    match err {
        BuildError::Path {
            setting, source, ..
        } => {
            assert_eq!(setting, "fs.root");
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn root_that_is_a_file_is_not_a_directory() {
    let dir = tmp_dir("file-root");
    let file = dir.join("f");
    std::fs::write(&file, b"x").unwrap();
    let err = build_error(VmBuilder::new().fs(|f| f.root(&file)));
    assert!(
        matches!(&err, BuildError::Path { source, .. } if source.kind() == std::io::ErrorKind::NotADirectory),
        "{err:?}"
    );
}

#[test]
fn no_root_refused_at_build() {
    assert!(matches!(build_error(VmBuilder::new()), BuildError::NoRoot));
}

#[test]
fn duplicate_share_tag_refused() {
    let dir = tmp_dir("dup");
    let err =
        build_error(VmBuilder::new().fs(|f| f.share("data", &dir).share_read_only("data", &dir)));
    assert!(
        matches!(
            &err,
            BuildError::Invalid { setting: "fs.share_read_only", source: ConfigError::DuplicateFsTag(t) } if t == "data"
        ),
        "{err:?}"
    );
}

#[test]
fn long_share_tag_refused() {
    let dir = tmp_dir("long");
    let tag = "t".repeat(37);
    let err = build_error(VmBuilder::new().fs(|f| f.share(&tag, &dir)));
    assert!(
        matches!(
            err,
            BuildError::Invalid {
                source: ConfigError::FsTagLength { len: 37, .. },
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn env_key_with_equals_refused() {
    let err = build_error(VmBuilder::new().exec(|e| e.env("A=B", "c")));
    assert!(
        matches!(
            err,
            BuildError::Value {
                setting: "exec.env",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn nul_in_argument_refused() {
    let err = build_error(VmBuilder::new().exec(|e| e.args(["ok", "bad\0"])));
    assert!(
        matches!(
            err,
            BuildError::Value {
                setting: "exec.args",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn rlimit_names_checked_and_accumulated() {
    let b = VmBuilder::new().exec(|e| e.rlimit("NOFILE", 10, 20).rlimit("RLIMIT_CORE", 0, 0));
    assert_eq!(b.draft.config.exec.rlimits, ["7=10:20", "4=0:0"]);
    let err = build_error(VmBuilder::new().exec(|e| e.rlimit("NOFILE", 20, 10)));
    assert!(
        matches!(
            err,
            BuildError::Invalid {
                setting: "exec.rlimit",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn exec_path_keeps_args_set_before() {
    let b = VmBuilder::new().exec(|e| e.args(["-c", "true"]).path("/bin/sh"));
    assert_eq!(b.draft.config.exec.path.as_deref(), Some("/bin/sh"));
    assert_eq!(b.draft.config.exec.args, ["-c", "true"]);
}

#[test]
fn uid_minus_one_refused() {
    let err = build_error(VmBuilder::new().exec(|e| e.uid(u32::MAX)));
    assert!(
        matches!(
            err,
            BuildError::Value {
                setting: "exec.uid",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn vsock_port_after_disable_refused() {
    let err = build_error(VmBuilder::new().vsock(|v| v.disable().port(5000, "/tmp/x.sock")));
    assert!(
        matches!(
            err,
            BuildError::Invalid {
                setting: "vsock.port",
                source: ConfigError::VsockDisabled
            }
        ),
        "{err:?}"
    );
}

#[test]
fn vsock_tsi_twice_refused() {
    let both = Tsi {
        inet: true,
        unix: true,
    };
    let b = VmBuilder::new().vsock(|v| v.tsi(both));
    assert_eq!(b.draft.config.vsock.tsi_features, Some(3));
    let err = build_error(b.vsock(|v| v.tsi(Tsi::default())));
    assert!(
        matches!(
            err,
            BuildError::Value {
                setting: "vsock.tsi",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn tsi_scope_bad_subnet_refused() {
    let err =
        build_error(VmBuilder::new().vsock(|v| v.tsi_scope(TsiReach::Subnet, Some("10.0.0.0/40"))));
    assert!(
        matches!(
            err,
            BuildError::Invalid {
                setting: "vsock.tsi_scope",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn duplicate_port_map_refused_at_build() {
    let dir = tmp_dir("portmap");
    let err = build_error(
        VmBuilder::new()
            .fs(|f| f.root(&dir))
            .vsock(|v| v.port_map(8080, 80).port_map(8080, 81)),
    );
    assert!(
        matches!(
            err,
            BuildError::Invalid {
                setting: "vsock.port_map",
                source: ConfigError::DuplicatePort(8080)
            }
        ),
        "{err:?}"
    );
}

#[test]
fn console_stdio_replaces_implicit_console_and_keeps_fds() {
    let out = std::fs::File::create(tmp_dir("stdio").join("out")).unwrap();
    let err = out.try_clone().unwrap();
    let b = VmBuilder::new().console(|c| c.stdio(None, out, err));
    assert!(b.draft.config.console.implicit_disabled);
    assert_eq!(b.draft.fds.len(), 2);
    match &b.draft.config.console.virtio_consoles[..] {
        [VirtioConsole::Default {
            input_fd: -1,
            output_fd,
            err_fd,
        }] => {
            assert_eq!(*output_fd, b.draft.fds[0].as_raw_fd());
            assert_eq!(*err_fd, b.draft.fds[1].as_raw_fd());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn console_ports_share_one_multiport_console() {
    let b = VmBuilder::new().console(|c| c.port("a", None, None).port("b", None, None));
    match &b.draft.config.console.virtio_consoles[..] {
        [VirtioConsole::Multiport(ports)] => assert_eq!(ports.len(), 2),
        other => panic!("{other:?}"),
    }
    let err = build_error(VmBuilder::new().console(|c| c.port("", None, None)));
    assert!(
        matches!(
            err,
            BuildError::Value {
                setting: "console.port",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn console_output_twice_refused() {
    let err = build_error(VmBuilder::new().console(|c| c.output("/tmp/a").output("/tmp/b")));
    assert!(
        matches!(
            err,
            BuildError::Invalid {
                setting: "console.output",
                source: ConfigError::ConsoleOutputSet
            }
        ),
        "{err:?}"
    );
}

#[test]
fn embedded_init_off_disables_implicit_init() {
    let b = VmBuilder::new().kernel(|k| k.embedded_init(false));
    assert!(b.draft.config.implicit_init_disabled);
    assert!(!b.draft.embedded_init);
}

#[test]
fn guest_init_is_an_elf_executable() {
    assert_eq!(&crate::GUEST_INIT[..4], b"\x7fELF");
}

#[test]
fn shutdown_requests_creates_eventfd_once_and_off_drops_it() {
    let b = VmBuilder::new().machine(|m| m.shutdown_requests(true).shutdown_requests(true));
    let fd = b.draft.config.shutdown_eventfd.clone().expect("an eventfd");
    assert_eq!(Arc::strong_count(&fd), 2, "one eventfd, not one per call");
    let b = b.machine(|m| m.shutdown_requests(false));
    assert!(b.draft.config.shutdown_eventfd.is_none());
}

#[test]
fn kernel_file_missing_is_path_error() {
    let err = build_error(
        VmBuilder::new().kernel(|k| k.file("/nonexistent/vmlinux", KernelFormat::Elf, None, None)),
    );
    assert!(
        matches!(&err, BuildError::Path { setting: "kernel.file", source, .. } if source.kind() == std::io::ErrorKind::NotFound),
        "{err:?}"
    );
}

#[test]
fn kernel_file_sets_format_and_cmdline() {
    let dir = tmp_dir("kernel");
    let image = dir.join("bzImage");
    std::fs::write(&image, b"not checked until build").unwrap();
    let b = VmBuilder::new().kernel(|k| k.file(&image, KernelFormat::Zstd, None, Some("quiet")));
    let kernel = b.draft.config.kernel.clone().expect("a kernel file");
    assert_eq!(kernel.format, vmm::config::KernelFormat::ImageZstd);
    assert_eq!(kernel.cmdline.as_deref(), Some("quiet"));
    let err = build_error(
        VmBuilder::new().kernel(|k| k.file(&image, KernelFormat::Elf, None, Some("a\0b"))),
    );
    assert!(
        matches!(
            err,
            BuildError::Value {
                setting: "kernel.file",
                ..
            }
        ),
        "{err:?}"
    );
}

// ---- disk, net, virtual files, custom backends ----------------------------------------------

/// A read-only tree with nothing in it.
struct EmptyTree;

impl crate::FsBackend for EmptyTree {
    fn lookup(&self, _: u64, _: &str) -> std::io::Result<crate::NodeAttr> {
        Err(std::io::Error::from_raw_os_error(libc::ENOENT))
    }
    fn getattr(&self, node: u64) -> std::io::Result<crate::NodeAttr> {
        Ok(crate::NodeAttr {
            node,
            kind: crate::NodeKind::Dir,
            size: 0,
            perm: 0o755,
        })
    }
    fn read_dir(&self, _: u64) -> std::io::Result<Vec<crate::DirItem>> {
        Ok(Vec::new())
    }
    fn read(&self, _: u64, _: u64, _: u32) -> std::io::Result<Vec<u8>> {
        Ok(Vec::new())
    }
}

/// A peer that drops everything.
struct NullPeer;

impl crate::FrameBackend for NullPeer {
    fn start(&mut self, _: crate::FrameSender) {}
    fn receive(&mut self, _: &[u8]) {}
}

#[test]
fn disk_add_records_options_and_refuses_a_missing_image() {
    let dir = tmp_dir("disk");
    let img = dir.join("a.img");
    std::fs::write(&img, [0u8; 512]).unwrap();
    let opts = DiskOptions {
        format: DiskFormat::Qcow2,
        read_only: true,
        direct_io: true,
        sync: DiskSync::Full,
    };
    let b = VmBuilder::new().disk(|d| d.add("d0", &img, opts));
    let disk = &b.draft.config.disks[0];
    assert_eq!(disk.id, "d0");
    assert_eq!(disk.format, vmm::config::DiskFormat::Qcow2);
    assert_eq!(disk.sync, vmm::config::SyncMode::Full);
    assert!(disk.read_only && disk.direct_io);
    let err = build_error(b.disk(|d| d.add("d1", dir.join("missing.img"), DiskOptions::default())));
    assert!(
        matches!(&err, BuildError::Path { setting: "disk.add", source, .. }
            if source.kind() == std::io::ErrorKind::NotFound),
        "{err:?}"
    );
    let dup = VmBuilder::new().disk(|d| {
        d.add("x", &img, DiskOptions::default())
            .add("x", &img, DiskOptions::default())
    });
    assert_eq!(
        build_error(dup).to_string(),
        "disk.add: a disk with id \"x\" already exists"
    );
}

#[test]
fn disk_root_counts_as_a_root() {
    let dir = tmp_dir("diskroot");
    let img = dir.join("root.img");
    std::fs::write(&img, [0u8; 512]).unwrap();
    let b = VmBuilder::new().disk(|d| d.root(&img));
    assert_eq!(b.draft.config.disks[0].id, "root");
    // No NoRoot: build goes on to the kernel (which this host may not have).
    assert!(!matches!(b.build(), Err(BuildError::NoRoot)));
}

#[test]
fn net_backends_map_to_config_with_mac_offloads_and_dhcp() {
    let nic = Nic::new([2, 0, 0, 0, 0, 9]).dhcp(true).offloads(3);
    let b = VmBuilder::new().net(|n| {
        n.unix_stream("/run/passt.sock", nic)
            .unix_gram("/run/gv.sock", true, Nic::new([2, 0, 0, 0, 0, 10]))
            .tap("tap7", Nic::new([2, 0, 0, 0, 0, 11]))
            .backend(NullPeer, Nic::new([2, 0, 0, 0, 0, 12]))
    });
    let nets = &b.draft.config.nets;
    assert_eq!(nets.len(), 4);
    assert_eq!(nets[0].mac, [2, 0, 0, 0, 0, 9]);
    assert_eq!(nets[0].features, 3);
    assert_eq!(nets[0].flags, vmm::config::NET_FLAG_DHCP_CLIENT);
    assert_eq!(nets[1].flags, vmm::config::NET_FLAG_VFKIT);
    assert!(matches!(
        nets[2].backend,
        vmm::config::NetBackend::Tap { .. }
    ));
    assert!(matches!(
        nets[3].backend,
        vmm::config::NetBackend::Custom(_)
    ));
    assert!(b.draft.error.is_none());
}

#[test]
fn net_bad_mac_and_tap_name_refused_naming_setter() {
    let err =
        build_error(VmBuilder::new().net(|n| n.backend(NullPeer, Nic::new([1, 0, 0, 0, 0, 0]))));
    assert_eq!(
        err.to_string(),
        "net.backend: MAC \"01:00:00:00:00:00\" is not a valid address"
    );
    let err = build_error(
        VmBuilder::new().net(|n| n.tap("a-name-far-too-long", Nic::new([2, 0, 0, 0, 0, 1]))),
    );
    assert!(err.to_string().starts_with("net.tap: tap name"), "{err}");
    let err =
        build_error(VmBuilder::new().net(|n| n.unix_stream("", Nic::new([2, 0, 0, 0, 0, 1]))));
    assert_eq!(err.to_string(), "net.unix_stream: the socket path is empty");
}

#[test]
fn fs_backend_share_and_root_and_virtual_entries() {
    let tree: Arc<dyn crate::FsBackend> = Arc::new(EmptyTree);
    let b = VmBuilder::new().fs(|f| {
        f.backend(ROOT_TAG, tree.clone())
            .backend("mem", tree.clone())
            .virtual_dir("mem", "etc", 0o755)
            .virtual_file("mem", "etc/motd", "hi\n", 0o644)
    });
    assert!(b.draft.error.is_none(), "{:?}", b.draft.error);
    let root = b.draft.config.root_share().unwrap();
    assert!(root.backend.is_some() && root.path.is_none());
    assert_eq!(b.draft.config.fs_overlays.len(), 2);
    let err = build_error(b.fs(|f| f.backend("mem", tree.clone())));
    assert_eq!(
        err.to_string(),
        "fs.backend: a virtio-fs share tagged \"mem\" already exists"
    );
    let err = build_error(VmBuilder::new().fs(|f| f.virtual_file("nope", "a", "x", 0o644)));
    assert_eq!(
        err.to_string(),
        "fs.virtual_file: no virtio-fs share tagged \"nope\""
    );
}

#[test]
fn fs_overlay_root_checks_each_layer() {
    let dir = tmp_dir("layers");
    let (low, top) = (dir.join("low"), dir.join("top"));
    std::fs::create_dir_all(&low).unwrap();
    std::fs::create_dir_all(&top).unwrap();
    let b = VmBuilder::new().fs(|f| f.overlay_root([&low, &top]));
    assert_eq!(
        b.draft.config.root_layers.as_deref(),
        Some(&[low.clone(), top.clone()][..])
    );
    let err = build_error(VmBuilder::new().fs(|f| f.overlay_root([dir.join("none")])));
    assert!(
        matches!(
            err,
            BuildError::Path {
                setting: "fs.overlay_root",
                ..
            }
        ),
        "{err:?}"
    );
    let err = build_error(VmBuilder::new().fs(|f| f.root(&low).overlay_root([&top])));
    assert!(err.to_string().starts_with("fs.overlay_root:"), "{err}");
}

#[test]
fn share_with_maps_read_only_ownership_and_keeps_the_dax_size() {
    let dir = tmp_dir("sharewith");
    let opts = ShareOptions {
        read_only: true,
        ownership: Ownership::Caller,
        dax_window_bytes: 1 << 20,
    };
    let b = VmBuilder::new().fs(|f| f.share_with("data", &dir, opts));
    let share = &b.draft.config.fs_shares[0];
    assert!(share.read_only);
    assert_eq!(share.semantics, vmm::config::FsSemantics::LinuxSimplified);
    assert_eq!(share.shm_size, 1 << 20);
    let err = build_error(VmBuilder::new().fs(|f| f.share_with("x", dir.join("no"), opts)));
    assert!(
        matches!(
            err,
            BuildError::Path {
                setting: "fs.share_with",
                ..
            }
        ),
        "{err:?}"
    );
}
