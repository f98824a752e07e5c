//! Which code generator writes a layer's stage functions. The plans are
//! the same for all of them; a generator only decides the instructions
//! (and, through its vector width and register count, the blocking).

use convjit_ir::Precision;
use std::fmt;

/// A code generator, or `Auto`: the best one the host can run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Backend {
    /// AVX-512F if the host has it, else AVX2+FMA, else Cranelift.
    #[default]
    Auto,
    /// Cranelift: portable (x86-64, AArch64), 128-bit vectors.
    Cranelift,
    /// Direct x86-64 machine code, 256-bit ymm vectors (x86-64-v3).
    Avx2,
    /// Direct x86-64 machine code, 512-bit zmm vectors (x86-64-v4).
    Avx512,
}

impl Backend {
    /// Every concrete generator, narrowest first.
    pub const ALL: [Backend; 3] = [Backend::Cranelift, Backend::Avx2, Backend::Avx512];

    /// The command line's spelling.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::Cranelift => "cranelift",
            Backend::Avx2 => "avx2",
            Backend::Avx512 => "avx512",
        }
    }

    /// The generator of a command-line spelling ([`Backend::name`]).
    pub fn parse(s: &str) -> Option<Backend> {
        [Backend::Auto]
            .into_iter()
            .chain(Backend::ALL)
            .find(|b| b.name() == s)
    }

    /// Whether this process's CPU runs the code of this generator.
    pub fn host_has(self) -> bool {
        match self {
            Backend::Auto | Backend::Cranelift => true,
            Backend::Avx2 => has_avx2(),
            Backend::Avx512 => has_avx512(),
        }
    }

    /// The concrete generators the host runs, narrowest first (what the
    /// tests iterate over).
    pub fn available() -> Vec<Backend> {
        Backend::ALL.into_iter().filter(|b| b.host_has()).collect()
    }

    /// `Auto` made concrete; an explicit choice the host cannot run is an
    /// error that says why.
    pub fn resolve(self) -> Result<Backend, String> {
        match self {
            Backend::Auto => Ok([Backend::Avx512, Backend::Avx2]
                .into_iter()
                .find(|b| b.host_has())
                .unwrap_or(Backend::Cranelift)),
            b if b.host_has() => Ok(b),
            b => Err(format!(
                "the {b} code generator needs {}, which this CPU does not have",
                match b {
                    Backend::Avx2 => "AVX2 and FMA",
                    _ => "AVX-512 (F, VL, DQ, BW: x86-64-v4)",
                }
            )),
        }
    }
}

impl Backend {
    /// Whether this generator (resolved, [`Backend::resolve`]) computes
    /// `precision` on this host: bf16 needs the AVX-512 generator and
    /// AVX512_BF16 (what its kernels' conversions and tiles are built on;
    /// Sapphire Rapids, Zen 4), else an error that says which is missing.
    pub fn check_precision(self, precision: Precision) -> Result<(), String> {
        match precision {
            Precision::F32 => Ok(()),
            Precision::Bf16 if !has_bf16() => Err(
                "precision bf16 needs AVX512_BF16 (Sapphire Rapids, Zen 4), which this CPU does not have"
                    .into(),
            ),
            Precision::Bf16 if self != Backend::Avx512 => Err(format!(
                "precision bf16 runs on the avx512 code generator only, not {self}"
            )),
            Precision::Bf16 => Ok(()),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// x86-64-v4's AVX-512 (F, VL, DQ, BW): the level AVX-512 objects are
/// built for, so the JIT and `build` agree on which CPUs run that code; a
/// CPU with F alone (Knights Landing) is offered AVX2.
#[cfg(target_arch = "x86_64")]
fn has_avx512() -> bool {
    has_avx2()
        && std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512vl")
        && std::arch::is_x86_feature_detected!("avx512dq")
        && std::arch::is_x86_feature_detected!("avx512bw")
}

/// AVX512_BF16 beside x86-64-v4's AVX-512 (`vcvtne2ps2bf16`,
/// `vdpbf16ps`).
#[cfg(target_arch = "x86_64")]
pub fn has_bf16() -> bool {
    has_avx512() && std::arch::is_x86_feature_detected!("avx512bf16")
}

/// No bf16 instructions off x86-64.
#[cfg(not(target_arch = "x86_64"))]
pub fn has_bf16() -> bool {
    false
}

/// AMX tiles with bf16 products (CPUID leaf 7: EDX bit 24 AMX-TILE, bit
/// 22 AMX-BF16) beside [`has_bf16`]; whether the OS grants the tile state
/// is another question (`convjit_jit::tiles_refused`).
#[cfg(target_arch = "x86_64")]
pub fn has_amx_bf16() -> bool {
    let leaf7 = std::arch::x86_64::__cpuid_count(7, 0);
    has_bf16() && leaf7.edx & (1 << 24) != 0 && leaf7.edx & (1 << 22) != 0
}

#[cfg(not(target_arch = "x86_64"))]
pub fn has_amx_bf16() -> bool {
    false
}

/// The CPU's vendor is AMD (CPUID leaf 0: "AuthenticAMD"): where
/// `vdpbf16ps` issues like an FMA (Zen 4), so bf16 stages off tiles run
/// it by default (`stage_plan::Bf16Units::Auto`).
#[cfg(target_arch = "x86_64")]
pub fn is_amd() -> bool {
    let leaf0 = std::arch::x86_64::__cpuid(0);
    // "Auth" "enti" "cAMD" in ebx, edx, ecx.
    [leaf0.ebx, leaf0.edx, leaf0.ecx] == [0x6874_7541, 0x6974_6e65, 0x444d_4163]
}

#[cfg(not(target_arch = "x86_64"))]
pub fn is_amd() -> bool {
    false
}

#[cfg(not(target_arch = "x86_64"))]
fn has_avx2() -> bool {
    false
}

#[cfg(not(target_arch = "x86_64"))]
fn has_avx512() -> bool {
    false
}
