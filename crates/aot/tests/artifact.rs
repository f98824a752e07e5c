//! What `build` produces, without running it: the object's symbols and
//! sections, the header, the text forms, the errors.

mod common;

use common::layer;
use convjit_aot::{build, AotError, BuildOptions, Emit, SUPPORTED_TARGETS};
use convjit_ir::{Layer, Weights};
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

fn opts(target: Option<&str>, weights: Option<Weights>) -> BuildOptions {
    BuildOptions {
        target: target.map(String::from),
        weights,
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
    for (target, arch) in [
        (None, Architecture::X86_64),
        (Some("x86_64-unknown-linux-gnu"), Architecture::X86_64),
        (Some("aarch64-unknown-linux-gnu"), Architecture::Aarch64),
    ] {
        for baked in [true, false] {
            let what = format!("{target:?} baked={baked}");
            let o = opts(target, baked.then(|| w.clone()));
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
                    "convjit_mbv2_inverted_residual_pack",
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
                if name == ".rodata" {
                    assert_eq!(s.align(), 64, "{what}");
                    // Baked: the packed weights; else the u32 permutation table.
                    // Both have one 4-byte entry per packed float.
                    assert!(s.size() >= 4 * 8528, "{what}: {}", s.size());
                }
            }
            assert!(
                f.section_by_name(".note.GNU-stack").is_some(),
                "{what}: no .note.GNU-stack"
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
        "int convjit_mbv2_inverted_residual_pack(const float *const arrays[], float *packed);",
        "int convjit_mbv2_inverted_residual(const float *packed, const float *input, \
         float *output, size_t batch);",
    ] {
        assert!(h.contains(want), "header lacks {want:?}:\n{h}");
    }
}

#[test]
fn clif_and_asm_list_every_function() {
    let l = mbv2();
    for target in [None, Some("aarch64-unknown-linux-gnu")] {
        let clif = build(&l, &opts(target, None), Emit::Clif).unwrap();
        let clif = String::from_utf8(clif.object).unwrap();
        // Three stages, the pack function, the entry point.
        assert_eq!(clif.matches("\nfunction u0:").count(), 5, "{clif}");
        assert!(
            clif.starts_with("; convjit_mbv2_inverted_residual_stage0\nfunction u0:0("),
            "{clif}"
        );
        assert!(clif.contains("; convjit_mbv2_inverted_residual_pack\nfunction u0:"));
        assert!(
            clif.contains(" fma.f32x4 ") || clif.contains(" fma "),
            "{clif}"
        );
        assert!(clif.contains("call fn"), "{clif}");
        let asm = build(&l, &opts(target, None), Emit::Asm).unwrap();
        let asm = String::from_utf8(asm.object).unwrap();
        for f in ["_stage0", "_stage1", "_stage2", "_pack", ""] {
            let line = format!("; function convjit_mbv2_inverted_residual{f}\n");
            assert!(asm.contains(&line), "{target:?}: no {line:?}");
        }
        let fma = if target.is_some() { "fmla" } else { "vfmadd" };
        assert!(asm.contains(fma), "{target:?}: no {fma} in\n{asm}");
    }
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
}
