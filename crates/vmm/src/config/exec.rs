//! The workload: program, arguments, environment, working directory, rlimits.

use super::{non_empty, ConfigError, VmConfig};

/// The workload init runs in the guest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Exec {
    /// Program to run (KRUN_INIT); None: init reads `/.krun_config.json`.
    pub path: Option<String>,
    /// Arguments after the program name.
    pub args: Vec<String>,
    /// `KEY=VALUE` environment; None: the caller's environment at start time.
    pub env: Option<Vec<String>>,
    pub workdir: Option<String>,
    /// `RESOURCE=CUR:MAX` entries, already validated.
    pub rlimits: Vec<String>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// Resource names accepted in rlimits, at the index of their Linux resource number.
const RLIMIT_NAMES: [&str; 16] = [
    "CPU",
    "FSIZE",
    "DATA",
    "STACK",
    "CORE",
    "RSS",
    "NPROC",
    "NOFILE",
    "MEMLOCK",
    "AS",
    "LOCKS",
    "SIGPENDING",
    "MSGQUEUE",
    "NICE",
    "RTPRIO",
    "RTTIME",
];

/// Parses one `RESOURCE=CUR:MAX` rlimit into the numeric form init reads (`7=1024:4096`).
/// RESOURCE is a Linux resource number (0..=15) or a name with or without `RLIMIT_`.
pub fn parse_rlimit(entry: &str) -> Result<String, ConfigError> {
    let bad = || ConfigError::Rlimit(entry.to_string());
    let (resource, limits) = entry.split_once('=').ok_or_else(bad)?;
    let (cur, max) = limits.split_once(':').ok_or_else(bad)?;
    let id = match resource.parse::<usize>() {
        Ok(n) if n < RLIMIT_NAMES.len() => n,
        Ok(_) => return Err(bad()),
        Err(_) => {
            let name = resource.strip_prefix("RLIMIT_").unwrap_or(resource);
            RLIMIT_NAMES
                .iter()
                .position(|n| n.eq_ignore_ascii_case(name))
                .ok_or_else(bad)?
        }
    };
    let cur: u64 = cur.parse().map_err(|_| bad())?;
    let max: u64 = max.parse().map_err(|_| bad())?;
    if cur > max {
        return Err(bad());
    }
    Ok(format!("{id}={cur}:{max}"))
}

/// Every entry must be `KEY=VALUE` with a non-empty KEY (init passes them to execve).
fn check_env(env: Option<&[String]>) -> Result<(), ConfigError> {
    for entry in env.unwrap_or_default() {
        if entry.split_once('=').is_none_or(|(k, _)| k.is_empty()) {
            return Err(ConfigError::EnvEntry(entry.clone()));
        }
    }
    Ok(())
}

impl VmConfig {
    /// `krun_set_exec`. `env` None: the caller's environment at start time.
    pub fn set_exec(
        &mut self,
        path: String,
        args: Vec<String>,
        env: Option<Vec<String>>,
    ) -> Result<(), ConfigError> {
        non_empty(&path, "executable path")?;
        check_env(env.as_deref())?;
        self.exec.path = Some(path);
        self.exec.args = args;
        self.exec.env = env;
        Ok(())
    }

    /// `krun_set_env`. `env` None: the caller's environment at start time.
    pub fn set_env(&mut self, env: Option<Vec<String>>) -> Result<(), ConfigError> {
        check_env(env.as_deref())?;
        self.exec.env = env;
        Ok(())
    }

    /// `krun_setuid` / `krun_setgid`: -1 means "leave unchanged" to setuid(2), never an id.
    pub fn set_vmm_ids(&mut self, uid: Option<u32>, gid: Option<u32>) -> Result<(), ConfigError> {
        if uid == Some(u32::MAX) {
            return Err(ConfigError::IdMinusOne { what: "uid" });
        }
        if gid == Some(u32::MAX) {
            return Err(ConfigError::IdMinusOne { what: "gid" });
        }
        self.vmm_uid = uid.or(self.vmm_uid);
        self.vmm_gid = gid.or(self.vmm_gid);
        Ok(())
    }

    /// `krun_set_workdir`.
    pub fn set_workdir(&mut self, workdir: String) -> Result<(), ConfigError> {
        non_empty(&workdir, "working directory")?;
        self.exec.workdir = Some(workdir);
        Ok(())
    }

    /// `krun_set_rlimits`: every entry is checked before any is kept.
    pub fn set_rlimits(&mut self, entries: &[String]) -> Result<(), ConfigError> {
        let parsed = entries
            .iter()
            .map(|e| parse_rlimit(e))
            .collect::<Result<Vec<_>, _>>()?;
        self.exec.rlimits = parsed;
        Ok(())
    }
}
