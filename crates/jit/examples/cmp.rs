//! Compares code-generation variants of one layer on a noisy machine:
//! `cargo run --release -p convjit-jit --example cmp -- BODY [VARIANT...]`,
//! where BODY is a layer body (`"input 16x16x32\n d: depthwise 3x3"`) and
//! each VARIANT is `NAME=VALUE,...`: environment variables set while that
//! variant is compiled (none: one variant). The generator reads no
//! environment variable: variants differ only while an experiment adds a
//! temporary switch to `crates/cranelift/src` (the comparisons cited in the
//! code were made that way, with switches since removed).
//!
//! Every variant is compiled into its own JIT module (no code cache),
//! checked against the interpreter, then all are timed in interleaved
//! rounds; the median and best per variant are printed.

use convjit_cranelift::define_stages;
use convjit_ir::{compile_source, interpret, Layer, Rng, Weights};
use convjit_plan::stage_plan;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::Linkage;
use std::time::Instant;

type StageFn = unsafe extern "C" fn(*const f32, *const f32, *mut f32, *const f32, usize, usize);

struct Variant {
    name: String,
    fns: Vec<StageFn>,
    packed: Vec<Vec<f32>>,
    compile_ms: f64,
    times: Vec<f64>,
    _module: JITModule,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let body = args.next().expect("layer body").replace("\\n", "\n");
    let mut specs: Vec<String> = args.collect();
    if specs.is_empty() {
        specs.push(String::new());
    }
    let l = compile_source(&format!("layer l {{ {body} }}"))
        .unwrap()
        .remove(0);
    let w = Weights::random(&l, 1);
    let x = Rng::new(2).vec(l.input.len(), 1.0);
    let want = interpret(&l, &w, &x, 1).unwrap();
    let mut variants: Vec<Variant> = specs.iter().map(|spec| compile(&l, &w, spec)).collect();
    // One buffer per stage output, allocated once. OUTSHIFT=n starts each
    // output n floats into its buffer (to see the effect of alignment).
    let shift: usize = std::env::var("OUTSHIFT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut bufs = Buffers {
        outputs: l
            .stages
            .iter()
            .map(|s| vec![0f32; s.output.len() + shift])
            .collect(),
        shift,
    };
    for v in &variants {
        bufs.outputs.iter_mut().for_each(|b| b.fill(f32::NAN));
        v.run(&l, &x, &mut bufs);
        check(v, &bufs, &want);
    }
    time(&mut variants, &l, &x, &mut bufs);
    let flops = 2.0 * l.macs() as f64;
    for v in &mut variants {
        v.times.sort_by(f64::total_cmp);
        let med = v.times[v.times.len() / 2];
        println!(
            "{:24} {:9.2} us {:6.1} GFLOP/s (best {:5.1})  compile {:5.2} ms",
            v.name,
            med * 1e6,
            flops / med / 1e9,
            flops / v.times[0] / 1e9,
            v.compile_ms
        );
    }
}

/// Variant `spec` (`NAME=VALUE,...`, set while it compiles) of layer `l`,
/// compiled into a JIT module of its own, with weights `w` packed.
fn compile(l: &Layer, w: &Weights, spec: &str) -> Variant {
    let vars: Vec<(&str, &str)> = spec
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|kv| kv.split_once('=').expect("NAME=VALUE"))
        .collect();
    for (k, v) in &vars {
        std::env::set_var(k, v);
    }
    let t = Instant::now();
    let plans: Vec<stage_plan::StagePlan> = l
        .stages
        .iter()
        .map(stage_plan::plan_for_cranelift)
        .collect();
    let mut flags = settings::builder();
    flags.set("opt_level", "none").unwrap();
    flags.set("is_pic", "false").unwrap();
    let isa = cranelift_native::builder()
        .unwrap()
        .finish(settings::Flags::new(flags))
        .unwrap();
    let mut module = JITModule::new(JITBuilder::with_isa(
        isa,
        cranelift_module::default_libcall_names(),
    ));
    let ids = define_stages(
        &mut module,
        &plans,
        |i| format!("s{i}"),
        Linkage::Local,
        None,
    )
    .unwrap();
    module.finalize_definitions().unwrap();
    let compile_ms = t.elapsed().as_secs_f64() * 1e3;
    let fns = ids
        .iter()
        .map(|&id| {
            let p = module.get_finalized_function(id);
            // SAFETY: defined above with the stage signature.
            unsafe { std::mem::transmute::<*const u8, StageFn>(p) }
        })
        .collect();
    // ASM=FILE: the first stage's machine code (and what follows it
    // in the code region) for `objdump -D -b binary -mi386:x86-64`.
    if let Ok(path) = std::env::var("ASM") {
        dump_code(fns_ptr(&module, ids[0]), &path);
    }
    let packed = plans
        .iter()
        .zip(w.stages())
        .map(|(p, s)| stage_plan::pack(p, &s.weight, s.bias.as_deref()))
        .collect();
    for (k, _) in &vars {
        std::env::remove_var(k);
    }
    Variant {
        name: if spec.is_empty() {
            "default".into()
        } else {
            spec.to_string()
        },
        fns,
        packed,
        compile_ms,
        times: Vec::new(),
        _module: module,
    }
}

/// Every stage's output, each `shift` floats into its buffer.
struct Buffers {
    outputs: Vec<Vec<f32>>,
    shift: usize,
}

impl Variant {
    /// Runs every stage of layer `l` on image `x`.
    fn run(&self, l: &Layer, x: &[f32], bufs: &mut Buffers) {
        let shift = bufs.shift;
        for (i, f) in self.fns.iter().enumerate() {
            let (done, rest) = bufs.outputs.split_at_mut(i);
            let src = if i == 0 {
                x.as_ptr()
            } else {
                done[i - 1][shift..].as_ptr()
            };
            let s = &l.stages[i];
            let (row0, rows) = stage_plan::call_range(s, 0, s.output.h);
            // SAFETY: the function was generated for this stage's shapes and
            // the buffers have exactly those sizes (one image, all rows).
            unsafe {
                f(
                    src,
                    self.packed[i].as_ptr(),
                    rest[0][shift..].as_mut_ptr(),
                    x.as_ptr(),
                    row0,
                    rows,
                )
            };
        }
    }
}

/// Panics unless `v`'s last output is the interpreter's `want`.
fn check(v: &Variant, bufs: &Buffers, want: &[f32]) {
    let err = bufs.outputs[bufs.outputs.len() - 1][bufs.shift..]
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs() / (1.0 + b.abs()))
        .fold(
            0f32,
            |m, e| if e.is_nan() { f32::INFINITY } else { m.max(e) },
        );
    assert!(err < 1e-3, "{}: wrong result (max rel err {err})", v.name);
}

/// Times the variants in interleaved rounds (`ROUNDS`, default 21) of about
/// 10 ms per sample, each adding one time per call to its `times`.
fn time(variants: &mut [Variant], l: &Layer, x: &[f32], bufs: &mut Buffers) {
    // Calibrate to ~10 ms per sample.
    let t = Instant::now();
    let mut reps = 0;
    while t.elapsed().as_secs_f64() < 0.01 {
        variants[0].run(l, x, bufs);
        reps += 1;
    }
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(21);
    for _ in 0..rounds {
        for v in variants.iter_mut() {
            let t = Instant::now();
            for _ in 0..reps {
                v.run(l, x, bufs);
            }
            v.times.push(t.elapsed().as_secs_f64() / reps as f64);
        }
    }
}

fn fns_ptr(module: &JITModule, id: cranelift_module::FuncId) -> *const u8 {
    module.get_finalized_function(id)
}

/// Copies up to 64 KiB of code from `p` to `path` through `/proc/self/mem`
/// (which stops at the end of the mapping instead of faulting).
fn dump_code(p: *const u8, path: &str) {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open("/proc/self/mem").unwrap();
    f.seek(SeekFrom::Start(p as u64)).unwrap();
    let mut buf = vec![0u8; 1 << 16];
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    std::fs::write(path, &buf[..n]).unwrap();
}
