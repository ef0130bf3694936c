//! Resource limits for the workload (`KRUN_RLIMITS`, the `rlimits` key of `/.krun_exec.json`).
//!
//! Upstream's `krun_set_rlimits` joins the caller's `"ID=CUR:MAX"` strings with commas and wraps
//! the whole list in double quotes; the numeric ids are Linux's `RLIMIT_*` values. The older
//! C init also accepted `ID:CUR:MAX`, so both separators are read. PID 1 applies the limits
//! to itself before forking, and the workload inherits them.

use std::io;

use thiserror::Error;

/// One `setrlimit` call to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rlimit {
    /// A Linux `RLIMIT_*` number (e.g. 7 = `RLIMIT_NOFILE`).
    pub resource: u32,
    pub cur: u64,
    pub max: u64,
}

#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid rlimit entry '{0}' (expected RESOURCE=CUR:MAX)")]
pub struct RlimitParseError(pub String);

/// Parses a comma-separated list, skipping empty items; surrounding quotes are ignored.
/// Malformed items are returned separately so one typo does not drop the other limits
/// (upstream skips them the same way).
pub fn parse_list(text: &str) -> (Vec<Rlimit>, Vec<RlimitParseError>) {
    let mut limits = Vec::new();
    let mut errors = Vec::new();
    let items = text.trim().trim_matches('"').split(',');
    for item in items.map(|item| item.trim().trim_matches('"')) {
        if item.is_empty() {
            continue;
        }
        match parse_entry(item) {
            Ok(limit) => limits.push(limit),
            Err(err) => errors.push(err),
        }
    }
    (limits, errors)
}

/// Parses `ID=CUR:MAX` or `ID:CUR:MAX`. `CUR`/`MAX` may be `-1`, `unlimited` or `infinity`
/// for `RLIM_INFINITY`, which is what a C caller printing `RLIM_INFINITY` as signed gets.
pub fn parse_entry(item: &str) -> Result<Rlimit, RlimitParseError> {
    let invalid = || RlimitParseError(item.to_string());
    let mut parts = item.splitn(3, ['=', ':']);
    let (Some(id), Some(cur), Some(max)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(invalid());
    };
    Ok(Rlimit {
        resource: id.trim().parse().map_err(|_| invalid())?,
        cur: parse_value(cur).ok_or_else(invalid)?,
        max: parse_value(max).ok_or_else(invalid)?,
    })
}

fn parse_value(text: &str) -> Option<u64> {
    match text.trim() {
        "-1" | "unlimited" | "infinity" => Some(libc::RLIM_INFINITY),
        number => number.parse().ok(),
    }
}

/// Applies every limit, logging (not failing on) the ones the kernel refuses, as upstream does.
pub fn apply_all(limits: &[Rlimit]) {
    for limit in limits {
        if let Err(err) = set_rlimit(limit) {
            crate::diag!(
                "setrlimit({}, {}, {}) failed: {}",
                limit.resource,
                limit.cur,
                limit.max,
                crate::exec::describe(&err)
            );
        }
    }
}

fn set_rlimit(limit: &Rlimit) -> io::Result<()> {
    let value = libc::rlimit {
        rlim_cur: limit.cur,
        rlim_max: limit.max,
    };
    // SAFETY: `value` is a valid, initialised rlimit that outlives the call; an unknown
    // resource id only makes the kernel return EINVAL.
    let ret = unsafe { libc::setrlimit(limit.resource as libc::__rlimit_resource_t, &value) };
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rl(resource: u32, cur: u64, max: u64) -> Rlimit {
        Rlimit { resource, cur, max }
    }

    #[test]
    fn parse_list_quoted_upstream_format_reads_all() {
        let (got, errors) = parse_list("\"7=1024:4096,6=100:200\"");
        assert_eq!(got, vec![rl(7, 1024, 4096), rl(6, 100, 200)]);
        assert!(errors.is_empty());
    }

    #[test]
    fn parse_entry_colon_format_is_accepted() {
        assert_eq!(parse_entry("7:1024:4096"), Ok(rl(7, 1024, 4096)));
    }

    #[test]
    fn parse_entry_infinity_spellings_map_to_rlim_infinity() {
        let inf = libc::RLIM_INFINITY;
        assert_eq!(parse_entry("3=-1:unlimited"), Ok(rl(3, inf, inf)));
        assert_eq!(
            parse_entry("3=infinity:18446744073709551615"),
            Ok(rl(3, inf, inf))
        );
    }

    #[test]
    fn parse_list_empty_items_are_skipped() {
        assert_eq!(parse_list(""), (vec![], vec![]));
        assert_eq!(parse_list("\"\""), (vec![], vec![]));
        assert_eq!(parse_list("7=1:2,,"), (vec![rl(7, 1, 2)], vec![]));
    }

    #[test]
    fn parse_entry_malformed_is_error() {
        for bad in ["7=1024", "x=1:2", "7=a:2", "7=1:b", "=1:2"] {
            assert!(parse_entry(bad).is_err(), "accepted {bad}");
        }
    }

    #[test]
    fn parse_list_bad_item_is_reported_and_others_kept() {
        let (got, errors) = parse_list("7=1:2,bogus");
        assert_eq!(got, vec![rl(7, 1, 2)]);
        assert_eq!(errors, vec![RlimitParseError("bogus".into())]);
    }
}
