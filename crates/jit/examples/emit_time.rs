//! Planning and x86 emission time per stage plan, layer by layer (the
//! parts of a compile that grow with the layer; the first layer also pays
//! iced-x86's one-time table setup):
//! `cargo run --release -p convjit-jit --example emit_time [-- FILE.conv]`.
use convjit_ir::compile_source;
use convjit_plan::stage_plan;
use std::time::Instant;

fn main() {
    let path = std::env::args()
        .nth(1)
        .unwrap_or("benches/suite.conv".into());
    let src = std::fs::read_to_string(&path).expect("a .conv file");
    for (isa, target) in [
        (convjit_x86::Isa::Avx2, stage_plan::Target::AVX2),
        (convjit_x86::Isa::Avx512, stage_plan::Target::AVX512),
    ] {
        for l in &compile_source(&src).expect("valid layers") {
            let t0 = Instant::now();
            let plans: Vec<_> = l
                .stages
                .iter()
                .map(|s| stage_plan::plan_for(s, &target))
                .collect();
            let t1 = Instant::now();
            let bytes: usize = plans
                .iter()
                .map(|p| convjit_x86::emit(p, isa).expect("emits").len())
                .sum();
            let t2 = Instant::now();
            println!(
                "{isa:?} {:40} plan {:7.1} us, emit {:7.1} us, {bytes} bytes",
                l.name,
                (t1 - t0).as_secs_f64() * 1e6,
                (t2 - t1).as_secs_f64() * 1e6
            );
        }
    }
}
