//! What the cost model knows of the machine ([`Host`]): cache sizes from
//! Linux's sysfs, cores, the generator's vectors, and whether the process
//! may run AMX tiles.
/// What the cost model knows of the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Host {
    /// f32 lanes of the vectors the code generator emits.
    pub lanes: usize,
    /// Vector registers the register allocator may use.
    pub vector_registers: usize,
    /// Per-core L1 data cache, in bytes.
    pub l1d_bytes: usize,
    /// Per-core L2 cache, in bytes.
    pub l2_bytes: usize,
    /// Hardware threads available.
    pub cores: usize,
    /// The process may run AMX tiles: the CPU has AMX-BF16 and Linux
    /// granted the tile state (asked by the runtime, `convjit_jit`, only
    /// for a plan that would use them: bf16 on the AVX-512 generator).
    /// Such a plan prices its tile stages as tiles run them
    /// ([`super::LayerPlan::target`]).
    pub tiles: bool,
}

impl Host {
    /// This machine: cache sizes from Linux's sysfs (32 KiB / 1 MiB if
    /// unknown); no tiles (asking for their state is the runtime's).
    pub fn detect() -> Host {
        Host {
            lanes: crate::stage_plan::LANES,
            vector_registers: if cfg!(target_arch = "aarch64") {
                32
            } else {
                16
            },
            l1d_bytes: cache_bytes("1").unwrap_or(32 << 10),
            l2_bytes: cache_bytes("2").unwrap_or(1 << 20),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            tiles: false,
        }
    }
}

/// The data (or unified) cache of `level` ("1", "2", "3") that cpu0 sees,
/// from Linux's sysfs.
fn cache_bytes(level: &str) -> Option<usize> {
    (0..8).find_map(|i| {
        let dir = format!("/sys/devices/system/cpu/cpu0/cache/index{i}");
        let read = |f: &str| std::fs::read_to_string(format!("{dir}/{f}")).ok();
        let kind = read("type")?;
        if read("level")?.trim() != level || kind.trim() == "Instruction" {
            return None;
        }
        parse_size(read("size")?.trim())
    })
}

/// This machine's L2 per core ([`Host::detect`]'s), read once: what the
/// stage schedules' working sets are measured against.
pub fn host_l2_bytes() -> usize {
    static L2: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *L2.get_or_init(|| Host::detect().l2_bytes)
}

/// This machine's L1 data cache per core ([`Host::detect`]'s), read once.
pub fn host_l1d_bytes() -> usize {
    static L1: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *L1.get_or_init(|| Host::detect().l1d_bytes)
}

/// This machine's last-level cache as cpu0 sees it (32 MiB if unknown),
/// read once: what decides whether a kernel's tensors stay cached from
/// one call to the next (`stage_plan::streams_past_caches`).
pub fn host_l3_bytes() -> usize {
    static L3: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *L3.get_or_init(|| cache_bytes("3").unwrap_or(32 << 20))
}

/// `"32K"`, `"2048K"`, `"1M"` in bytes.
fn parse_size(s: &str) -> Option<usize> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: usize = num.parse().ok()?;
    Some(match unit {
        "" => n,
        "K" => n << 10,
        "M" => n << 20,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("32K"), Some(32 << 10));
        assert_eq!(parse_size("2M"), Some(2 << 20));
        assert_eq!(parse_size("x"), None);
    }
}
