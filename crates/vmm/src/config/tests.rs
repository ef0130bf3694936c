use super::*;

#[test]
fn set_vm_config_out_of_range_fails() {
    let mut c = VmConfig::default();
    assert!(matches!(
        c.set_vm_config(0, 512, 8).unwrap_err(),
        ConfigError::VcpuCount { .. }
    ));
    assert!(matches!(
        c.set_vm_config(9, 512, 8).unwrap_err(),
        ConfigError::VcpuCount { .. }
    ));
    assert_eq!(c.set_vm_config(2, 0, 8), Err(ConfigError::ZeroRam));
    c.set_vm_config(8, 1024, 8).unwrap();
    assert_eq!((c.vcpus, c.ram_mib), (8, 1024));
}

#[test]
fn root_dir_and_root_disk_exclusive() {
    let mut c = VmConfig::default();
    c.set_root_dir("/r".into()).unwrap();
    assert!(matches!(
        c.set_root_disk("/d.img".into()).unwrap_err(),
        ConfigError::RootConflict { .. }
    ));
    let mut c = VmConfig::default();
    c.set_root_disk("/d.img".into()).unwrap();
    assert!(matches!(
        c.set_root_dir("/r".into()).unwrap_err(),
        ConfigError::RootConflict { .. }
    ));
    assert!(matches!(
        c.set_root_disk("/e.img".into()).unwrap_err(),
        ConfigError::DuplicateDiskId(_)
    ));
}

#[test]
fn duplicate_fs_tag_and_disk_id_fail_eexist() {
    let mut c = VmConfig::default();
    let share = FsShare {
        tag: "data".into(),
        path: Some("/d".into()),
        shm_size: 0,
        read_only: false,
        semantics: FsSemantics::LinuxComplete,
        layers: Vec::new(),
        backend: None,
    };
    c.add_fs_share(share.clone()).unwrap();
    assert!(matches!(
        c.add_fs_share(share).unwrap_err(),
        ConfigError::DuplicateFsTag(_)
    ));
    let disk = Disk {
        id: "vdb".into(),
        path: "/x.img".into(),
        format: DiskFormat::Raw,
        read_only: true,
        direct_io: false,
        sync: SyncMode::Full,
    };
    c.add_disk(disk.clone()).unwrap();
    assert!(matches!(
        c.add_disk(disk).unwrap_err(),
        ConfigError::DuplicateDiskId(_)
    ));
}

#[test]
fn rlimits_numeric_and_named_normalized() {
    assert_eq!(parse_rlimit("6=4096:8192").unwrap(), "6=4096:8192");
    assert_eq!(
        parse_rlimit("RLIMIT_NOFILE=1024:4096").unwrap(),
        "7=1024:4096"
    );
    assert_eq!(parse_rlimit("nofile=1:2").unwrap(), "7=1:2");
    for bad in ["6=10:5", "16=1:2", "NOPE=1:2", "6=1", "6:1:2", "6=a:b", ""] {
        assert!(parse_rlimit(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn port_map_rejects_malformed_and_duplicates() {
    let mut c = VmConfig::default();
    c.set_port_map(&["8080:80".into(), "8443:443".into()])
        .unwrap();
    assert_eq!(c.vsock.port_map.as_ref().unwrap().len(), 2);
    for bad in ["80", "a:80", "80:70000", "1:2:3"] {
        assert!(matches!(
            c.set_port_map(&[bad.into()]).unwrap_err(),
            ConfigError::PortMapEntry(_)
        ));
    }
    let dup = ["1:2".to_string(), "1:3".to_string()];
    assert!(matches!(
        c.set_port_map(&dup).unwrap_err(),
        ConfigError::DuplicatePort(_)
    ));
    c.disable_implicit_vsock();
    assert!(matches!(
        c.set_port_map(&[]).unwrap_err(),
        ConfigError::VsockDisabled
    ));
}

#[test]
fn add_vsock_needs_disabled_implicit() {
    let mut c = VmConfig::default();
    assert!(matches!(
        c.add_vsock(0).unwrap_err(),
        ConfigError::VsockExists
    ));
    c.disable_implicit_vsock();
    assert!(matches!(
        c.add_vsock(4).unwrap_err(),
        ConfigError::TsiFeatures(_)
    ));
    c.add_vsock(TSI_ALL_FEATURES).unwrap();
    assert_eq!(c.vsock.tsi_features, Some(3));
}

#[test]
fn net_validation_cases() {
    let mut c = VmConfig::default();
    let mac = DEFAULT_LEGACY_MAC;
    let net = |backend, mac, features, flags| Net {
        backend,
        mac,
        features,
        flags,
    };
    let both = NetBackend::UnixStream {
        path: Some("/s".into()),
        fd: Some(3),
    };
    assert_eq!(
        c.add_net(net(both, mac, 0, 0)),
        Err(ConfigError::NetEndpoint)
    );
    let gram = || NetBackend::UnixGram {
        path: Some("/g".into()),
        fd: None,
    };
    let group = [1, 0, 0, 0, 0, 1];
    assert!(c.add_net(net(gram(), group, 0, 0)).is_err());
    assert!(c.add_net(net(gram(), mac, 1 << 2, 0)).is_err());
    assert!(c.add_net(net(gram(), mac, 0, 1 << 4)).is_err());
    let tap = NetBackend::Tap {
        name: "tap0".into(),
    };
    assert_eq!(
        c.add_net(net(tap, mac, 1 << 7, 0)),
        Err(ConfigError::TapNeedsGuestCsum)
    );
    c.add_net(net(gram(), mac, NET_COMPAT_FEATURES, NET_FLAG_VFKIT))
        .unwrap();
    let passt = NetBackend::Passt { fd: 3 };
    assert!(matches!(
        c.set_legacy_net(passt).unwrap_err(),
        ConfigError::LegacyNet(_)
    ));
}

#[test]
fn overlay_parents_must_exist() {
    let mut c = VmConfig::default();
    c.set_root_dir("/r".into()).unwrap();
    let ov = |path: &str, kind| FsOverlay {
        tag: ROOT_FS_TAG.into(),
        path: path.into(),
        mode: 0o755,
        kind,
    };
    let file = || FsOverlayKind::File {
        data: b"x".to_vec(),
        one_shot: false,
    };
    assert!(matches!(
        c.add_fs_overlay(ov("a/b", file())).unwrap_err(),
        ConfigError::OverlayParentMissing(_)
    ));
    c.add_fs_overlay(ov("/a", FsOverlayKind::Dir)).unwrap();
    c.add_fs_overlay(ov("a/b", file())).unwrap();
    assert!(matches!(
        c.add_fs_overlay(ov("a/b/c", file())).unwrap_err(),
        ConfigError::OverlayParentNotDir(_)
    ));
    assert!(matches!(
        c.add_fs_overlay(ov("a/../x", file())).unwrap_err(),
        ConfigError::OverlayPath(_)
    ));
}

#[test]
fn overlay_parent_may_be_a_host_directory_of_the_share() {
    let host = std::env::temp_dir().join(format!("krun-cfg-ov-{}", std::process::id()));
    std::fs::create_dir_all(host.join("etc")).unwrap();
    std::fs::write(host.join("file"), b"x").unwrap();
    let mut c = VmConfig::default();
    c.set_root_dir(host.clone()).unwrap();
    c.add_fs_share(FsShare {
        tag: "null".into(),
        path: None,
        shm_size: 0,
        read_only: false,
        semantics: FsSemantics::LinuxComplete,
        layers: Vec::new(),
        backend: None,
    })
    .unwrap();
    let ov = |tag: &str, path: &str| FsOverlay {
        tag: tag.into(),
        path: path.into(),
        mode: 0o755,
        kind: FsOverlayKind::Dir,
    };

    let in_host_dir = c.add_fs_overlay(ov(ROOT_FS_TAG, "etc/conf.d"));
    let below_host_file = c.add_fs_overlay(ov(ROOT_FS_TAG, "file/x"));
    let below_missing = c.add_fs_overlay(ov(ROOT_FS_TAG, "usr/x"));
    let in_null_share = c.add_fs_overlay(ov("null", "etc/x"));
    c.add_fs_overlay(ov(ROOT_FS_TAG, "v")).unwrap();
    let host_dir_below_virtual = c.add_fs_overlay(ov(ROOT_FS_TAG, "v/etc/x"));
    std::fs::remove_dir_all(&host).unwrap();

    assert_eq!(in_host_dir, Ok(()));
    assert!(matches!(below_host_file, Err(ConfigError::OverlayParentNotDir(p)) if p == "file"));
    assert!(matches!(below_missing, Err(ConfigError::OverlayParentMissing(p)) if p == "usr"));
    assert!(matches!(
        in_null_share,
        Err(ConfigError::OverlayParentMissing(_))
    ));
    assert!(matches!(
        host_dir_below_virtual,
        Err(ConfigError::OverlayParentMissing(p)) if p == "v/etc"
    ));
}

#[test]
fn fs_semantics_zero_and_one_only() {
    assert_eq!(FsSemantics::from_raw(0), Ok(FsSemantics::LinuxComplete));
    assert_eq!(FsSemantics::from_raw(1), Ok(FsSemantics::LinuxSimplified));
    assert_eq!(FsSemantics::from_raw(2), Err(ConfigError::FsSemantics(2)));
}

#[test]
fn fs_tag_longer_than_36_bytes_fails_einval() {
    let mut c = VmConfig::default();
    let share = |tag: &str| FsShare {
        tag: tag.to_string(),
        path: Some("/s".into()),
        shm_size: 0,
        read_only: false,
        semantics: FsSemantics::LinuxComplete,
        layers: Vec::new(),
        backend: None,
    };
    let err = c.add_fs_share(share(&"t".repeat(37))).unwrap_err();
    assert!(matches!(err, ConfigError::FsTagLength { len: 37, .. }));
    c.add_fs_share(share(&"t".repeat(36))).unwrap();
    assert_eq!(c.fs_shares.len(), 1);
}

#[test]
fn set_root_dir_twice_fails_eexist() {
    let mut c = VmConfig::default();
    c.set_root_dir("/r".into()).unwrap();
    assert!(matches!(
        c.set_root_dir("/s".into()).unwrap_err(),
        ConfigError::DuplicateFsTag(_)
    ));
}

#[test]
fn env_entry_without_equals_fails_einval() {
    let mut c = VmConfig::default();
    for bad in ["NOEQUALS", "=value"] {
        let err = c.set_env(Some(vec!["A=1".into(), bad.into()])).unwrap_err();
        assert_eq!(err, ConfigError::EnvEntry(bad.into()));
        let err = c
            .set_exec("/bin/true".into(), vec![], Some(vec![bad.into()]))
            .unwrap_err();
        assert!(matches!(err, ConfigError::EnvEntry(_)));
    }
    assert_eq!(c.exec.env, None);
    c.set_env(Some(vec!["A=".into(), "B=x=y".into()])).unwrap();
    assert_eq!(c.exec.env.as_deref().map(<[String]>::len), Some(2));
}

#[test]
fn vmm_ids_minus_one_fail_einval() {
    let mut c = VmConfig::default();
    assert!(matches!(
        c.set_vmm_ids(Some(u32::MAX), None).unwrap_err(),
        ConfigError::IdMinusOne { .. }
    ));
    assert!(matches!(
        c.set_vmm_ids(None, Some(u32::MAX)).unwrap_err(),
        ConfigError::IdMinusOne { .. }
    ));
    c.set_vmm_ids(Some(1000), None).unwrap();
    c.set_vmm_ids(None, Some(100)).unwrap();
    assert_eq!((c.vmm_uid, c.vmm_gid), (Some(1000), Some(100)));
}

#[test]
fn shown_long_argument_cut_with_length() {
    let long = "x".repeat(1 << 20);
    let text = Shown(&long).to_string();
    assert!(text.len() < 300, "{} bytes", text.len());
    assert!(text.ends_with("... (1048576 bytes in all)"), "{text}");
    assert_eq!(Shown("ab").to_string(), "\"ab\"");
    let err = ConfigError::EnvEntry(long).to_string();
    assert!(err.len() < 400, "{} bytes", err.len());
}

#[test]
fn shutdown_eventfd_created_once_same_fd() {
    let mut c = VmConfig::default();
    assert!(
        c.shutdown_eventfd.is_none(),
        "never created with the context"
    );
    let fd = c.shutdown_eventfd().unwrap();
    assert!(fd >= 0);
    assert_eq!(c.shutdown_eventfd().unwrap(), fd);
}
