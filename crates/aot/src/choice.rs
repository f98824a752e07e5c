//! Which code generator writes an object's stage functions, for which CPU
//! level: `--target`, `--cpu` and `--backend` combined.
//!
//! - aarch64: Cranelift (ARMv8-A with NEON); `--cpu` or an x86 backend is
//!   a usage error.
//! - x86_64: `--cpu` is the level the whole object is compiled for
//!   (Cranelift's flags for the wrapper and packing functions, and what the
//!   header says the CPU must have). Without `--cpu`: a host build (no
//!   `--target`) is `native`; an explicit target is the level an x86
//!   backend implies (`avx512`: x86-64-v4), else x86-64-v3.
//!   `--backend auto` is the widest generator of the level (v3: avx2,
//!   v4: avx512, native: what the host runs); `cranelift` keeps Cranelift's
//!   stage functions; `avx512` needs the level to have AVX-512F (with
//!   `--cpu x86-64-v3` a usage error); with `native`, naming a generator
//!   the host cannot run is an error of the input ([`AotError::Host`]).
//!   An explicit level need not run on the build host (a cross build).

use crate::AotError;
use convjit_plan::Backend;
use std::fmt;

/// The x86-64 level an object is built for (`convjit build --cpu`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cpu {
    /// x86-64-v3: AVX2, FMA, BMI1/2, LZCNT.
    X86_64V3,
    /// x86-64-v4: x86-64-v3 and AVX-512F/DQ/VL.
    X86_64V4,
    /// The build host's CPU, with all its features (like `-march=native`).
    Native,
}

impl Cpu {
    /// Every level, as the command line spells them.
    pub const ALL: [Cpu; 3] = [Cpu::X86_64V3, Cpu::X86_64V4, Cpu::Native];

    /// The command line's spelling.
    pub fn name(self) -> &'static str {
        match self {
            Cpu::X86_64V3 => "x86-64-v3",
            Cpu::X86_64V4 => "x86-64-v4",
            Cpu::Native => "native",
        }
    }

    pub fn parse(s: &str) -> Option<Cpu> {
        Cpu::ALL.into_iter().find(|c| c.name() == s)
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
}

/// Combines the options as the module documentation says. `x86_64`: the
/// target's architecture; `host_build`: no explicit `--target`.
pub fn choose(
    x86_64: bool,
    host_build: bool,
    cpu: Option<Cpu>,
    backend: Backend,
) -> Result<Choice, AotError> {
    if !x86_64 {
        if let Some(c) = cpu {
            return Err(AotError::Usage(format!(
                "--cpu {c} is for x86_64 targets; aarch64 objects are built for ARMv8-A \
                 with NEON by Cranelift"
            )));
        }
        return match backend {
            Backend::Auto | Backend::Cranelift => Ok(Choice {
                generator: Backend::Cranelift,
                cpu: None,
            }),
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
        (Backend::Auto, Cpu::X86_64V4) => Backend::Avx512,
        (Backend::Auto, Cpu::Native) => Backend::Auto.resolve().map_err(AotError::Host)?,
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
    Ok(Choice {
        generator,
        cpu: Some(cpu),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(x86: bool, host: bool, cpu: Option<Cpu>, b: Backend) -> (Backend, Option<Cpu>) {
        let c = choose(x86, host, cpu, b).unwrap_or_else(|e| panic!("{cpu:?} {b}: {e}"));
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
        let e = choose(true, false, Some(X86_64V3), Avx512).unwrap_err();
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
            match choose(true, true, None, b) {
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
            let e = choose(false, false, cpu, b).unwrap_err();
            assert!(matches!(e, AotError::Usage(_)), "{e}");
            assert!(e.to_string().contains("aarch64"), "{e}");
        }
    }
}
