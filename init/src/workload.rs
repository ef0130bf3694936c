//! Where the workload comes from: the kernel-provided environment and argv, the container
//! config crun writes (`/.krun_config.json`) and our VMM's exec file (`/.krun_exec.json`).
//!
//! The kernel hands PID 1 every unknown `KEY=VALUE` word of its command line as environment
//! (after `HOME=/` and `TERM=linux`, replacing same-named entries) and the words after ` -- `
//! as argv[1..]. It keeps at most 32 of each and panics beyond that, and the whole command
//! line is bounded, which is why the VMM may move the workload into `/.krun_exec.json`.
//!
//! Precedence, per field: exec file, then `KRUN_*` variables, then the container config, then
//! defaults. This module only decides; `exec.rs` and `reaper.rs` act on the result.

use std::io;

use thiserror::Error;

use contract::{keys, ExecConfig};
use serde_json::Value;

use crate::rlimits::{self, Rlimit, RlimitParseError};

/// crun's file: the whole OCI runtime config (`KRUN_CONFIG` overrides the path, as upstream).
pub const CONFIG_PATH: &str = "/.krun_config.json";
/// Our VMM's file; when present its fields win over everything else. Format: `README.md`.
pub const EXEC_PATH: &str = contract::EXEC_FILE_PATH;
/// Used when neither the exec file, `KRUN_INIT` nor the config names a program.
pub const DEFAULT_PROGRAM: &str = "/bin/sh";
/// Hostname when the workload environment has no `HOSTNAME` (upstream's default).
pub const DEFAULT_HOSTNAME: &str = "localhost";

/// Environment variables that steer init itself; none of them reaches the workload.
pub const CONTROL_PREFIX: &str = keys::PREFIX;

#[derive(Debug, Error)]
pub enum WorkloadError {
    #[error("cannot read {path}: {}", crate::exec::describe(source))]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{path}: {source}")]
    Json {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: {source}")]
    Rlimit {
        path: &'static str,
        #[source]
        source: RlimitParseError,
    },
    #[error("{name}='{value}' is not a numeric id")]
    Id { name: &'static str, value: String },
}

/// What the kernel gave PID 1: its environment and argv[1..].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KernelInput {
    pub env: Vec<(String, String)>,
    pub args: Vec<String>,
}

impl KernelInput {
    /// Reads init's own environment and arguments (non-UTF-8 bytes become U+FFFD).
    pub fn from_process() -> Self {
        let env = std::env::vars_os()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.to_string_lossy().into_owned(),
                )
            })
            .collect();
        let args = std::env::args_os()
            .skip(1)
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        KernelInput { env, args }
    }

    fn var(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// `/.krun_exec.json`, decoded. Absent keys are `None`/empty and fall through to other sources.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExecFile {
    pub exec: Option<String>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub workdir: Option<String>,
    pub rlimits: Option<Vec<Rlimit>>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// The parts of `/.krun_config.json` init uses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerConfig {
    pub argv: Option<Vec<String>>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<String>,
    /// Destinations of `mounts` entries with type and source `tmpfs`.
    pub tmpfs: Vec<String>,
}

/// Everything needed to start the workload.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub workdir: Option<String>,
    pub rlimits: Vec<Rlimit>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub hostname: String,
    /// `KRUN_INIT_PID1=1`: exec the workload as PID 1 instead of supervising it (upstream).
    pub exec_as_pid1: bool,
    pub tmpfs: Vec<String>,
}

/// Reads the files from the root and combines them with the kernel input. A broken exec file
/// is an error (the VMM wrote it, running something else would be wrong); a broken container
/// config is only reported, as upstream ignores it.
pub fn load(kernel: KernelInput) -> Result<Workload, WorkloadError> {
    let exec_text = read_exec_file()?;
    load_with_exec(kernel, exec_text)
}

/// The exec file's text, if the root has one (read before a remount root hides it).
pub fn read_exec_file() -> Result<Option<String>, WorkloadError> {
    read_optional(EXEC_PATH)
}

/// As [`load`], with the exec file's text already read.
pub fn load_with_exec(
    kernel: KernelInput,
    exec_text: Option<String>,
) -> Result<Workload, WorkloadError> {
    let exec_file = match exec_text {
        Some(text) => Some(parse_exec_file(&text)?),
        None => None,
    };
    let config_path = kernel.var(keys::CONFIG).unwrap_or(CONFIG_PATH).to_string();
    let config = match read_optional(&config_path) {
        Ok(Some(text)) => match parse_container_config(&text) {
            Ok(config) => Some(config),
            Err(err) => {
                crate::diag!("ignoring {config_path}: {err}");
                None
            }
        },
        Ok(None) => None,
        Err(err) => {
            crate::diag!("ignoring {err}");
            None
        }
    };
    resolve(kernel, exec_file, config)
}

fn read_optional(path: &str) -> Result<Option<String>, WorkloadError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(WorkloadError::Read {
            path: path.to_string(),
            source,
        }),
    }
}

/// Combines the sources (see the module doc for the precedence).
pub fn resolve(
    kernel: KernelInput,
    exec_file: Option<ExecFile>,
    config: Option<ContainerConfig>,
) -> Result<Workload, WorkloadError> {
    let exec_file = exec_file.unwrap_or_default();
    let config = config.unwrap_or_default();

    let mut env: Vec<(String, String)> = kernel
        .env
        .iter()
        .filter(|(k, _)| !k.starts_with(CONTROL_PREFIX))
        .cloned()
        .collect();
    for (key, value) in &exec_file.env {
        set_var(&mut env, key, value, true);
    }
    // Upstream: the config fills gaps, but its HOME and TERM beat the kernel's defaults.
    for (key, value) in &config.env {
        set_var(&mut env, key, value, key == "HOME" || key == "TERM");
    }
    for (control, key) in [(keys::HOME, "HOME"), (keys::TERM, "TERM")] {
        if let Some(value) = kernel.var(control) {
            set_var(&mut env, key, value, true);
        }
    }

    let argv = if let Some(exec) = exec_file.exec {
        std::iter::once(exec).chain(exec_file.args).collect()
    } else if let Some(init) = kernel.var(keys::INIT) {
        std::iter::once(init.to_string())
            .chain(kernel.args.iter().cloned())
            .collect()
    } else if let Some(argv) = config.argv {
        argv
    } else if !kernel.args.is_empty() {
        kernel.args.clone()
    } else {
        vec![DEFAULT_PROGRAM.to_string()]
    };

    let workdir = exec_file
        .workdir
        .or_else(|| kernel.var(keys::WORKDIR).map(str::to_string))
        .or(config.cwd)
        .filter(|w| !w.is_empty());

    let rlimits = match exec_file.rlimits {
        Some(limits) => limits,
        None => {
            let (limits, errors) = rlimits::parse_list(kernel.var(keys::RLIMITS).unwrap_or(""));
            for err in errors {
                crate::diag!("KRUN_RLIMITS: {err}");
            }
            limits
        }
    };

    let uid = match exec_file.uid {
        Some(uid) => Some(uid),
        None => parse_id(&kernel, keys::UID)?,
    };
    let gid = match exec_file.gid {
        Some(gid) => Some(gid),
        None => parse_id(&kernel, keys::GID)?,
    };

    let hostname = env
        .iter()
        .find(|(k, _)| k == "HOSTNAME")
        .map(|(_, v)| v.clone())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| DEFAULT_HOSTNAME.to_string());

    Ok(Workload {
        argv,
        env,
        workdir,
        rlimits,
        uid,
        gid,
        hostname,
        exec_as_pid1: kernel
            .var(keys::INIT_PID1)
            .is_some_and(|v| v.starts_with('1')),
        tmpfs: config.tmpfs,
    })
}

fn set_var(env: &mut Vec<(String, String)>, key: &str, value: &str, overwrite: bool) {
    match env.iter_mut().find(|(k, _)| k == key) {
        Some(entry) if overwrite => entry.1 = value.to_string(),
        Some(_) => {}
        None => env.push((key.to_string(), value.to_string())),
    }
}

fn parse_id(kernel: &KernelInput, name: &'static str) -> Result<Option<u32>, WorkloadError> {
    match kernel.var(name) {
        None => Ok(None),
        Some(value) => value
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| WorkloadError::Id {
                name,
                value: value.to_string(),
            }),
    }
}

/// Splits `KEY=VALUE` entries; entries without `=` or with an empty key are dropped.
fn split_env(entries: &[String]) -> Vec<(String, String)> {
    entries
        .iter()
        .filter_map(|entry| entry.split_once('='))
        .filter(|(key, _)| !key.is_empty())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Decodes `/.krun_exec.json` (the contract's [`ExecConfig`]); every key is optional, wrong
/// types are errors.
pub fn parse_exec_file(text: &str) -> Result<ExecFile, WorkloadError> {
    let config = ExecConfig::from_json(text).map_err(|source| WorkloadError::Json {
        path: EXEC_PATH.to_string(),
        source,
    })?;
    let rlimits = match config.rlimits {
        None => None,
        Some(items) => Some(parse_exec_rlimits(items.iter().map(String::as_str))?),
    };
    Ok(ExecFile {
        exec: config.exec.filter(|e| !e.is_empty()),
        args: config.args,
        env: split_env(&config.env),
        workdir: config.workdir,
        rlimits,
        uid: config.uid,
        gid: config.gid,
    })
}

fn parse_exec_rlimits<'a>(
    items: impl Iterator<Item = &'a str>,
) -> Result<Vec<Rlimit>, WorkloadError> {
    items
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            rlimits::parse_entry(item).map_err(|source| WorkloadError::Rlimit {
                path: EXEC_PATH,
                source,
            })
        })
        .collect()
}

/// Decodes crun's OCI config (`process.args/env/cwd`) or a Docker-style image config
/// (`Cmd`/`Entrypoint`/`Env`/`WorkingDir`, also nested under `config`, and the flat
/// `args`/`env`/`cwd`). `Entrypoint` is prepended to `Cmd`. Non-string items are skipped.
pub fn parse_container_config(text: &str) -> Result<ContainerConfig, serde_json::Error> {
    let root: Value = serde_json::from_str(text)?;
    let mut config = ContainerConfig {
        tmpfs: tmpfs_mounts(&root),
        ..ContainerConfig::default()
    };

    if let Some(process) = root
        .get("process")
        .filter(|p| matches!(p, Value::Object(_)))
    {
        config.argv = lenient_strings(process.get("args")).filter(|a| !a.is_empty());
        config.env = split_env(&lenient_strings(process.get("env")).unwrap_or_default());
        config.cwd = process
            .get("cwd")
            .and_then(Value::as_str)
            .map(str::to_string);
        return Ok(config);
    }

    let scopes: Vec<&Value> = std::iter::once(&root).chain(root.get("config")).collect();
    let field = |names: &[&str]| -> Option<&Value> {
        scopes.iter().find_map(|scope| {
            names
                .iter()
                .find_map(|name| scope.get(name).filter(|v| !matches!(v, Value::Null)))
        })
    };
    let entrypoint = lenient_strings(field(&["Entrypoint"])).filter(|e| !e.is_empty());
    let cmd = lenient_strings(field(&["args", "Cmd"])).filter(|c| !c.is_empty());
    config.argv = match (entrypoint, cmd) {
        (Some(mut entrypoint), cmd) => {
            entrypoint.extend(cmd.unwrap_or_default());
            Some(entrypoint)
        }
        (None, cmd) => cmd,
    };
    config.env = split_env(&lenient_strings(field(&["env", "Env"])).unwrap_or_default());
    config.cwd = field(&["cwd", "WorkingDir", "Cwd"])
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok(config)
}

fn lenient_strings(value: Option<&Value>) -> Option<Vec<String>> {
    Some(
        value?
            .as_array()?
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
    )
}

fn tmpfs_mounts(root: &Value) -> Vec<String> {
    let Some(mounts) = root.get("mounts").and_then(Value::as_array) else {
        return Vec::new();
    };
    mounts
        .iter()
        .filter(|m| m.get("type").and_then(Value::as_str) == Some("tmpfs"))
        .filter(|m| m.get("source").and_then(Value::as_str) == Some("tmpfs"))
        .filter_map(|m| m.get("destination").and_then(Value::as_str))
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
#[path = "workload_tests.rs"]
mod tests;
