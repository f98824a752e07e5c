//! The memory budget: one rule for every buffer whose size comes from the
//! user's input (tensors of a batch, weights, packed weights, run buffers,
//! objects). Its bytes are computed with checked arithmetic and compared
//! with the memory the process can still have before anything is
//! allocated: on Linux an allocation larger than that usually *succeeds*
//! (pages are committed lazily) and the process is killed later, or it
//! aborts; either way the user learns nothing. So what cannot fit is
//! refused with a [`DataError`] that says how much was needed and why.

use crate::error::DataError;
use std::fmt;

/// Bytes, as `12.3 GiB`.
pub struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let b = self.0 as f64;
        match self.0 {
            0..1024 => write!(f, "{} bytes", self.0),
            1024..1_048_576 => write!(f, "{:.1} KiB", b / 1024.0),
            1_048_576..1_073_741_824 => write!(f, "{:.1} MiB", b / 1_048_576.0),
            _ => write!(f, "{:.1} GiB", b / 1_073_741_824.0),
        }
    }
}

/// `n` f32 values in bytes; `None` on overflow.
pub fn f32_bytes(n: usize) -> Option<u64> {
    (n as u64).checked_mul(4)
}

/// Refuses `bytes` (`None`: more than a u64 holds) for `what` ("the
/// input of a batch of 100000", say) when they exceed the memory this
/// process can still take ([`available`]). Where that is unknown, only
/// an impossible size (`None`, or past `isize::MAX`) is refused, and the
/// allocation itself must be fallible.
pub fn check(what: impl fmt::Display, bytes: Option<u64>) -> Result<(), DataError> {
    let limit = available().unwrap_or(isize::MAX as u64);
    match bytes {
        Some(b) if b <= limit => Ok(()),
        Some(b) => Err(DataError::tensor(
            "not enough memory",
            format!(
                "{what} needs {} ({b} bytes), more than the {} this process can have",
                Bytes(b),
                Bytes(limit)
            ),
        )),
        None => Err(DataError::tensor(
            "not enough memory",
            format!("{what} needs more bytes than a 64-bit size can count"),
        )),
    }
}

/// `n` zeroed f32s, refused (not aborted) when the budget or the
/// allocator says no: for tensors whose size comes from the input.
pub fn zeroed(what: impl fmt::Display, n: usize) -> Result<Vec<f32>, DataError> {
    check(&what, f32_bytes(n))?;
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| {
        DataError::tensor(
            "not enough memory",
            format!("{what}: cannot allocate {}", Bytes(n as u64 * 4)),
        )
    })?;
    v.resize(n, 0.0);
    Ok(v)
}

/// Bytes of memory the process can still take: the system's available
/// memory (`MemAvailable`), or less where a cgroup (a container) limits
/// the process or an address-space limit (`ulimit -v`, `RLIMIT_AS`) is
/// near; `None` where none is known (not Linux).
pub fn available() -> Option<u64> {
    let system = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| meminfo_available(&m));
    [system, cgroup_room(), address_space_room()]
        .into_iter()
        .flatten()
        .min()
}

/// `MemAvailable` of a `/proc/meminfo` text, in bytes.
fn meminfo_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// What an address-space limit still allows: the soft limit of "Max
/// address space" in `/proc/self/limits` less `VmSize` in
/// `/proc/self/status`; `None` without a limit. Past it an allocation
/// fails, and Rust aborts the process.
fn address_space_room() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    address_room(&limits, &status)
}

fn address_room(limits: &str, status: &str) -> Option<u64> {
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max address space"))?;
    let soft: u64 = line["Max address space".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()?; // "unlimited": no limit
    let size = status.lines().find(|l| l.starts_with("VmSize:"))?;
    let kib: u64 = size.split_whitespace().nth(1)?.parse().ok()?;
    // Kept back: what the process maps besides the buffers checked (a
    // worker thread's stack, code, the allocator's own), so that a check
    // that passes is not followed by an abort a few MiB later.
    let margin = (64 << 20).max(soft / 8);
    Some(
        soft.saturating_sub(kib.saturating_mul(1024))
            .saturating_sub(margin),
    )
}

/// What the process's cgroup still allows: its limit less its usage
/// (cgroup v2: `memory.max`, `memory.current`; v1: `memory.limit_in_bytes`,
/// `memory.usage_in_bytes`); `None` without a limit or a cgroup.
fn cgroup_room() -> Option<u64> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let root = std::path::Path::new("/sys/fs/cgroup");
    let (dir, max, current) = match own.lines().find_map(|l| l.strip_prefix("0::")) {
        Some(rel) if root.join("memory.max").exists() || rel != "/" => (
            root.join(rel.trim_start_matches('/')),
            "memory.max",
            "memory.current",
        ),
        _ => {
            // "4:memory:/path" on cgroup v1.
            let rel = own
                .lines()
                .find_map(|l| l.split_once(":memory:").map(|x| x.1))?;
            let dir = root.join("memory").join(rel.trim_start_matches('/'));
            (dir, "memory.limit_in_bytes", "memory.usage_in_bytes")
        }
    };
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok();
    let max: u64 = read(max)?.trim().parse().ok()?; // v2's "max": no limit
    let current: u64 = read(current)?.trim().parse().ok()?;
    Some(max.saturating_sub(current))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_meminfo() {
        let m = "MemTotal:       24576000 kB\nMemFree:  100 kB\nMemAvailable:   23000000 kB\n";
        assert_eq!(meminfo_available(m), Some(23_000_000 * 1024));
        assert_eq!(meminfo_available("MemTotal: 5 kB\n"), None);
    }

    #[test]
    fn reads_the_address_space_limit() {
        let status = "Name:\tconvjit\nVmPeak:\t  9000 kB\nVmSize:\t    4096 kB\n";
        let limited = "Limit                     Soft Limit           Hard Limit           Units\n\
                       Max address space         1000000000           unlimited            bytes\n";
        // Less what is kept back: an eighth of the limit (past 64 MiB).
        assert_eq!(
            address_room(limited, status),
            Some(1_000_000_000 - 4096 * 1024 - 1_000_000_000 / 8)
        );
        let open = limited.replace("1000000000 ", "unlimited  ");
        assert_eq!(address_room(&open, status), None);
    }

    #[test]
    fn refuses_what_cannot_exist_and_says_how_much() {
        let e = check("a batch of 10^9 images", Some(1 << 62)).unwrap_err();
        let m = e.to_string();
        assert!(
            m.starts_with("not enough memory: a batch of 10^9 images needs 4294967296.0 GiB"),
            "{m}"
        );
        assert!(check("x", None).is_err());
        assert!(check("x", Some(1024)).is_ok());
        assert!(zeroed("x", usize::MAX / 2).is_err());
        assert_eq!(zeroed("x", 3).unwrap(), [0.0; 3]);
    }

    #[test]
    fn bytes_read_as_people_write_them() {
        assert_eq!(Bytes(512).to_string(), "512 bytes");
        assert_eq!(Bytes(1536).to_string(), "1.5 KiB");
        assert_eq!(Bytes(64 << 30).to_string(), "64.0 GiB");
    }
}
