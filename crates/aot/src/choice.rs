//! Which code generator writes an object's stage functions, for which CPU
//! level, in which precision: `--target`, `--cpu`, `--backend` and
//! `--precision` combined.
//!
//! - aarch64: Cranelift (ARMv8-A with NEON), f32; `--cpu`, an x86 backend
//!   or bf16 is a usage error.
//! - x86_64: `--cpu` is the level the whole object is compiled for
//!   (Cranelift's flags for the wrapper and packing functions, and what the
//!   header says the CPU must have). Without `--cpu`: a host build (no
//!   `--target`) is `native`; an explicit target is the level an x86
//!   backend implies (`avx512`: x86-64-v4), else x86-64-v3.
//!   `--backend auto` is the widest generator of the level (v3: avx2,
//!   v4 and the named CPUs: avx512, native: what the host runs); `cranelift`
//!   keeps Cranelift's stage functions; `avx512` needs the level to have
//!   AVX-512F (with `--cpu x86-64-v3` a usage error); with `native`, naming
//!   a generator the host cannot run is an error of the input
//!   ([`AotError::Host`]). An explicit level need not run on the build host
//!   (a cross build).
//! - bf16 needs a CPU with AVX512_BF16 (`sapphirerapids`, `znver4`, or
//!   `native` on such a host) and the avx512 generator; its conv and
//!   pointwise stages run on AMX tiles where the CPU has them
//!   (`sapphirerapids`, or `native` on a host with AMX-BF16).

use crate::AotError;
use convjit_ir::Precision;
use convjit_plan::Backend;
use std::fmt;

/// The x86-64 level an object is built for (`convjit build --cpu`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cpu {
    /// x86-64-v3: AVX2, FMA, BMI1/2, LZCNT.
    X86_64V3,
    /// x86-64-v4: x86-64-v3 and AVX-512F/DQ/VL/BW.
    X86_64V4,
    /// Intel Sapphire Rapids: x86-64-v4, AVX512_BF16 and AMX (tiles,
    /// bf16 products).
    SapphireRapids,
    /// AMD Zen 4: x86-64-v4 and AVX512_BF16, no AMX.
    Znver4,
    /// The build host's CPU, with all its features (like `-march=native`).
    Native,
}

impl Cpu {
    /// Every level, as the command line spells them.
    pub const ALL: [Cpu; 5] = [
        Cpu::X86_64V3,
        Cpu::X86_64V4,
        Cpu::SapphireRapids,
        Cpu::Znver4,
        Cpu::Native,
    ];

    /// The command line's spelling.
    pub fn name(self) -> &'static str {
        match self {
            Cpu::X86_64V3 => "x86-64-v3",
            Cpu::X86_64V4 => "x86-64-v4",
            Cpu::SapphireRapids => "sapphirerapids",
            Cpu::Znver4 => "znver4",
            Cpu::Native => "native",
        }
    }

    pub fn parse(s: &str) -> Option<Cpu> {
        Cpu::ALL.into_iter().find(|c| c.name() == s)
    }

    /// Whether the level has x86-64-v4's AVX-512 (`native`: the host's).
    pub fn has_avx512(self) -> bool {
        match self {
            Cpu::X86_64V3 => false,
            Cpu::X86_64V4 | Cpu::SapphireRapids | Cpu::Znver4 => true,
            Cpu::Native => Backend::Avx512.host_has(),
        }
    }

    /// Whether the level has AVX512_BF16 (`native`: the host's).
    pub fn has_bf16(self) -> bool {
        match self {
            Cpu::X86_64V3 | Cpu::X86_64V4 => false,
            Cpu::SapphireRapids | Cpu::Znver4 => true,
            Cpu::Native => convjit_plan::backend::has_bf16(),
        }
    }

    /// Whether the level has AMX tiles with bf16 products (`native`: the
    /// host's CPU; the OS's grant is asked by the object when it runs).
    pub fn has_amx_bf16(self) -> bool {
        match self {
            Cpu::SapphireRapids => true,
            Cpu::Native => convjit_plan::backend::has_amx_bf16(),
            _ => false,
        }
    }
}

impl fmt::Display for Cpu {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The resolved choice: a concrete generator and, for x86_64, the level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Choice {
    /// Writes the stage functions: `Cranelift`, `Avx2` or `Avx512`.
    pub generator: Backend,
    /// `None` for aarch64.
    pub cpu: Option<Cpu>,
    /// The arithmetic of the stage functions.
    pub precision: Precision,
    /// bf16 conv and pointwise stages run on AMX tiles (where they fill
    /// them: `stage_plan::tile_plan`).
    pub tiles: bool,
    /// bf16 conv, pointwise and grouped stages not on tiles run
    /// `vdpbf16ps` (`stage_plan::dot_plan`): a CPU without AMX where it
    /// issues like an FMA (znver4, or the host's on an AMD CPU; see
    /// `stage_plan::Bf16Units`).
    pub dot: bool,
}

const BF16_CPUS: &str = "--cpu sapphirerapids (AMX) or --cpu znver4 (AVX512_BF16)";

/// Combines the options as the module documentation says. `x86_64`: the
/// target's architecture; `host_build`: no explicit `--target`.
pub fn choose(
    x86_64: bool,
    host_build: bool,
    cpu: Option<Cpu>,
    backend: Backend,
    precision: Precision,
) -> Result<Choice, AotError> {
    let (generator, cpu) = choose_f32(x86_64, host_build, cpu, backend)?;
    if precision == Precision::F32 {
        return Ok(Choice {
            generator,
            cpu,
            precision,
            tiles: false,
            dot: false,
        });
    }
    let Some(level) = cpu else {
        return Err(AotError::Precision(format!(
            "precision {precision} needs an x86-64 CPU with AVX512_BF16; aarch64 objects are f32"
        )));
    };
    if !level.has_bf16() {
        let why = format!(
            "precision {precision} needs AVX512_BF16, which {} does not have: build for {BF16_CPUS}",
            match level {
                Cpu::Native => "this CPU (--cpu native)".to_string(),
                l => format!("--cpu {l}"),
            }
        );
        return Err(AotError::Precision(why));
    }
    if generator != Backend::Avx512 {
        return Err(AotError::Precision(format!(
            "precision {precision} runs on the avx512 code generator only, not {generator} \
             (--backend auto or avx512)"
        )));
    }
    Ok(Choice {
        generator,
        cpu,
        precision,
        tiles: level.has_amx_bf16(),
        dot: !level.has_amx_bf16()
            && (level == Cpu::Znver4 || level == Cpu::Native && convjit_plan::backend::is_amd()),
    })
}

/// The generator and level, whatever the precision.
fn choose_f32(
    x86_64: bool,
    host_build: bool,
    cpu: Option<Cpu>,
    backend: Backend,
) -> Result<(Backend, Option<Cpu>), AotError> {
    if !x86_64 {
        if let Some(c) = cpu {
            return Err(AotError::Usage(format!(
                "--cpu {c} is for x86_64 targets; aarch64 objects are built for ARMv8-A \
                 with NEON by Cranelift"
            )));
        }
        return match backend {
            Backend::Auto | Backend::Cranelift => Ok((Backend::Cranelift, None)),
            b => Err(AotError::Usage(format!(
                "--backend {b} writes x86-64 code; aarch64 objects use cranelift \
                 (--backend auto or cranelift)"
            ))),
        };
    }
    let cpu = cpu.unwrap_or(match (host_build, backend) {
        (true, _) => Cpu::Native,
        (false, Backend::Avx512) => Cpu::X86_64V4,
        (false, _) => Cpu::X86_64V3,
    });
    if cpu == Cpu::Native && !cfg!(target_arch = "x86_64") {
        return Err(AotError::Usage(
            "--cpu native needs an x86-64 build host; name a level: \
             --cpu x86-64-v3 or x86-64-v4"
                .into(),
        ));
    }
    let generator = match (backend, cpu) {
        (Backend::Auto, Cpu::X86_64V3) => Backend::Avx2,
        (Backend::Auto, Cpu::Native) => Backend::Auto.resolve().map_err(AotError::Host)?,
        (Backend::Auto, _) => Backend::Avx512,
        (Backend::Avx512, Cpu::X86_64V3) => {
            return Err(AotError::Usage(
                "--backend avx512 needs x86-64-v4 (AVX-512F), but --cpu x86-64-v3 was \
                 given: use --cpu x86-64-v4, or --backend avx2"
                    .into(),
            ))
        }
        (b, Cpu::Native) => b.resolve().map_err(|m| {
            AotError::Host(format!(
                "{m}: it cannot be built for this CPU (--cpu native); \
                 name a level to build for another CPU (--cpu x86-64-v3 or x86-64-v4)"
            ))
        })?,
        (b, _) => b,
    };
    Ok((generator, Some(cpu)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(x86: bool, host: bool, cpu: Option<Cpu>, b: Backend) -> (Backend, Option<Cpu>) {
        let c = choose(x86, host, cpu, b, Precision::F32)
            .unwrap_or_else(|e| panic!("{cpu:?} {b}: {e}"));
        (c.generator, c.cpu)
    }

    #[test]
    fn names_round_trip() {
        for c in Cpu::ALL {
            assert_eq!(Cpu::parse(c.name()), Some(c));
        }
        assert_eq!(Cpu::parse("x86-64-v2"), None);
    }

    #[test]
    fn explicit_x86_targets_default_to_v3_and_follow_the_level() {
        use Backend::*;
        use Cpu::*;
        assert_eq!(ok(true, false, None, Auto), (Avx2, Some(X86_64V3)));
        assert_eq!(ok(true, false, None, Avx512), (Avx512, Some(X86_64V4)));
        assert_eq!(
            ok(true, false, None, Cranelift),
            (Cranelift, Some(X86_64V3))
        );
        assert_eq!(
            ok(true, false, Some(X86_64V4), Auto),
            (Avx512, Some(X86_64V4))
        );
        assert_eq!(
            ok(true, false, Some(X86_64V4), Avx2),
            (Avx2, Some(X86_64V4))
        );
        assert_eq!(
            ok(true, false, Some(X86_64V4), Cranelift),
            (Cranelift, Some(X86_64V4))
        );
        // A host build with an explicit level is a cross build too.
        assert_eq!(
            ok(true, true, Some(X86_64V4), Auto),
            (Avx512, Some(X86_64V4))
        );
        let e = choose(true, false, Some(X86_64V3), Avx512, Precision::F32).unwrap_err();
        assert!(matches!(e, AotError::Usage(_)), "{e}");
        assert!(e.to_string().contains("needs x86-64-v4"), "{e}");
    }

    #[test]
    fn native_is_what_the_host_runs() {
        use Backend::*;
        let best = Auto.resolve().unwrap();
        assert_eq!(ok(true, true, None, Auto), (best, Some(Cpu::Native)));
        assert_eq!(
            ok(true, false, Some(Cpu::Native), Auto),
            (best, Some(Cpu::Native))
        );
        for b in [Avx2, Avx512] {
            match choose(true, true, None, b, Precision::F32) {
                Ok(c) => assert!(b.host_has() && c.generator == b),
                Err(e) => {
                    assert!(!b.host_has());
                    assert!(matches!(e, AotError::Host(_)), "{e}");
                    assert!(e.to_string().contains("does not have"), "{e}");
                }
            }
        }
    }

    #[test]
    fn aarch64_is_cranelift_only() {
        assert_eq!(
            ok(false, false, None, Backend::Auto),
            (Backend::Cranelift, None)
        );
        assert_eq!(
            ok(false, true, None, Backend::Cranelift),
            (Backend::Cranelift, None)
        );
        for (cpu, b) in [
            (Some(Cpu::X86_64V3), Backend::Auto),
            (Some(Cpu::Native), Backend::Cranelift),
            (None, Backend::Avx2),
            (None, Backend::Avx512),
        ] {
            let e = choose(false, false, cpu, b, Precision::F32).unwrap_err();
            assert!(matches!(e, AotError::Usage(_)), "{e}");
            assert!(e.to_string().contains("aarch64"), "{e}");
        }
    }

    #[test]
    fn bf16_needs_a_cpu_with_it_and_the_avx512_generator() {
        use Backend::*;
        let bf16 = |cpu, b| choose(true, false, cpu, b, Precision::Bf16);
        let c = bf16(Some(Cpu::SapphireRapids), Auto).unwrap();
        assert_eq!((c.generator, c.tiles), (Avx512, true));
        let c = bf16(Some(Cpu::Znver4), Avx512).unwrap();
        assert_eq!((c.generator, c.tiles, c.dot), (Avx512, false, true));
        // f32 at the named CPUs: their AVX-512, no tiles.
        let c = choose(true, false, Some(Cpu::Znver4), Auto, Precision::F32).unwrap();
        assert_eq!((c.generator, c.tiles), (Avx512, false));
        for (cpu, b, says) in [
            (None, Auto, "--cpu x86-64-v3 does not have"),
            (Some(Cpu::X86_64V4), Auto, "--cpu x86-64-v4 does not have"),
            (
                Some(Cpu::SapphireRapids),
                Avx2,
                "avx512 code generator only",
            ),
            (Some(Cpu::Znver4), Cranelift, "avx512 code generator only"),
        ] {
            let e = bf16(cpu, b).unwrap_err();
            assert!(matches!(e, AotError::Precision(_)), "{e}");
            assert!(e.to_string().contains(says), "{e}");
        }
        let e = choose(false, false, None, Auto, Precision::Bf16).unwrap_err();
        assert!(e.to_string().contains("aarch64 objects are f32"), "{e}");
        match choose(true, true, None, Auto, Precision::Bf16) {
            Ok(c) => assert_eq!(c.tiles, convjit_plan::backend::has_amx_bf16()),
            Err(e) => assert!(matches!(e, AotError::Precision(_)), "{e}"),
        }
    }
}
