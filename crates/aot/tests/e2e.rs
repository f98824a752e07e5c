//! End to end: objects for every stage kind, linked with a C harness by
//! the system C compiler (host) and by `aarch64-linux-gnu-gcc -static`
//! (run under `qemu-aarch64`), outputs compared with the interpreter.
//! Both variants are checked: weights baked in, and weights packed at run
//! time by the generated `_pack` function. On x86_64 every generator is
//! checked: the AVX2 (x86-64-v3) and AVX-512 (x86-64-v4) ones and
//! Cranelift. A test whose tool or CPU level is missing here is ignored,
//! with the reason, in cargo's summary (`build.rs` probes them; with
//! `CONVJIT_REQUIRE_TOOLS=1` a missing tool fails instead).

mod common;

use common::{compare, input, layer, read_f32, run, write_f32};
use convjit_aot::{build, BuildOptions, Cpu, Emit};
use convjit_ir::{Layer, Precision, Weights};
use convjit_plan::Backend;
use std::path::Path;
use std::process::Command;

/// (name, body, batch). Small shapes, odd sizes: channel tails, borders.
const CASES: &[(&str, &str, usize)] = &[
    (
        "conv_s2",
        "input 9x11x5\n c: conv 3x3 -> 7, stride 2, pad same, bias, relu",
        3,
    ),
    (
        "conv_dil",
        "input 10x9x6\n c: conv 3x2 -> 9, dilation 2, pad 1 2 2 1, relu6",
        2,
    ),
    (
        "dw_m2",
        "input 8x7x6\n d: depthwise 3x3, multiplier 2, stride 2, pad same, bias",
        3,
    ),
    (
        "dw_m5",
        "input 7x7x3\n d: depthwise 3x3, multiplier 5, pad valid, bias, relu",
        2,
    ),
    ("pw", "input 5x6x13\n p: pointwise 11, bias", 4),
    // A 1x1 whose blocks' weights pass a quarter of L2: its reduction in
    // passes, the last block moved back (`StagePlan::k_chunks`).
    (
        "pw_passes",
        "input 1x29x6144\n p: pointwise 48, bias, relu",
        2,
    ),
    // A filter bank on one channel: row vectors with a permutation.
    (
        "sobel",
        "input 9x40x1\n f: conv 3x3 -> 2, pad same, bias, relu",
        2,
    ),
    // A grey filter written as a conv: a one-channel depthwise row.
    (
        "grey_conv",
        "input 9x40x1\n f: conv 3x5 -> 1, pad same, bias, relu, residual",
        2,
    ),
    // Three outputs, then one: their inputs in lanes, summed across them.
    (
        "to_one",
        "input 9x40x20\n f: conv 3x3 -> 3, pad same, bias, relu\n p: pointwise 1, bias",
        2,
    ),
    // Groups: of 16 outputs (the widest vectors), and of 4 (AVX-512 hands
    // them to the AVX2 code).
    (
        "grouped",
        "input 7x6x32\n c: conv 3x3 -> 32, groups 2, pad same, bias\n p: pointwise 8, groups 2, relu",
        2,
    ),
    (
        "big_conv",
        "input 6x5x16\n c: conv 3x3 -> 40, pad same, bias",
        2,
    ),
    // One channel, a kernel of 22500 taps: whole vectors per tap would
    // be mostly zeros on every generator, so the units are packed
    // compact (each tap's float alone), by the `_pack` copies too.
    (
        "grey_big",
        "input 152x160x1\n d: depthwise 150x150, bias, relu6",
        2,
    ),
    (
        "conv_one",
        "input 151x157x1\n c: conv 150x150 -> 1, stride 1x2, bias, relu",
        1,
    ),
    (
        "dw_pw",
        "input 9x9x8\n dw: depthwise 3x3, pad same, bias, relu6\n pw: pointwise 12, bias, relu6",
        3,
    ),
    (
        "inv_res",
        "input 8x8x6\n expand: pointwise 18, bias, relu6\n \
         dw: depthwise 3x3, pad same, bias, relu6\n project: pointwise 6, bias, residual",
        3,
    ),
    (
        "separable",
        "input 9x8x4\n s: conv 3x3 -> 10, pad valid, separable depthwise, multiplier 2, bias, relu",
        2,
    ),
    // Few channels, wide rows: the x86 generators run the interior
    // columns as vectors along the row, with weights packed per phase.
    (
        "dw_rgb_row",
        "input 5x40x3\n d: depthwise 3x5, pad same, bias, relu6",
        2,
    ),
    (
        "dw_grey_row",
        "input 6x37x1\n d: depthwise 3x3, pad same, bias",
        2,
    ),
    (
        "four",
        "input 10x10x3\n a: conv 3x3 -> 8, stride 2, pad same, relu\n \
         b: depthwise 3x3, pad same\n c: pointwise 5, bias\n d: pointwise 9, relu6",
        2,
    ),
];

/// Cases whose input also holds NaN, +inf and -inf (a few pixels): the
/// objects propagate NaN and follow IEEE infinities as the interpreter
/// does, through chained stages and the residual, on every generator and
/// under qemu (where Cranelift's selects become AArch64 compares).
const SPECIAL_INPUTS: &[&str] = &["pw", "dw_pw", "inv_res", "four", "sobel", "tile_pw"];

/// More cases for bf16 objects: stages that fill AMX tiles (16 input and
/// output channels or more) on `sapphirerapids`, before, after and between
/// stages that do not (whose inputs the wrapper rounds), two tile
/// stages in a row (the second rounds what the first wrote itself), and
/// tile stages that store bf16 for the depthwise stage after them, and
/// f32-code stages (a conv of 8 input channels, a depthwise stage) that
/// store whole vectors as bf16 for a depthwise stage.
const BF16_CASES: &[(&str, &str, usize)] = &[
    (
        "fma_dw",
        "input 10x9x8\n c: conv 3x3 -> 32, pad same, bias, relu\n \
         d: depthwise 3x3, pad same\n p: pointwise 16, bias",
        2,
    ),
    (
        "dw_dw",
        "input 9x8x32\n d: depthwise 3x3, pad same, bias\n \
         e: depthwise 3x3, stride 2, pad same, relu6\n p: pointwise 16",
        2,
    ),
    // The expand stage stores bf16, which the depthwise stage widens.
    (
        "tile_dw",
        "input 9x8x24\n e: pointwise 40, bias, relu6\n \
         d: depthwise 3x3, stride 2, pad same, bias\n p: pointwise 16, bias",
        2,
    ),
    (
        "tile_conv",
        "input 9x10x32\n c: conv 3x3 -> 48, pad same, bias, relu\n \
         d: depthwise 3x3, pad same\n p: pointwise 32, bias, residual",
        2,
    ),
    (
        "tile_pw",
        "input 7x9x40\n p: pointwise 24, bias, relu6\n q: pointwise 40, residual",
        2,
    ),
    (
        "tile_s2",
        "input 11x13x17\n d: depthwise 3x3, pad same, relu\n \
         c: conv 3x3 -> 33, stride 2, pad same, bias",
        3,
    ),
];

/// `x` with NaN, +inf and -inf at a few spread positions.
fn with_specials(mut x: Vec<f32>) -> Vec<f32> {
    let n = x.len();
    for (k, v) in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY]
        .into_iter()
        .enumerate()
    {
        x[(n / 7 + k * n / 3) % n] = v;
    }
    x
}

struct Built {
    layer: Layer,
    weights: Weights,
    x: Vec<f32>,
    batch: usize,
    precision: Precision,
}

/// Builds both variants of every case with `opts` (its weights are
/// replaced) into `dir` and writes the harness and the data files; every
/// object's stage functions must come from `generator`. Returns the cases.
fn prepare(dir: &Path, opts: &BuildOptions, generator: Backend) -> Vec<(String, Built)> {
    let mut built = Vec::new();
    let mut includes = String::new();
    let mut table = String::new();
    let extra = match opts.precision {
        Precision::F32 => &[][..],
        Precision::Bf16 => BF16_CASES,
    };
    for (seed, &(name, body, batch)) in CASES.iter().chain(extra).enumerate() {
        let l = layer(&format!("layer {name} {{\n {body}\n}}"));
        let w = Weights::random(&l, seed as u64 + 10);
        let mut x = input(&l, batch, seed as u64 + 100);
        if SPECIAL_INPUTS.contains(&name) {
            x = with_specials(x);
        }
        let cdir = dir.join(name);
        std::fs::create_dir_all(&cdir).unwrap();
        write_f32(&cdir.join("input.bin"), &x);
        let mut k = 0;
        for s in w.stages() {
            write_f32(&cdir.join(format!("a{k}.bin")), &s.weight);
            k += 1;
            if let Some(b) = &s.bias {
                write_f32(&cdir.join(format!("a{k}.bin")), b);
                k += 1;
            }
        }
        let baked = BuildOptions {
            weights: Some(w.clone()),
            ..opts.clone()
        };
        let mut rt_layer = l.clone();
        rt_layer.name = format!("{name}_rt");
        let runtime = BuildOptions {
            weights: None,
            ..opts.clone()
        };
        for (lay, opts) in [(&l, &baked), (&rt_layer, &runtime)] {
            let a = build(lay, opts, Emit::Object).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(a.symbol, format!("convjit_{}", lay.name));
            assert_eq!(a.generator, generator, "{name}");
            if name.starts_with("tile_") {
                let amx = opts.cpu == Some(Cpu::SapphireRapids);
                assert_eq!(a.tiles, amx, "{name}");
            }
            std::fs::write(dir.join(format!("{}.o", lay.name)), &a.object).unwrap();
            std::fs::write(dir.join(format!("{}.h", lay.name)), &a.header).unwrap();
            includes.push_str(&format!("#include \"{}.h\"\n", lay.name));
        }
        if opts.precision == Precision::Bf16 && (name.starts_with("tile_") || name == "grouped") {
            // Zen 4 objects multiply on vdpbf16ps (tiles: Sapphire
            // Rapids; its grouped stages f32 code).
            let asm = build(&l, &baked, Emit::Asm).unwrap().object;
            let asm = String::from_utf8(asm).unwrap();
            let znver4 = opts.cpu == Some(Cpu::Znver4);
            assert_eq!(asm.contains("vdpbf16ps"), znver4, "{name}");
            assert!(!znver4 || !asm.contains("tdpbf16ps"), "{name}");
        }
        let m = format!("CONVJIT_{name}");
        table.push_str(&format!(
            "  {{\"{name}\", convjit_{name}, 0, 0, {m}_INPUT_FLOATS, {m}_OUTPUT_FLOATS, 0, 0, {m}_SCRATCH_BYTES}},\n\
             \x20 {{\"{name}_rt\", 0, convjitpack_{name}_rt, convjit_{name}_rt, {m}_rt_INPUT_FLOATS,\n\
             \x20  {m}_rt_OUTPUT_FLOATS, {m}_rt_PACKED_FLOATS, {m}_rt_NUM_ARRAYS, {m}_rt_SCRATCH_BYTES}},\n"
        ));
        built.push((
            name.to_string(),
            Built {
                layer: l,
                weights: w,
                x,
                batch,
                precision: opts.precision,
            },
        ));
    }
    let harness = include_str!("harness.c")
        .replace("/* INCLUDES */", &includes)
        .replace("/* KERNELS */", &table);
    std::fs::write(dir.join("harness.c"), harness).unwrap();
    // The headers are C++ too.
    std::fs::write(
        dir.join("cxx.cpp"),
        format!("{includes}\nint main() {{ return 0; }}\n"),
    )
    .unwrap();
    built
}

fn objects(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            (p.extension()? == "o").then(|| p.to_string_lossy().into_owned())
        })
        .collect();
    v.sort();
    v
}

/// Runs every case (both variants) with `prog` (`runner` e.g. qemu).
fn check_all(dir: &Path, built: &[(String, Built)], runner: &[&str], prog: &Path) {
    let mut failures = Vec::new();
    for (name, b) in built {
        for variant in [name.clone(), format!("{name}_rt")] {
            let out = dir.join(name).join("output.bin");
            let _ = std::fs::remove_file(&out);
            let mut cmd = Command::new(runner.first().map_or(prog.as_os_str(), |r| r.as_ref()));
            if !runner.is_empty() {
                cmd.args(&runner[1..]).arg(prog);
            }
            cmd.arg(&variant).arg(dir.join(name));
            let res = cmd.output().expect("run the harness");
            if !res.status.success() {
                failures.push(format!(
                    "{variant}: harness failed ({}): {}{}",
                    res.status,
                    String::from_utf8_lossy(&res.stdout),
                    String::from_utf8_lossy(&res.stderr)
                ));
                continue;
            }
            let got = read_f32(&out);
            let data = (&b.layer, &b.weights);
            if let Err(e) = compare(&variant, data, (&b.x, b.batch), &got, b.precision) {
                failures.push(e);
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// How to get the host's C and C++ compilers.
/// Builds with `opts`, links with the host's `cc`, runs, compares.
fn host(opts: &BuildOptions, generator: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let built = prepare(dir, opts, generator);
    // The headers are valid C99 (the harness) and C++, every warning an error.
    run(Command::new("c++")
        .args([
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pedantic",
            "-fsyntax-only",
            "-I",
        ])
        .arg(dir)
        .arg(dir.join("cxx.cpp")));
    let prog = dir.join("harness");
    // A PIE (the default here): --fatal-warnings also rejects text relocations.
    run(Command::new("cc")
        .args([
            "-std=c99",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pedantic",
            "-O1",
        ])
        .arg("-I")
        .arg(dir)
        .arg(dir.join("harness.c"))
        .args(objects(dir))
        .arg("-Wl,--wrap=malloc,--fatal-warnings")
        .arg("-o")
        .arg(&prog));
    check_all(dir, &built, &[], &prog);
}

/// A build for this machine: its best generator (`--backend auto`).
#[test]
#[cfg_attr(
    any(no_cc, no_cxx),
    ignore = "cc or c++ not found: apt-get install gcc g++"
)]
fn host_objects_match_the_interpreter() {
    host(&BuildOptions::default(), Backend::Auto.resolve().unwrap());
}

/// Whether this CPU runs code built for `cpu` (every feature of the level
/// Cranelift or the generators may use).
#[cfg(target_arch = "x86_64")]
fn runs(cpu: Cpu) -> bool {
    use std::arch::is_x86_feature_detected as has;
    let v3 = has!("avx2") && has!("fma") && has!("bmi1") && has!("bmi2") && has!("lzcnt");
    let v4 = v3 && has!("avx512f") && has!("avx512dq") && has!("avx512vl");
    match cpu {
        Cpu::X86_64V3 => v3,
        Cpu::X86_64V4 => v4,
        Cpu::Znver4 => v4 && has!("avx512bf16"),
        Cpu::SapphireRapids => v4 && convjit_plan::backend::has_amx_bf16(),
        Cpu::Native => true,
    }
}

/// An explicit x86_64 triple at `cpu` with `backend` (the test is
/// ignored where `build.rs` found this CPU without `cpu`'s features).
#[cfg(target_arch = "x86_64")]
fn x86_level(cpu: Cpu, backend: Backend, generator: Backend) {
    assert!(
        runs(cpu),
        "this CPU lacks {cpu}'s features, which the build script found: rebuild"
    );
    let opts = BuildOptions {
        target: Some("x86_64-unknown-linux-gnu".into()),
        cpu: Some(cpu),
        backend,
        ..BuildOptions::default()
    };
    host(&opts, generator);
}

/// `--target x86_64-unknown-linux-gnu` alone is x86-64-v3: the AVX2 generator.
#[cfg(target_arch = "x86_64")]
#[test]
#[cfg_attr(
    any(no_cc, no_cxx),
    ignore = "cc or c++ not found: apt-get install gcc g++"
)]
#[cfg_attr(
    all(no_x86_64_v3, not(any(no_cc, no_cxx))),
    ignore = "this CPU is not x86-64-v3 (AVX2, FMA)"
)]
fn x86_64_v3_objects_match_the_interpreter() {
    x86_level(Cpu::X86_64V3, Backend::Auto, Backend::Avx2);
}

#[cfg(target_arch = "x86_64")]
#[test]
#[cfg_attr(
    any(no_cc, no_cxx),
    ignore = "cc or c++ not found: apt-get install gcc g++"
)]
#[cfg_attr(
    all(no_x86_64_v4, not(any(no_cc, no_cxx))),
    ignore = "this CPU is not x86-64-v4 (AVX-512)"
)]
fn x86_64_v4_objects_match_the_interpreter() {
    x86_level(Cpu::X86_64V4, Backend::Auto, Backend::Avx512);
}

/// bf16 objects: for Sapphire Rapids (conv and pointwise stages on AMX
/// tiles, the object asking for the tile state), and for Zen 4
/// (`vdpbf16ps` for conv, pointwise and grouped stages, f32 arithmetic on
/// values the wrapper rounds for depthwise ones), weights baked and packed
/// by `_pack` (rounding, and the tiles' bf16 pairs), against the bf16
/// interpreter and within bf16's bound of the f32 one.
#[cfg(target_arch = "x86_64")]
fn bf16_level(cpu: Cpu) {
    assert!(
        runs(cpu),
        "this CPU lacks {cpu}'s features, which the build script found: rebuild"
    );
    let opts = BuildOptions {
        target: Some("x86_64-unknown-linux-gnu".into()),
        cpu: Some(cpu),
        precision: Precision::Bf16,
        ..BuildOptions::default()
    };
    host(&opts, Backend::Avx512);
}

#[cfg(target_arch = "x86_64")]
#[test]
#[cfg_attr(
    any(no_cc, no_cxx),
    ignore = "cc or c++ not found: apt-get install gcc g++"
)]
#[cfg_attr(
    all(no_sapphirerapids, not(any(no_cc, no_cxx))),
    ignore = "this CPU has no AMX-BF16 tiles (sapphirerapids)"
)]
fn sapphirerapids_bf16_objects_match_the_bf16_interpreter() {
    bf16_level(Cpu::SapphireRapids);
}

#[cfg(target_arch = "x86_64")]
#[test]
#[cfg_attr(
    any(no_cc, no_cxx),
    ignore = "cc or c++ not found: apt-get install gcc g++"
)]
#[cfg_attr(
    all(no_znver4, not(any(no_cc, no_cxx))),
    ignore = "this CPU has no AVX512_BF16 (znver4)"
)]
fn znver4_bf16_objects_match_the_bf16_interpreter() {
    bf16_level(Cpu::Znver4);
}

/// `--backend cranelift` keeps Cranelift's stage functions on x86_64.
#[cfg(target_arch = "x86_64")]
#[test]
#[cfg_attr(
    any(no_cc, no_cxx),
    ignore = "cc or c++ not found: apt-get install gcc g++"
)]
#[cfg_attr(
    all(no_x86_64_v3, not(any(no_cc, no_cxx))),
    ignore = "this CPU is not x86-64-v3 (AVX2, FMA)"
)]
fn cranelift_x86_64_objects_match_the_interpreter() {
    x86_level(Cpu::X86_64V3, Backend::Cranelift, Backend::Cranelift);
}

#[test]
#[cfg_attr(
    no_aarch64_cross,
    ignore = "aarch64-linux-gnu-gcc or qemu-aarch64 not found: \
              apt-get install gcc-aarch64-linux-gnu qemu-user"
)]
fn aarch64_objects_match_the_interpreter_under_qemu() {
    let (gcc, qemu) = ("aarch64-linux-gnu-gcc", "qemu-aarch64");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let opts = BuildOptions {
        target: Some("aarch64-unknown-linux-gnu".into()),
        ..BuildOptions::default()
    };
    let built = prepare(dir, &opts, Backend::Cranelift);
    let prog = dir.join("harness");
    run(Command::new(gcc)
        .args([
            "-std=c99",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pedantic",
            "-O1",
            "-static",
        ])
        .arg("-I")
        .arg(dir)
        .arg(dir.join("harness.c"))
        .args(objects(dir))
        .arg("-Wl,--wrap=malloc,--fatal-warnings")
        .arg("-o")
        .arg(&prog));
    check_all(dir, &built, &[qemu], &prog);
}

/// examples/c/main.c with both kinds of kernel, as its README builds it.
#[test]
#[cfg_attr(no_cc, ignore = "cc not found: apt-get install gcc")]
fn c_example_runs() {
    let src = include_str!("../../../examples/mobilenet_v2.conv");
    let l = convjit_ir::compile_source(src)
        .unwrap()
        .into_iter()
        .find(|l| l.name == "mbv2_inverted_residual")
        .unwrap();
    let main_c = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/c/main.c");
    for (weights, want) in [
        (None, "from the C reference: "),
        (Some(Weights::random(&l, 7)), "no reference check"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let baked = weights.is_some();
        let opts = BuildOptions {
            weights,
            ..BuildOptions::default()
        };
        let a = build(&l, &opts, Emit::Object).unwrap();
        std::fs::write(dir.join("k.o"), &a.object).unwrap();
        std::fs::write(dir.join("k.h"), &a.header).unwrap();
        run(Command::new("cc")
            .args([
                "-O2",
                "-std=c99",
                "-Wall",
                "-Wextra",
                "-Werror",
                "-pedantic",
                "-I",
            ])
            .arg(dir)
            .arg(&main_c)
            .arg(dir.join("k.o"))
            .arg("-o")
            .arg(dir.join("demo")));
        let out = run(&mut Command::new(dir.join("demo")));
        assert!(out.contains(want), "baked={baked}:\n{out}");
        if !baked {
            assert!(out.contains(": ok"), "{out}");
        }
    }
}

/// Headers and objects of layers whose names invite collisions (C
/// keywords, `L` beside `L_INPUT`, `L_H` and `L_pack`, names differing
/// only in case, a long name), with and without weights, all included in
/// one translation unit (C99 and C++, every warning an error) and linked
/// into one program: no include guard, macro or function of one is
/// another's.
#[test]
#[cfg_attr(
    any(no_cc, no_cxx),
    ignore = "cc or c++ not found: apt-get install gcc g++"
)]
fn headers_of_any_names_work_together() {
    let long = format!("x{}", "y".repeat(300));
    let mut names: Vec<String> = [
        "int",
        "static",
        "L",
        "l",
        "L_INPUT",
        "L_H",
        "L_H_INCLUDED",
        "L_pack",
        "pack_L",
        "L_INPUT_H",
        "OK",
        "_u",
    ]
    .map(String::from)
    .to_vec();
    names.push(long);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut includes = String::new();
    let mut uses = String::new();
    let mut objects = Vec::new();
    for name in &names {
        let l = convjit_ir::compile_source(&format!(
            "layer {name} {{ input 3x3x2\n d: depthwise 3x3, pad same, bias }}"
        ))
        .unwrap()
        .remove(0);
        for baked in [false, true] {
            let tag = if baked { "b" } else { "r" };
            // One layer name per program: the baked variant is renamed.
            let mut l = l.clone();
            if baked {
                l.name = format!("{name}_baked");
            }
            let opts = BuildOptions {
                weights: baked.then(|| Weights::random(&l, 3)),
                ..BuildOptions::default()
            };
            let a = build(&l, &opts, Emit::Object).unwrap();
            let stem = format!("{}_{tag}", objects.len());
            std::fs::write(dir.join(format!("{stem}.h")), &a.header).unwrap();
            std::fs::write(dir.join(format!("{stem}.o")), &a.object).unwrap();
            objects.push(dir.join(format!("{stem}.o")));
            // Twice: the guard must make the second include empty.
            includes += &format!("#include \"{stem}.h\"\n#include \"{stem}.h\"\n");
            let m = format!("CONVJIT_{}", l.name);
            uses += &format!(
                "  total += {m}_INPUT_FLOATS + {m}_OUTPUT_FLOATS + {m}_SCRATCH_BYTES;\n\
                 \x20 total += (size_t)({m}_INPUT_H * {m}_INPUT_W * {m}_INPUT_C);\n\
                 \x20 total += (size_t)({m}_OUTPUT_H * {m}_OUTPUT_W * {m}_OUTPUT_C);\n"
            );
            if baked {
                uses += &format!("  fns[n++] = (void (*)(void))convjit_{};\n", l.name);
            } else {
                uses += &format!(
                    "  total += {m}_NUM_ARRAYS + {m}_PACKED_FLOATS;\n\
                     \x20 fns[n++] = (void (*)(void))convjit_{0};\n\
                     \x20 fns[n++] = (void (*)(void))convjitpack_{0};\n",
                    l.name
                );
            }
        }
    }
    let main = format!(
        "{includes}\n#include <stdio.h>\n\
         int main(void) {{\n  size_t total = 0;\n  void (*fns[64])(void);\n  int n = 0;\n{uses}\
         \x20 int live = 0;\n  for (int i = 0; i < n; i++) live += fns[i] != 0;\n\
         \x20 printf(\"%d functions, %zu\\n\", live, total);\n  return 0;\n}}\n"
    );
    std::fs::write(dir.join("all.c"), &main).unwrap();
    std::fs::copy(dir.join("all.c"), dir.join("all.cpp")).unwrap();
    run(Command::new("cc")
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-I"])
        .arg(dir)
        .arg(dir.join("all.c"))
        .args(&objects)
        .arg("-o")
        .arg(dir.join("all")));
    let out = run(&mut Command::new(dir.join("all")));
    assert!(
        out.starts_with(&format!("{} functions", 3 * names.len())),
        "{out}"
    );
    run(Command::new("c++")
        .args(["-Wall", "-Wextra", "-Werror", "-pedantic", "-c", "-I"])
        .arg(dir)
        .arg(dir.join("all.cpp"))
        .arg("-o")
        .arg(dir.join("all_cpp.o")));
}
