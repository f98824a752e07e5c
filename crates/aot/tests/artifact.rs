//! What `build` produces, without running it: the object's symbols and
//! sections, the header, the text forms, the errors.

mod common;

use common::layer;
use convjit_aot::{build, AotError, BuildOptions, Cpu, Emit, SUPPORTED_TARGETS};
use convjit_ir::{Layer, Weights};
use convjit_plan::Backend;
use cranelift_object::object::{
    self, Architecture, Object, ObjectSection, ObjectSymbol, SectionKind,
};

fn mbv2() -> Layer {
    let src = include_str!("../../../examples/mobilenet_v2.conv");
    let mut ls = convjit_ir::compile_source(src).unwrap();
    let i = ls
        .iter()
        .position(|l| l.name == "mbv2_inverted_residual")
        .unwrap();
    ls.remove(i)
}

/// The options for an explicit x86_64 target at `cpu` with `backend`.
fn x86(cpu: Option<Cpu>, backend: Backend, weights: Option<Weights>) -> BuildOptions {
    BuildOptions {
        cpu,
        backend,
        ..opts(Some("x86_64-unknown-linux-gnu"), weights)
    }
}

/// A header's comment with its lines joined (the text is word-wrapped).
fn unwrapped(header: &str) -> String {
    header.replace("\n * ", " ")
}

fn opts(target: Option<&str>, weights: Option<Weights>) -> BuildOptions {
    BuildOptions {
        target: target.map(String::from),
        weights,
        ..BuildOptions::default()
    }
}

/// (defined global symbols, undefined symbols, local function symbols).
fn symbols(bytes: &[u8]) -> (Vec<String>, Vec<String>, Vec<String>) {
    let f = object::File::parse(bytes).unwrap();
    let (mut def, mut undef, mut local) = (Vec::new(), Vec::new(), Vec::new());
    for s in f.symbols() {
        let name = s.name().unwrap().to_string();
        if name.is_empty() || s.kind() == object::SymbolKind::File {
            continue;
        }
        if s.is_undefined() {
            undef.push(name);
        } else if s.is_global() {
            def.push(name);
        } else if s.kind() == object::SymbolKind::Text {
            local.push(name);
        }
    }
    def.sort();
    undef.sort();
    local.sort();
    (def, undef, local)
}

#[test]
fn objects_export_the_kernel_and_import_only_malloc_and_free() {
    let l = mbv2();
    let w = Weights::random(&l, 1);
    let builds = [
        (opts(None, None), Architecture::X86_64),
        (
            opts(Some("x86_64-unknown-linux-gnu"), None),
            Architecture::X86_64,
        ),
        (
            x86(Some(Cpu::X86_64V4), Backend::Auto, None),
            Architecture::X86_64,
        ),
        (x86(None, Backend::Cranelift, None), Architecture::X86_64),
        (
            x86(Some(Cpu::X86_64V4), Backend::Avx2, None),
            Architecture::X86_64,
        ),
        (
            opts(Some("aarch64-unknown-linux-gnu"), None),
            Architecture::Aarch64,
        ),
    ];
    for (base, arch) in builds {
        for baked in [true, false] {
            let o = BuildOptions {
                weights: baked.then(|| w.clone()),
                ..base.clone()
            };
            let what = format!("{:?} {:?} {} baked={baked}", o.target, o.cpu, o.backend);
            let a = build(&l, &o, Emit::Object).unwrap();
            assert_eq!(a.symbol, "convjit_mbv2_inverted_residual");
            let f = object::File::parse(&*a.object).unwrap();
            assert_eq!(f.format(), object::BinaryFormat::Elf, "{what}");
            assert_eq!(f.architecture(), arch, "{what}");
            assert!(f.is_64() && f.is_little_endian(), "{what}");
            let (def, undef, local) = symbols(&a.object);
            let want: Vec<&str> = if baked {
                vec!["convjit_mbv2_inverted_residual"]
            } else {
                vec![
                    "convjit_mbv2_inverted_residual",
                    "convjitpack_mbv2_inverted_residual",
                ]
            };
            assert_eq!(def, want, "{what}");
            assert_eq!(undef, ["free", "malloc"], "{what}");
            assert_eq!(
                local.len(),
                3,
                "{what}: one local function per stage: {local:?}"
            );
            // No writable data: nothing global to race on.
            for s in f.sections() {
                let name = s.name().unwrap_or("?");
                assert!(
                    !matches!(
                        s.kind(),
                        SectionKind::Data | SectionKind::UninitializedData | SectionKind::Tls
                    ),
                    "{what}: writable section {name}"
                );
                // The x86 generators' functions start on cache lines.
                if name == ".text" && a.generator != Backend::Cranelift {
                    assert!(s.align() >= 64, "{what}: .text aligned {}", s.align());
                }
                if name == ".rodata" {
                    assert_eq!(s.align(), 64, "{what}");
                    // Baked: the packed weights (8528 floats); else the
                    // packing's copies, a few per run.
                    if baked {
                        assert!(s.size() >= 4 * 8528, "{what}: {}", s.size());
                    } else {
                        assert!(s.size() <= 4096, "{what}: {}", s.size());
                    }
                }
            }
            assert!(
                f.section_by_name(".note.GNU-stack").is_some(),
                "{what}: no .note.GNU-stack"
            );
        }
    }
}

/// Without weights, an object holds code and a table of a few copies
/// per run: its size does not grow with the weights (a 64 MB pointwise
/// stage, one-channel kernels whose vectors would be mostly padding).
#[test]
fn objects_without_weights_are_the_size_of_their_code() {
    let layers = [
        "layer big { input 2x2x4096\n p: pointwise 4096, bias }",
        "layer grey { input 600x600x1\n c: conv 512x512 -> 1, bias }",
        "layer dw { input 8x1100x1\n d: depthwise 1x1024, multiplier 4, bias }",
        "layer g { input 4x4x8192\n c: conv 3x3 -> 8192, groups 8192, pad same, bias }",
    ];
    let targets = [
        opts(Some("x86_64-unknown-linux-gnu"), None),
        x86(Some(Cpu::X86_64V4), Backend::Auto, None),
        x86(None, Backend::Cranelift, None),
        opts(Some("aarch64-unknown-linux-gnu"), None),
    ];
    for src in layers {
        let l = layer(src);
        let weights: usize = l.stages.iter().map(|s| s.weight_len()).sum();
        for o in &targets {
            let a = build(&l, o, Emit::Object).unwrap();
            assert!(
                a.object.len() < 1 << 20,
                "{src} for {:?} {:?}: {} bytes of object for {} bytes of weights",
                o.target,
                o.cpu,
                a.object.len(),
                4 * weights
            );
        }
    }
}

#[test]
fn one_stage_layers_need_no_scratch() {
    let l = layer("layer one { input 4x4x8\n p: pointwise 8 }");
    let a = build(&l, &opts(None, None), Emit::Object).unwrap();
    let (_, undef, _) = symbols(&a.object);
    assert!(undef.is_empty(), "{undef:?}");
    assert!(a
        .header
        .contains("#define CONVJIT_one_SCRATCH_BYTES ((size_t)0)"));
}

#[test]
fn header_documents_shapes_layouts_and_signatures() {
    let l = mbv2();
    let baked = build(&l, &opts(None, Some(Weights::random(&l, 1))), Emit::Object).unwrap();
    let h = &baked.header;
    for want in [
        "#ifndef CONVJIT_mbv2_inverted_residual_H",
        "#include <stddef.h>",
        "extern \"C\" {",
        "input  [N][56][56][24]",
        "output [N][56][56][24]",
        "0. expand: pointwise 144",
        "[56][56][144] -> [56][56][144]; kernel 3x3, stride 1x1, dilation 1x1,",
        "pad top 1 bottom 1 left 1 right 1;\n *      bias yes; activation relu6; residual no",
        "activation none; residual yes",
        "#define CONVJIT_mbv2_inverted_residual_INPUT_FLOATS ((size_t)75264)",
        "#define CONVJIT_mbv2_inverted_residual_SCRATCH_BYTES ((size_t)3612672)",
        "#define CONVJIT_ENOMEM 1",
        "int convjit_mbv2_inverted_residual(const float *input, float *output, size_t batch);",
    ] {
        assert!(h.contains(want), "header lacks {want:?}:\n{h}");
    }
    assert!(!h.contains("_pack("), "{h}");
    let rt = build(&l, &opts(None, None), Emit::Object).unwrap();
    let h = &rt.header;
    for want in [
        "arrays[0] = [24][144] (expand.weight)",
        "arrays[2] = [3][3][144][1] (dw.weight)",
        "arrays[5] = [24] (project.bias)",
        "#define CONVJIT_mbv2_inverted_residual_NUM_ARRAYS 6",
        "#define CONVJIT_mbv2_inverted_residual_PACKED_FLOATS ((size_t)",
        "int convjitpack_mbv2_inverted_residual(const float *const arrays[], float *packed);",
        "int convjit_mbv2_inverted_residual(const float *packed, const float *input, \
         float *output, size_t batch);",
    ] {
        assert!(h.contains(want), "header lacks {want:?}:\n{h}");
    }
}

#[test]
fn clif_and_asm_list_every_function() {
    let l = mbv2();
    let cranelift = BuildOptions {
        backend: Backend::Cranelift,
        ..opts(None, None)
    };
    for o in [cranelift, opts(Some("aarch64-unknown-linux-gnu"), None)] {
        let target = o.target.as_deref();
        let clif = build(&l, &o, Emit::Clif).unwrap();
        let clif = String::from_utf8(clif.object).unwrap();
        // Three stages, the pack function, the entry point.
        assert_eq!(clif.matches("\nfunction u0:").count(), 5, "{clif}");
        assert!(
            clif.starts_with("; convjit_mbv2_inverted_residual_stage0\nfunction u0:0("),
            "{clif}"
        );
        assert!(clif.contains("; convjitpack_mbv2_inverted_residual\nfunction u0:"));
        assert!(
            clif.contains(" fma.f32x4 ") || clif.contains(" fma "),
            "{clif}"
        );
        assert!(clif.contains("call fn"), "{clif}");
        let asm = build(&l, &o, Emit::Asm).unwrap();
        let asm = String::from_utf8(asm.object).unwrap();
        for f in ["_stage0", "_stage1", "_stage2", ""] {
            let line = format!("; function convjit_mbv2_inverted_residual{f}\n");
            assert!(asm.contains(&line), "{target:?}: no {line:?}");
        }
        assert!(asm.contains("; function convjitpack_mbv2_inverted_residual\n"));
        let fma = if target.is_some() { "fmla" } else { "vfmadd" };
        assert!(asm.contains(fma), "{target:?}: no {fma} in\n{asm}");
    }
}

/// x86 stage functions: their disassembly in `--emit asm`, a note where
/// CLIF would be; the wrapper and pack functions stay Cranelift's.
#[test]
fn x86_stage_functions_are_listed_as_x86() {
    let l = mbv2();
    for (cpu, generator, register) in [
        (Cpu::X86_64V3, "avx2", "ymm"),
        (Cpu::X86_64V4, "avx512", "zmm"),
    ] {
        let o = x86(Some(cpu), Backend::Auto, None);
        let note = format!("; written by convjit's {generator} generator: x86-64 machine code");
        let clif = build(&l, &o, Emit::Clif).unwrap();
        let clif = String::from_utf8(clif.object).unwrap();
        // The pack function and the entry point only.
        assert_eq!(clif.matches("\nfunction u0:").count(), 2, "{clif}");
        for i in 0..3 {
            let want = format!("; convjit_mbv2_inverted_residual_stage{i}\n{note}");
            assert!(clif.contains(&want), "{cpu}: no {want:?} in\n{clif}");
        }
        assert!(clif.contains("; convjitpack_mbv2_inverted_residual\nfunction u0:"));
        assert!(!clif.contains(" fma"), "{clif}");

        let asm = build(&l, &o, Emit::Asm).unwrap();
        let asm = String::from_utf8(asm.object).unwrap();
        for i in 0..3 {
            let want = format!("; function convjit_mbv2_inverted_residual_stage{i}\n{note}");
            assert!(asm.contains(&want), "{cpu}: no {want:?}");
        }
        // Cranelift's listing of the rest follows.
        for f in ["convjitpack_", "convjit_"] {
            let line = format!("; function {f}mbv2_inverted_residual\n");
            assert!(asm.contains(&line), "{cpu}: no {line:?}");
        }
        let fma = format!("vfmadd231ps {register}");
        assert!(asm.contains(&fma), "{cpu}: no {fma} in\n{asm}");
    }
}

/// bf16: the expand stage (on tiles for Sapphire Rapids, on `vdpbf16ps`
/// for Zen 4: the same epilogue) stores bf16 (`vpmovdw`), which the
/// depthwise stage widens (`vpmovzxwd`); f32 code keeps f32.
#[test]
fn bf16_objects_keep_the_expand_output_in_bf16() {
    let l = mbv2();
    use convjit_ir::Precision::{Bf16, F32};
    for (cpu, precision, kept) in [
        (Cpu::SapphireRapids, Bf16, true),
        (Cpu::Znver4, Bf16, true),
        (Cpu::SapphireRapids, F32, false),
    ] {
        let o = BuildOptions {
            precision,
            ..x86(Some(cpu), Backend::Auto, None)
        };
        let asm = build(&l, &o, Emit::Asm).unwrap();
        let asm = String::from_utf8(asm.object).unwrap();
        for op in ["vpmovdw", "vpmovzxwd"] {
            assert_eq!(asm.contains(op), kept, "{cpu} {precision:?}: {op}");
        }
    }
}

#[test]
fn headers_say_which_generator_and_cpu() {
    let l = mbv2();
    for (o, generator, needs) in [
        (
            x86(None, Backend::Auto, None),
            Backend::Avx2,
            "It requires a CPU with AVX2 and FMA (x86-64-v3).",
        ),
        (
            x86(None, Backend::Avx512, None),
            Backend::Avx512,
            "It requires a CPU with AVX-512F (x86-64-v4).",
        ),
        (
            x86(Some(Cpu::X86_64V4), Backend::Cranelift, None),
            Backend::Cranelift,
            "It requires a CPU with AVX-512F (x86-64-v4).",
        ),
        (
            opts(Some("aarch64-unknown-linux-gnu"), None),
            Backend::Cranelift,
            "It requires an ARMv8-A CPU with NEON",
        ),
    ] {
        let a = build(&l, &o, Emit::Object).unwrap();
        assert_eq!(a.generator, generator);
        let h = unwrapped(&a.header);
        assert!(h.contains(needs), "{needs:?} not in\n{h}");
        let who = match generator {
            Backend::Avx2 => "Stage functions: convjit's x86-64 AVX2 generator",
            Backend::Avx512 => "Stage functions: convjit's x86-64 AVX-512 generator",
            _ => "All functions: Cranelift",
        };
        assert!(h.contains(who), "{who:?} not in\n{h}");
    }
    // For this machine: its best generator, and it says so.
    let a = build(&l, &opts(None, None), Emit::Object).unwrap();
    assert_eq!(a.generator, Backend::Auto.resolve().unwrap());
    assert_eq!(a.cpu, Some(Cpu::Native));
    assert!(unwrapped(&a.header).contains("(built for the host: native)"));
}

/// The packed weights follow the plans of the generator that reads them:
/// the AVX-512 and Cranelift objects of one layer pack differently.
#[test]
fn packing_follows_the_generator() {
    let l = layer("layer p { input 5x6x13\n p: pointwise 11, bias }");
    let packed = |b: Backend| {
        let a = build(&l, &x86(None, b, None), Emit::Object).unwrap();
        let h = a.header;
        let key = "#define CONVJIT_p_PACKED_FLOATS ((size_t)";
        let at = h.find(key).unwrap() + key.len();
        h[at..].split(')').next().unwrap().parse::<usize>().unwrap()
    };
    let ns: Vec<usize> = [Backend::Cranelift, Backend::Avx2, Backend::Avx512]
        .into_iter()
        .map(packed)
        .collect();
    // 11 output channels: vectors of 4, 8 and 16 lanes pad them differently.
    assert!(ns[0] != ns[2], "{ns:?}");
}

#[test]
fn layer_names_become_c_identifiers() {
    let mut l = layer("layer ok { input 4x4x4\n p: pointwise 4 }");
    l.name = "9-lives".into();
    let a = build(&l, &opts(None, None), Emit::Object).unwrap();
    assert_eq!(a.symbol, "convjit__9_lives");
    assert!(a
        .header
        .contains("int convjit__9_lives(const float *packed"));
}

#[test]
fn errors_are_clear() {
    let l = mbv2();
    let err = |o: &BuildOptions, l: &Layer| build(l, o, Emit::Object).unwrap_err().to_string();
    let e = err(&opts(Some("mips64-unknown-linux-gnuabi64"), None), &l);
    assert!(e.contains("architecture 'mips64'"), "{e}");
    for t in SUPPORTED_TARGETS {
        assert!(e.contains(t), "{e}");
    }
    let e = err(&opts(Some("armv7-unknown-linux-gnueabihf"), None), &l);
    assert!(e.contains("not a 64-bit target"), "{e}");
    let e = err(&opts(Some("what-is-this"), None), &l);
    assert!(e.starts_with("unknown target 'what-is-this'"), "{e}");
    // Options that contradict each other or the target.
    let arm = |cpu, backend| BuildOptions {
        cpu,
        backend,
        ..opts(Some("aarch64-unknown-linux-gnu"), None)
    };
    for o in [
        x86(Some(Cpu::X86_64V3), Backend::Avx512, None),
        arm(Some(Cpu::X86_64V4), Backend::Auto),
        arm(None, Backend::Avx2),
    ] {
        let r = build(&l, &o, Emit::Object);
        assert!(matches!(r, Err(AotError::Usage(_))), "{o:?}: {r:?}");
    }
    // Weights made for another layer.
    let other = layer("layer o { input 4x4x4\n p: pointwise 4 }");
    let w = Weights::random(&other, 1);
    let r = build(&l, &opts(None, Some(w)), Emit::Object);
    assert!(matches!(r, Err(AotError::Data(_))), "{r:?}");
    let mut empty = other.clone();
    empty.stages.clear();
    let e = err(&opts(None, None), &empty);
    assert!(e.contains("has no stages"), "{e}");
    // A hand-built layer whose shapes do not chain.
    let mut broken = l.clone();
    broken.stages[1].input.c += 1;
    let r = build(&broken, &opts(None, None), Emit::Object);
    assert!(matches!(r, Err(AotError::Data(_))), "{r:?}");
    assert!(err(&opts(None, None), &broken).contains("does not match the previous output"));
    // More stages than any layer's code may hold: refused before planning.
    let stages: String = (0..=convjit_plan::limits::MAX_STAGES)
        .map(|i| format!(" s{i}: pointwise 4\n"))
        .collect();
    let many = layer(&format!("layer many {{ input 4x4x4\n{stages} }}"));
    let r = build(&many, &opts(None, None), Emit::Object);
    assert!(matches!(r, Err(AotError::Layer(_))), "{r:?}");
    let e = err(&opts(None, None), &many);
    assert!(
        e.starts_with("layer 'many' has 4001 stages: more than 4000 never compile"),
        "{e}"
    );
}

/// The packing function is a loop over a table of stages: its code is
/// as long for 2 stages as for 300 (written per stage, its register
/// allocation took seconds for a thousand).
#[test]
fn the_packing_function_does_not_grow_with_the_stages() {
    let pack_clif = |n: usize| {
        let stages: String = (0..n)
            .map(|i| format!(" s{i}: pointwise 4, bias\n"))
            .collect();
        let l = layer(&format!("layer chain {{ input 2x2x4\n{stages} }}"));
        let clif = build(&l, &opts(None, None), Emit::Clif).unwrap().object;
        let clif = String::from_utf8(clif).unwrap();
        let start = clif
            .find("; convjitpack_chain\n")
            .expect("the packing function");
        let end = clif[start..].find("\n}\n").expect("its end") + start;
        clif[start..end].lines().count()
    };
    // Lines of CLIF: only the counts in its constants differ.
    assert_eq!(pack_clif(2), pack_clif(300));
}

/// `verify --object` reads an object's facts before linking it: a real
/// object's facts read back, and every truncation of it, an empty file, a
/// file of garbage and one past the symbol table are errors or "no facts",
/// never a panic.
#[test]
fn facts_read_back_and_hostile_objects_are_errors() {
    use convjit_aot::facts::{read, Facts};
    let l = layer("layer f { input 6x5x4\n c: conv 3x3 -> 8, pad same, bias }");
    let w = Weights::random(&l, 1);
    let a = build(&l, &opts(None, Some(w)), Emit::Object).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.o");
    std::fs::write(&path, &a.object).unwrap();
    let facts = read(&path, &a.symbol).unwrap().unwrap();
    assert_eq!(facts, Facts::of(&l, true, convjit_ir::Precision::F32));
    // Another layer's symbol is not in it.
    let e = read(&path, "convjit_g").unwrap_err();
    assert!(e.contains("no function convjit_g"), "{e}");
    let n = a.object.len();
    let mut cuts: Vec<usize> = (0..n).step_by((n / 97).max(1)).collect();
    cuts.extend([0, 1, 4, 16, 63, 64, n - 1]);
    for cut in cuts {
        std::fs::write(&path, &a.object[..cut]).unwrap();
        let _ = read(&path, &a.symbol);
    }
    let mut garbage = a.object.clone();
    for (i, b) in garbage.iter_mut().enumerate().skip(64) {
        *b ^= (i * 131) as u8;
    }
    std::fs::write(&path, &garbage).unwrap();
    let _ = read(&path, &a.symbol);
    std::fs::write(&path, b"").unwrap();
    assert!(read(&path, &a.symbol).is_err());
    assert!(read(dir.path(), &a.symbol).is_err());
}
