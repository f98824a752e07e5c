//! AMX tile state for bf16 stages (`Target::tiles`): Linux hands a
//! process the tiles' 8 KiB of register state only when asked
//! (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`); a tile
//! instruction before that faults. Asked once per process, the first time
//! a bf16 kernel is compiled; where the CPU lacks AMX-BF16 or the kernel
//! refuses, bf16 stages run as f32 code on bf16 values and
//! [`tiles_refused`] says why.

use std::sync::OnceLock;

/// Why this process cannot run AMX tiles, or `None` where it can (the
/// permission is then granted, for every thread of the process).
pub fn tiles_refused() -> Option<&'static str> {
    static STATE: OnceLock<Option<&'static str>> = OnceLock::new();
    *STATE.get_or_init(request)
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn request() -> Option<&'static str> {
    if !convjit_plan::backend::has_amx_bf16() {
        return Some("this CPU has no AMX-BF16 tiles");
    }
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl with ARCH_REQ_XCOMP_PERM takes two integers and
    // touches no memory of ours; it only grants (or refuses) the state.
    let r = unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        )
    };
    match r {
        0 => None,
        _ => Some("the kernel refused the AMX tile state (arch_prctl)"),
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn request() -> Option<&'static str> {
    Some("AMX tiles are used on x86-64 Linux only")
}
