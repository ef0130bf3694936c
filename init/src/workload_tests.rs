use super::*;

fn kernel(env: &[(&str, &str)], args: &[&str]) -> KernelInput {
    KernelInput {
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        args: args.iter().map(|a| a.to_string()).collect(),
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

const KERNEL_DEFAULTS: [(&str, &str); 2] = [("HOME", "/"), ("TERM", "linux")];

#[test]
fn resolve_krun_init_with_cmdline_args_builds_argv_and_env() {
    let input = kernel(
        &[
            ("HOME", "/"),
            ("TERM", "linux"),
            ("KRUN_INIT", "/bin/sh"),
            ("KRUN_WORKDIR", "/work"),
            ("FOO", "bar baz"),
        ],
        &["-c", "echo hi; exit 7"],
    );
    let w = resolve(input, None, None).unwrap();
    assert_eq!(w.argv, strings(&["/bin/sh", "-c", "echo hi; exit 7"]));
    assert_eq!(w.workdir.as_deref(), Some("/work"));
    assert_eq!(
        w.env,
        pairs(&[("HOME", "/"), ("TERM", "linux"), ("FOO", "bar baz")])
    );
    assert_eq!(w.hostname, DEFAULT_HOSTNAME);
    assert!(!w.exec_as_pid1);
}

#[test]
fn resolve_control_variables_are_dropped_from_env() {
    let input = kernel(
        &[
            ("KRUN_INIT", "/x"),
            ("KRUN_RLIMITS", "7=1:2"),
            ("KRUN_UID", "5"),
            ("KRUN_BLOCK_ROOT_DEVICE", "/dev/vda"),
            ("KEEP", "1"),
        ],
        &[],
    );
    let w = resolve(input, None, None).unwrap();
    assert_eq!(w.env, pairs(&[("KEEP", "1")]));
    assert_eq!(w.uid, Some(5));
    assert_eq!(w.rlimits.len(), 1);
}

#[test]
fn resolve_krun_home_and_term_override_defaults() {
    let mut env = KERNEL_DEFAULTS.to_vec();
    env.extend([("KRUN_HOME", "/root"), ("KRUN_TERM", "xterm")]);
    let w = resolve(kernel(&env, &[]), None, None).unwrap();
    assert_eq!(w.env, pairs(&[("HOME", "/root"), ("TERM", "xterm")]));
}

#[test]
fn resolve_nothing_given_runs_default_shell() {
    let w = resolve(kernel(&KERNEL_DEFAULTS, &[]), None, None).unwrap();
    assert_eq!(w.argv, strings(&[DEFAULT_PROGRAM]));
    assert_eq!(w.workdir, None);
}

#[test]
fn resolve_bare_cmdline_args_are_the_command() {
    let w = resolve(kernel(&[], &["/bin/echo", "x"]), None, None).unwrap();
    assert_eq!(w.argv, strings(&["/bin/echo", "x"]));
}

#[test]
fn resolve_config_used_when_no_krun_init() {
    let config = parse_container_config(
        r#"{"process": {"args": ["/app", "--flag"], "env": ["PATH=/opt/bin", "HOME=/home/app",
            "TERM=xterm", "HOSTNAME=box"], "cwd": "/srv"}}"#,
    )
    .unwrap();
    let input = kernel(&[("HOME", "/"), ("TERM", "linux"), ("PATH", "/bin")], &[]);
    let w = resolve(input, None, Some(config)).unwrap();
    assert_eq!(w.argv, strings(&["/app", "--flag"]));
    assert_eq!(w.workdir.as_deref(), Some("/srv"));
    // The cmdline PATH wins, the config's HOME/TERM beat the kernel defaults.
    assert_eq!(
        w.env,
        pairs(&[
            ("HOME", "/home/app"),
            ("TERM", "xterm"),
            ("PATH", "/bin"),
            ("HOSTNAME", "box")
        ])
    );
    assert_eq!(w.hostname, "box");
}

#[test]
fn resolve_krun_init_beats_config_args_but_config_env_applies() {
    let config =
        parse_container_config(r#"{"process": {"args": ["/app"], "env": ["A=1"], "cwd": "/srv"}}"#)
            .unwrap();
    let input = kernel(&[("KRUN_INIT", "/bin/true"), ("KRUN_WORKDIR", "/w")], &[]);
    let w = resolve(input, None, Some(config)).unwrap();
    assert_eq!(w.argv, strings(&["/bin/true"]));
    assert_eq!(w.workdir.as_deref(), Some("/w"));
    assert_eq!(w.env, pairs(&[("A", "1")]));
}

#[test]
fn resolve_exec_file_wins_over_everything() {
    let exec = parse_exec_file(
        r#"{"exec": "/bin/prog", "args": ["a b", "\"q\"", "ü"], "env": ["X=1", "HOME=/h"],
            "workdir": "/ew", "rlimits": "7=10:20", "uid": 1000, "gid": 100}"#,
    )
    .unwrap();
    let config =
        parse_container_config(r#"{"process": {"args": ["/app"], "cwd": "/srv"}}"#).unwrap();
    let mut env = KERNEL_DEFAULTS.to_vec();
    env.extend([
        ("KRUN_INIT", "/other"),
        ("KRUN_WORKDIR", "/kw"),
        ("KRUN_RLIMITS", "6=1:1"),
        ("KRUN_UID", "1"),
        ("X", "0"),
    ]);
    let w = resolve(kernel(&env, &["ignored"]), Some(exec), Some(config)).unwrap();
    assert_eq!(w.argv, strings(&["/bin/prog", "a b", "\"q\"", "ü"]));
    assert_eq!(w.workdir.as_deref(), Some("/ew"));
    assert_eq!(
        w.rlimits,
        vec![Rlimit {
            resource: 7,
            cur: 10,
            max: 20
        }]
    );
    assert_eq!((w.uid, w.gid), (Some(1000), Some(100)));
    assert_eq!(
        w.env,
        pairs(&[("HOME", "/h"), ("TERM", "linux"), ("X", "1")])
    );
}

#[test]
fn resolve_exec_file_without_exec_falls_back_for_argv() {
    let exec = parse_exec_file(r#"{"env": ["A=1"]}"#).unwrap();
    let input = kernel(&[("KRUN_INIT", "/bin/id")], &["-u"]);
    let w = resolve(input, Some(exec), None).unwrap();
    assert_eq!(w.argv, strings(&["/bin/id", "-u"]));
    assert_eq!(w.env, pairs(&[("A", "1")]));
}

#[test]
fn resolve_bad_krun_uid_is_error() {
    let err = resolve(kernel(&[("KRUN_UID", "root")], &[]), None, None).unwrap_err();
    assert!(matches!(
        err,
        WorkloadError::Id {
            name: "KRUN_UID",
            ..
        }
    ));
}

#[test]
fn resolve_bad_rlimit_item_is_skipped() {
    let input = kernel(&[("KRUN_RLIMITS", "\"7=1:2,junk,6=3:4\"")], &[]);
    let w = resolve(input, None, None).unwrap();
    assert_eq!(
        w.rlimits,
        vec![
            Rlimit {
                resource: 7,
                cur: 1,
                max: 2
            },
            Rlimit {
                resource: 6,
                cur: 3,
                max: 4
            }
        ]
    );
}

#[test]
fn resolve_pid1_flag_read_from_prefix() {
    let w = resolve(kernel(&[("KRUN_INIT_PID1", "1")], &[]), None, None).unwrap();
    assert!(w.exec_as_pid1);
    let w = resolve(kernel(&[("KRUN_INIT_PID1", "0")], &[]), None, None).unwrap();
    assert!(!w.exec_as_pid1);
}

#[test]
fn parse_container_config_docker_entrypoint_prepended_to_cmd() {
    let c = parse_container_config(
        r#"{"Entrypoint": ["/ep.sh"], "Cmd": ["nginx", "-g"], "Env": ["A=1", "bogus"],
            "WorkingDir": "/app"}"#,
    )
    .unwrap();
    assert_eq!(c.argv, Some(strings(&["/ep.sh", "nginx", "-g"])));
    assert_eq!(c.env, pairs(&[("A", "1")]));
    assert_eq!(c.cwd.as_deref(), Some("/app"));
}

#[test]
fn parse_container_config_nested_docker_config_is_read() {
    let c = parse_container_config(
        r#"{"architecture": "amd64", "config": {"Cmd": ["/bin/sh"], "Entrypoint": null,
            "Env": ["PATH=/usr/bin"], "WorkingDir": "/root"}}"#,
    )
    .unwrap();
    assert_eq!(c.argv, Some(strings(&["/bin/sh"])));
    assert_eq!(c.env, pairs(&[("PATH", "/usr/bin")]));
    assert_eq!(c.cwd.as_deref(), Some("/root"));
}

#[test]
fn parse_container_config_entrypoint_alone_is_argv() {
    let c = parse_container_config(r#"{"Entrypoint": ["/ep"], "Cmd": []}"#).unwrap();
    assert_eq!(c.argv, Some(strings(&["/ep"])));
}

#[test]
fn parse_container_config_flat_oci_keys_are_read() {
    let c = parse_container_config(r#"{"args": ["x"], "env": ["B=2"], "cwd": "/c"}"#).unwrap();
    assert_eq!(c.argv, Some(strings(&["x"])));
    assert_eq!(c.env, pairs(&[("B", "2")]));
    assert_eq!(c.cwd.as_deref(), Some("/c"));
}

#[test]
fn parse_container_config_full_oci_reads_process_and_tmpfs() {
    let c = parse_container_config(
        r#"{"ociVersion": "1.0.2", "process": {"terminal": false, "user": {"uid": 0, "gid": 0},
            "args": ["sh", "-c", "echo \"hi\""], "env": ["PATH=/bin", "TERM=xterm"],
            "cwd": "/"}, "root": {"path": "rootfs"},
            "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
                       {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                        "options": ["nosuid"]},
                       {"destination": "/dev/shm", "type": "tmpfs", "source": "shm"}]}"#,
    )
    .unwrap();
    assert_eq!(c.argv, Some(strings(&["sh", "-c", "echo \"hi\""])));
    assert_eq!(c.env, pairs(&[("PATH", "/bin"), ("TERM", "xterm")]));
    assert_eq!(c.cwd.as_deref(), Some("/"));
    assert_eq!(c.tmpfs, strings(&["/tmp"]));
}

#[test]
fn parse_container_config_empty_process_args_is_none() {
    let c = parse_container_config(r#"{"process": {"args": []}}"#).unwrap();
    assert_eq!(c.argv, None);
}

#[test]
fn parse_container_config_invalid_json_is_error() {
    assert!(parse_container_config("{\"process\": ").is_err());
}

#[test]
fn parse_exec_file_rlimits_array_is_accepted() {
    let e = parse_exec_file(r#"{"rlimits": ["7=1:2", "6=3:4"]}"#).unwrap();
    assert_eq!(e.rlimits.map(|r| r.len()), Some(2));
}

#[test]
fn parse_exec_file_empty_object_is_all_default() {
    assert_eq!(parse_exec_file("{}").unwrap(), ExecFile::default());
}

#[test]
fn parse_exec_file_wrong_types_are_errors() {
    for doc in [
        r#"{"exec": 1}"#,
        r#"{"args": "x"}"#,
        r#"{"args": [1]}"#,
        r#"{"env": {"A": "1"}}"#,
        r#"{"uid": -1}"#,
        r#"{"gid": 4294967296}"#,
        r#"{"rlimits": 7}"#,
    ] {
        match parse_exec_file(doc) {
            Err(WorkloadError::Json { .. }) => {}
            other => panic!("{doc}: {other:?}"),
        }
    }
}

#[test]
fn parse_exec_file_bad_rlimit_is_error() {
    assert!(matches!(
        parse_exec_file(r#"{"rlimits": "7=1"}"#),
        Err(WorkloadError::Rlimit { .. })
    ));
}

#[test]
fn parse_exec_file_not_json_is_error() {
    assert!(matches!(
        parse_exec_file("exec=/bin/sh"),
        Err(WorkloadError::Json { .. })
    ));
}

#[test]
fn parse_exec_file_reads_what_the_contract_writes() {
    // The VMM writes `/.krun_exec.json` with `ExecConfig::to_json` (vmm::workload::exec_json).
    let written = contract::ExecConfig {
        exec: Some("/bin/sh".into()),
        args: strings(&["-c", "echo \"hi\" ü\n", ""]),
        env: strings(&["A=b c", "NOEQUALS", "lower=1"]),
        workdir: Some("/srv".into()),
        rlimits: Some(strings(&["7=1024:4096", "6=100:200"])),
        uid: Some(4_294_967_295),
        gid: Some(0),
    }
    .to_json();
    let e = parse_exec_file(std::str::from_utf8(&written).unwrap()).unwrap();
    assert_eq!(e.exec.as_deref(), Some("/bin/sh"));
    assert_eq!(e.args, strings(&["-c", "echo \"hi\" ü\n", ""]));
    assert_eq!(e.env, pairs(&[("A", "b c"), ("lower", "1")]));
    assert_eq!(e.workdir.as_deref(), Some("/srv"));
    assert_eq!(e.rlimits.map(|r| r.len()), Some(2));
    assert_eq!((e.uid, e.gid), (Some(4_294_967_295), Some(0)));
}

#[test]
fn parse_exec_file_non_object_is_error() {
    for doc in ["[]", "\"x\"", "null", "1"] {
        assert!(
            matches!(parse_exec_file(doc), Err(WorkloadError::Json { .. })),
            "{doc}"
        );
    }
}

#[test]
fn parse_container_config_escapes_and_non_string_items() {
    let c = parse_container_config(
        r#"{"process": {"args": ["echo", 1, "\u00fc\"\n", null], "env": ["A=1", 2, "B"],
                        "cwd": "/w"}}"#,
    )
    .unwrap();
    assert_eq!(c.argv, Some(strings(&["echo", "ü\"\n"])));
    assert_eq!(c.env, pairs(&[("A", "1")]));
    assert_eq!(c.cwd.as_deref(), Some("/w"));
}

#[test]
fn parse_container_config_null_arrays_are_absent() {
    let c =
        parse_container_config(r#"{"Cmd": null, "config": {"Cmd": ["sh"], "Env": null}}"#).unwrap();
    assert_eq!(c.argv, Some(strings(&["sh"])));
    assert!(c.env.is_empty());
}
