//! How the workload reaches the guest init: as kernel command line words when the kernel
//! can carry them unchanged, else as a virtual `/.krun_exec.json` on the root share.
//!
//! The kernel hands init at most 32 environment entries and 32 arguments (more panics it),
//! takes words whose key has a `.` as module parameters, removes `"` quoting, eats words that
//! match its own parameters, and treats some non-ASCII bytes (0xa0) as spaces. Rather than
//! truncate or mangle a workload, anything outside a conservative subset goes into the JSON
//! file, which init reads first (init/README.md).

use contract::{keys, ExecConfig};

use crate::config::Exec;

/// Environment words we put on the command line at most (the kernel's 32 include its own
/// `HOME=/`, `TERM=linux` and any unknown `key=value` option).
const MAX_CMDLINE_ENV: usize = 24;
/// Arguments after ` -- ` we put on the command line at most (the kernel's 32 include
/// init's own argv[0] and any unknown option before ` -- `).
const MAX_CMDLINE_ARGS: usize = 24;

/// The workload as command line words.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CmdlineWorkload {
    /// `KRUN_*=` and `KEY=VALUE` words, quoted where needed, before ` -- `.
    pub env: Vec<String>,
    /// Arguments, quoted where needed, after ` -- `.
    pub args: Vec<String>,
}

/// Where the workload goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Workload {
    Cmdline(CmdlineWorkload),
    /// Contents of `/.krun_exec.json`; the command line then carries nothing of it.
    ExecJson(Vec<u8>),
}

/// The workload environment: the configured one, or (None, with a program set) this
/// process's environment now, as upstream libkrun's `krun_set_exec` with a NULL `envp`.
/// Without a program (crun's launch: init reads the container config) None is empty, as
/// upstream. Variables whose name or value is not UTF-8 are skipped.
pub fn resolve_env(exec: &Exec) -> Vec<String> {
    match &exec.env {
        Some(env) => env.clone(),
        None if exec.path.is_none() => Vec::new(),
        None => std::env::vars_os()
            .filter_map(|(k, v)| {
                Some(format!(
                    "{}={}",
                    k.into_string().ok()?,
                    v.into_string().ok()?
                ))
            })
            .collect(),
    }
}

/// Text the kernel passes through unchanged inside a word (quoted when it has spaces).
fn cmdline_safe(s: &str) -> bool {
    s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

/// An environment key the kernel will neither take as its own option nor as a module
/// parameter: upper case, digits and `_`, not starting with a digit.
fn cmdline_safe_key(key: &str) -> bool {
    let mut bytes = key.bytes();
    matches!(bytes.next(), Some(b'A'..=b'Z' | b'_'))
        && bytes.all(|b| matches!(b, b'A'..=b'Z' | b'0'..=b'9' | b'_'))
}

fn quote_if_spaced(s: &str) -> String {
    if s.contains(' ') {
        format!("\"{s}\"")
    } else {
        s.to_string()
    }
}

/// `KEY=VALUE` as one command line word, or None if the kernel would change it.
fn env_word(key: &str, value: &str) -> Option<String> {
    if !cmdline_safe_key(key) || !cmdline_safe(value) {
        return None;
    }
    Some(format!("{key}={}", quote_if_spaced(value)))
}

/// The workload as command line words, or None if the kernel cannot carry it unchanged.
pub fn cmdline_words(exec: &Exec, env: &[String]) -> Option<CmdlineWorkload> {
    let mut words = Vec::new();
    if let Some(path) = &exec.path {
        words.push(env_word(keys::INIT, path)?);
    }
    if let Some(dir) = &exec.workdir {
        words.push(env_word(keys::WORKDIR, dir)?);
    }
    if !exec.rlimits.is_empty() {
        words.push(env_word(keys::RLIMITS, &exec.rlimits.join(","))?);
    }
    if let Some(uid) = exec.uid {
        words.push(format!("{}={uid}", keys::UID));
    }
    if let Some(gid) = exec.gid {
        words.push(format!("{}={gid}", keys::GID));
    }
    for entry in env {
        let (key, value) = entry.split_once('=')?;
        words.push(env_word(key, value)?);
    }
    if words.len() > MAX_CMDLINE_ENV || exec.args.len() > MAX_CMDLINE_ARGS {
        return None;
    }
    let mut args = Vec::with_capacity(exec.args.len());
    for arg in &exec.args {
        // An empty word and a second `--` do not survive the kernel's parser.
        if arg.is_empty() || arg == "--" || !cmdline_safe(arg) {
            return None;
        }
        args.push(quote_if_spaced(arg));
    }
    Some(CmdlineWorkload { env: words, args })
}

/// The `/.krun_exec.json` document for this workload (format: init/README.md).
pub fn exec_json(exec: &Exec, env: &[String]) -> Vec<u8> {
    ExecConfig {
        exec: exec.path.clone(),
        // Without a program init takes argv from elsewhere and ignores `args`.
        args: if exec.path.is_some() {
            exec.args.clone()
        } else {
            Vec::new()
        },
        env: env.to_vec(),
        workdir: exec.workdir.clone(),
        rlimits: (!exec.rlimits.is_empty()).then(|| exec.rlimits.clone()),
        uid: exec.uid,
        gid: exec.gid,
    }
    .to_json()
}

/// Chooses how the workload reaches init.
pub fn plan(exec: &Exec) -> Workload {
    let env = resolve_env(exec);
    match cmdline_words(exec, &env) {
        Some(words) => Workload::Cmdline(words),
        None => Workload::ExecJson(exec_json(exec, &env)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(args: &[&str], env: &[&str]) -> Exec {
        Exec {
            path: Some("/bin/sh".into()),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: Some(env.iter().map(|s| s.to_string()).collect()),
            workdir: Some("/tmp".into()),
            rlimits: vec!["7=1024:4096".into()],
            ..Exec::default()
        }
    }

    #[test]
    fn plan_simple_workload_cmdline() {
        let Workload::Cmdline(w) = plan(&exec(&["-c", "echo hi; exit 7"], &["A=b c"])) else {
            panic!("expected command line");
        };
        assert_eq!(
            w.env,
            [
                "KRUN_INIT=/bin/sh",
                "KRUN_WORKDIR=/tmp",
                "KRUN_RLIMITS=7=1024:4096",
                "A=\"b c\""
            ]
        );
        assert_eq!(w.args, ["-c", "\"echo hi; exit 7\""]);
    }

    #[test]
    fn plan_kernel_unsafe_workloads_json() {
        for e in [
            exec(&["a\"b"], &[]),
            exec(&["ü"], &[]),
            exec(&[""], &[]),
            exec(&["--"], &[]),
            exec(&[], &["lower=1"]),
            exec(&[], &["A.B=1"]),
            exec(&[], &["NOEQUALS"]),
        ] {
            assert!(matches!(plan(&e), Workload::ExecJson(_)), "{e:?}");
        }
        let many: Vec<String> = (0..40).map(|i| i.to_string()).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(matches!(plan(&exec(&refs, &[])), Workload::ExecJson(_)));
        let envs: Vec<String> = (0..40).map(|i| format!("V{i}=1")).collect();
        let refs: Vec<&str> = envs.iter().map(String::as_str).collect();
        assert!(matches!(plan(&exec(&[], &refs)), Workload::ExecJson(_)));
    }

    #[test]
    fn exec_json_escapes_strings() {
        let mut e = exec(&["a\"b", "ü\n"], &["K=v"]);
        e.uid = Some(5);
        let json = String::from_utf8(exec_json(&e, &["K=v".into()])).unwrap();
        assert_eq!(
            json,
            "{\"exec\":\"/bin/sh\",\"args\":[\"a\\\"b\",\"ü\\n\"],\"env\":[\"K=v\"],\
             \"workdir\":\"/tmp\",\"rlimits\":[\"7=1024:4096\"],\"uid\":5}"
        );
    }

    #[test]
    fn exec_json_is_what_init_reads() {
        let mut e = exec(&["-c", "a\"b ü\n", ""], &[]);
        e.uid = Some(7);
        let env = vec!["K=v w".to_string(), "X=\u{1}".to_string()];
        let read = ExecConfig::from_json(std::str::from_utf8(&exec_json(&e, &env)).unwrap())
            .expect("init's decoder accepts what the VMM writes");
        assert_eq!(
            read,
            ExecConfig {
                exec: Some("/bin/sh".into()),
                args: e.args.clone(),
                env,
                workdir: Some("/tmp".into()),
                rlimits: Some(vec!["7=1024:4096".into()]),
                uid: Some(7),
                gid: None,
            }
        );
    }

    #[test]
    fn resolve_env_none_inherits_process_env() {
        let e = Exec {
            path: Some("/bin/true".into()),
            ..Exec::default()
        };
        let env = resolve_env(&e);
        assert!(resolve_env(&Exec::default()).is_empty());
        if let Ok(path) = std::env::var("PATH") {
            assert!(env.contains(&format!("PATH={path}")));
        }
    }
}
