//! The C header that goes beside the object: the signature(s), every
//! shape and layout, return codes. Valid C99 and C++.

use crate::wrapper::Scratch;
use crate::{Backend, Cpu, PackLayout, Target, PACK_ALIGN};
use convjit_ir::{Activation, Layer, Shape, Stage};
use std::fmt::Write;

/// Text safe inside a `/* */` comment (names come from the language and
/// are already safe; this guards hand-built layers).
fn safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-:+ ".contains(c) {
                c
            } else {
                '?'
            }
        })
        .collect::<String>()
        .replace("??", "? ")
}

fn dims(v: &[usize]) -> String {
    v.iter().map(|d| format!("[{d}]")).collect()
}

fn hwc(s: Shape) -> String {
    dims(&[s.h, s.w, s.c])
}

fn stage_line(i: usize, s: &Stage) -> String {
    let [kh, kw] = s.kernel;
    let [sh, sw] = s.stride;
    let [dh, dw] = s.dilation;
    let p = s.padding;
    let act = match s.activation {
        Activation::None => "none",
        Activation::Relu => "relu",
        Activation::Relu6 => "relu6",
    };
    format!(
        " *   {i}. {name}: {op}\n\
         \x20*      {inp} -> {out}; kernel {kh}x{kw}, stride {sh}x{sw}, dilation {dh}x{dw},\n\
         \x20*      pad top {pt} bottom {pb} left {pl} right {pr};\n\
         \x20*      bias {bias}; activation {act}; residual {res}\n",
        name = safe(&s.name),
        op = safe(&s.describe_op()),
        inp = hwc(s.input),
        out = hwc(s.output),
        pt = p.top,
        pb = p.bottom,
        pl = p.left,
        pr = p.right,
        bias = if s.bias_key.is_some() { "yes" } else { "no" },
        res = if s.residual {
            "yes (+ the layer input)"
        } else {
            "no"
        },
    )
}

/// Appends `text` to a comment, words wrapped at 78 columns: the first
/// line starts with `first`, the others with `lead`, then a space.
fn para_with(w: &mut String, first: &str, lead: &str, text: &str) {
    let mut line = String::from(first);
    let mut empty = true;
    for word in text.split_whitespace() {
        if !empty && line.len() + 1 + word.len() > 78 {
            w.push_str(&line);
            w.push('\n');
            line = String::from(lead);
        }
        line.push(' ');
        line.push_str(word);
        empty = false;
    }
    w.push_str(&line);
    w.push('\n');
}

fn para(w: &mut String, text: &str) {
    para_with(w, " *", " *", text);
}

/// Who wrote the code and what CPU it needs.
fn generator_text(target: &Target) -> String {
    let who = match target.choice.generator {
        Backend::Avx2 => {
            "Stage functions: convjit's x86-64 AVX2 generator (256-bit ymm vectors); \
             entry point and packing: Cranelift."
        }
        Backend::Avx512 => {
            "Stage functions: convjit's x86-64 AVX-512 generator (512-bit zmm vectors); \
             entry point and packing: Cranelift."
        }
        _ => "All functions: Cranelift (128-bit vectors).",
    };
    let generator_needs = match target.choice.generator {
        Backend::Avx2 => Some("AVX2 and FMA"),
        Backend::Avx512 => Some("AVX-512F"),
        _ => None,
    };
    let needs = match (target.choice.cpu, generator_needs) {
        (Some(Cpu::X86_64V3), _) => "a CPU with AVX2 and FMA (x86-64-v3)".to_string(),
        (Some(Cpu::X86_64V4), _) => "a CPU with AVX-512F (x86-64-v4)".to_string(),
        (Some(cpu @ (Cpu::SapphireRapids | Cpu::Znver4)), _) => {
            let bf16 = target.choice.precision == convjit_ir::Precision::Bf16;
            match (bf16, target.choice.tiles) {
                (true, true) => {
                    format!("a CPU with AVX-512F, AVX512_BF16, AMX-TILE and AMX-BF16 ({cpu})")
                }
                (true, false) => format!("a CPU with AVX-512F and AVX512_BF16 ({cpu})"),
                (false, _) => format!("a CPU with AVX-512F (built for {cpu}, f32: its x86-64-v4)"),
            }
        }
        (Some(Cpu::Native), Some(g)) => {
            format!("a CPU with {g} and every feature listed above (built for the host: native)")
        }
        (Some(Cpu::Native), None) => {
            "a CPU with every feature listed above (built for the host: native)".to_string()
        }
        (None, _) => "an ARMv8-A CPU with NEON and the features listed above".to_string(),
    };
    let precision = match target.choice.precision {
        convjit_ir::Precision::F32 => "Precision: f32.".to_string(),
        convjit_ir::Precision::Bf16 => format!(
            "Precision: bf16: the weights and each stage's input values are rounded to bf16 \
             (nearest even) where they enter a multiply; sums, bias, activation and residual \
             are f32.{}",
            match (target.choice.tiles, target.choice.dot) {
                (true, _) => " Conv and pointwise stages that fill them run on AMX tiles.",
                (false, true) => {
                    " Conv, pointwise and grouped stages (of up to 2 groups) run vdpbf16ps \
                     (AVX512_BF16) on their input converted to bf16 pairs."
                }
                (false, false) => "",
            }
        ),
    };
    format!("{who} It requires {needs}. {precision}")
}

/// The C names a layer's header uses.
struct Names {
    /// The run function, `convjit_LAYER`.
    sym: String,
    /// The packing function (builds without weights).
    pack: String,
    /// The macros' prefix, `CONVJIT_LAYER`.
    mac: String,
    /// The include guard.
    guard: String,
}

impl Names {
    fn new(ident: &str) -> Names {
        let mac = format!("CONVJIT_{ident}");
        Names {
            sym: format!("convjit_{ident}"),
            pack: crate::pack_symbol(ident),
            // A suffix no macro has: `CONVJIT_L_H` was also layer `L_INPUT`'s
            // guard... and layer `L`'s `CONVJIT_L_INPUT_H` its macro.
            guard: format!("{mac}_H_INCLUDED"),
            mac,
        }
    }
}

/// The header: a comment saying what the object computes and needs, the
/// shape macros, then the declarations.
pub fn header(
    layer: &Layer,
    ident: &str,
    target: &Target,
    (layout, baked): (&PackLayout, bool),
    scratch: &Scratch,
    tiles: bool,
) -> String {
    let names = Names::new(ident);
    let mut h = String::new();
    let w = &mut h;
    describe_layer(w, layer, target);
    describe_weights(w, layer, layout, baked, &names);
    let _ = writeln!(w, " *");
    describe_run_time(w, target, (scratch, layer.stages.len() > 1), tiles);
    w.push_str(" */\n");
    shape_macros(w, layer, &names, scratch.bytes);
    if baked {
        declare_baked(w, &names);
    } else {
        declare_with_packing(w, layer, layout, &names);
    }
    let _ = write!(
        w,
        "\n#ifdef __cplusplus\n\
         }}\n\
         #endif\n\
         \n\
         #endif /* {guard} */\n",
        guard = names.guard
    );
    h
}

/// The comment's start: who made it, the layer and its target, the tensors
/// and every stage.
fn describe_layer(w: &mut String, layer: &Layer, target: &Target) {
    let (i, o) = (layer.input, layer.output());
    let _ = writeln!(
        w,
        "/* Generated by convjit-aot {}: do not edit.\n *",
        env!("CARGO_PKG_VERSION")
    );
    para(
        w,
        &format!(
            "Layer {}, compiled for {} (CPU features: {}).",
            safe(&layer.name),
            target.triple,
            safe(&target.features)
        ),
    );
    para(w, &generator_text(target));
    let _ = write!(
        w,
        " *\n\
         \x20* Tensors are float32, NHWC: [N][H][W][C], row-major, densely packed; the\n\
         \x20* batch N is a run-time argument.\n\
         \x20*   input  [N]{inp}  ({il} floats per image)\n\
         \x20*   output [N]{out}  ({ol} floats per image)\n\
         \x20*\n\
         \x20* Stages, in order; each computes convolution, + bias, activation, then\n\
         \x20* + residual (TensorFlow semantics):\n",
        inp = hwc(i),
        out = hwc(o),
        il = i.len(),
        ol = o.len(),
    );
    for (n, s) in layer.stages.iter().enumerate() {
        w.push_str(&stage_line(n, s));
    }
    let _ = writeln!(w, " *");
}

/// Where the weights are: baked in, or the arrays the packing function
/// takes and their layouts.
fn describe_weights(
    w: &mut String,
    layer: &Layer,
    layout: &PackLayout,
    baked: bool,
    names: &Names,
) {
    let Names { sym, pack, mac, .. } = names;
    if baked {
        para(
            w,
            &format!(
                "The weights are baked into the object ({} bytes of read-only data).",
                layout.total * 4
            ),
        );
        return;
    }
    para(
        w,
        &format!(
            "Weights are passed at run time: {pack}() takes the arrays in the \
             TensorFlow layouts, in this order (.npz keys in parentheses):"
        ),
    );
    let mut k = 0;
    for s in &layer.stages {
        let _ = writeln!(
            w,
            " *   arrays[{k}] = {} ({})",
            dims(&s.weight_shape()),
            safe(&s.weight_key)
        );
        k += 1;
        if let Some(b) = &s.bias_key {
            let _ = writeln!(w, " *   arrays[{k}] = [{}] ({})", s.output.c, safe(b));
            k += 1;
        }
    }
    para(
        w,
        &format!(
            "Layouts: conv [Kh][Kw][Ci][Co], depthwise [Kh][Kw][C][M] (output channel \
             c*M+m), pointwise [Ci][Co], bias [Co]. It writes {mac}_PACKED_FLOATS floats \
             (any alignment works; {PACK_ALIGN} bytes is best), which {sym}() then reads."
        ),
    );
}

/// What a call allocates, and what linking needs.
fn describe_run_time(
    w: &mut String,
    target: &Target,
    (scratch, intermediates): (&Scratch, bool),
    tiles: bool,
) {
    if scratch.bytes > 0 {
        let mut parts = Vec::new();
        if intermediates {
            parts.push(
                "the intermediate tensors of one image, images being processed one after \
                 another",
            );
        }
        if scratch.rounded_input.is_some() {
            parts.push("the image's input rounded to bf16");
        }
        if scratch.tiles.is_some() {
            parts.push(match target.choice.dot {
                true => "the vdpbf16ps stages' converted input and accumulators",
                false => "the tile stages' converted input and accumulators",
            });
        }
        para(
            w,
            &format!(
                "Scratch: each call mallocs {} bytes ({}) and frees them before returning.",
                scratch.bytes,
                parts.join("; ")
            ),
        );
    }
    if tiles {
        para(
            w,
            "AMX: the object asks Linux for the tile state itself, on every call \
             (arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA): granted once for the \
             whole process, cheap after); where it is refused (a kernel before 5.16, a \
             sandbox forbidding it) the call returns CONVJIT_ENOTILES and writes nothing. \
             Each stage loads its tile configuration and releases the tiles before it \
             returns.",
        );
    }
    let libs = if target.fma_libcall {
        "the C library (malloc, free) and libm (fmaf: link with -lm)"
    } else {
        "the C library (malloc, free)"
    };
    para(
        w,
        &format!(
            "The functions keep no global mutable state: they are reentrant and may run \
             on several threads at once. Linking needs nothing but {libs}."
        ),
    );
}

/// The include guard, the return codes and the shape macros.
fn shape_macros(w: &mut String, layer: &Layer, names: &Names, scratch_bytes: usize) {
    let (i, o) = (layer.input, layer.output());
    let Names { mac, guard, .. } = names;
    let _ = write!(
        w,
        "#ifndef {guard}\n\
         #define {guard}\n\
         \n\
         #include <stddef.h>\n\
         \n\
         #ifdef __cplusplus\n\
         extern \"C\" {{\n\
         #endif\n\
         \n\
         #ifndef CONVJIT_OK\n\
         #define CONVJIT_OK 0     /* success */\n\
         #define CONVJIT_ENOMEM 1 /* malloc of the scratch memory failed */\n\
         #define CONVJIT_EINVAL 2 /* a NULL pointer (with batch > 0) */\n\
         #define CONVJIT_ENOTILES 3 /* Linux refused the AMX tile state */\n\
         #endif\n\
         \n\
         #define {mac}_INPUT_H {ih}\n\
         #define {mac}_INPUT_W {iw}\n\
         #define {mac}_INPUT_C {ic}\n\
         #define {mac}_OUTPUT_H {oh}\n\
         #define {mac}_OUTPUT_W {ow}\n\
         #define {mac}_OUTPUT_C {oc}\n\
         /* Floats per image. */\n\
         #define {mac}_INPUT_FLOATS ((size_t){il})\n\
         #define {mac}_OUTPUT_FLOATS ((size_t){ol})\n\
         /* Bytes each call mallocs (0: none). */\n\
         #define {mac}_SCRATCH_BYTES ((size_t){scratch_bytes})\n",
        ih = i.h,
        iw = i.w,
        ic = i.c,
        oh = o.h,
        ow = o.w,
        oc = o.c,
        il = i.len(),
        ol = o.len(),
    );
}

/// The run function's doc comment, starting with `first`.
fn run_doc(w: &mut String, mac: &str, first: &str) {
    w.push('\n');
    para_with(
        w,
        "/*",
        "  ",
        &format!(
            "{first} input holds batch * {mac}_INPUT_FLOATS floats, output receives \
             batch * {mac}_OUTPUT_FLOATS floats; they must not overlap. Returns \
             CONVJIT_OK (also for batch == 0, when no pointer is used), CONVJIT_ENOMEM \
             if malloc failed (the output is then undefined) or CONVJIT_EINVAL if a \
             pointer is NULL."
        ),
    );
    // Close the comment on its last line.
    w.pop();
    w.push_str(" */\n");
}

/// The run function of a build with baked weights.
fn declare_baked(w: &mut String, names: &Names) {
    let Names { sym, mac, .. } = names;
    run_doc(w, mac, "Runs the layer on batch images:");
    let _ = writeln!(
        w,
        "int {sym}(const float *input, float *output, size_t batch);"
    );
}

/// The packing function, its macros, and the run function that reads
/// what it packed.
fn declare_with_packing(w: &mut String, layer: &Layer, layout: &PackLayout, names: &Names) {
    let Names { sym, pack, mac, .. } = names;
    let narrays: usize = layer
        .stages
        .iter()
        .map(|s| 1 + s.bias_key.is_some() as usize)
        .sum();
    let _ = write!(
        w,
        "/* Weight arrays {pack}() takes, and floats it writes. */\n\
         #define {mac}_NUM_ARRAYS {narrays}\n\
         #define {mac}_PACKED_FLOATS ((size_t){packed})\n\
         \n\
         /* Packs the weight arrays (see above) into packed, which must hold\n\
         \x20  {mac}_PACKED_FLOATS floats. Returns CONVJIT_OK,\n\
         \x20  or CONVJIT_EINVAL if a pointer is NULL. */\n\
         int {pack}(const float *const arrays[], float *packed);\n",
        packed = layout.total,
    );
    run_doc(
        w,
        mac,
        &format!("Runs the layer on batch images with weights packed by {pack}():"),
    );
    let _ = writeln!(
        w,
        "int {sym}(const float *packed, const float *input, float *output, size_t batch);"
    );
}
