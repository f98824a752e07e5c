use convjit_ir::compile_source;
use convjit_jit::plan;
use std::time::Instant;
fn main() {
    let src = std::fs::read_to_string("benches/suite.conv").unwrap();
    let layers = compile_source(&src).unwrap();
    for l in &layers {
        let t = plan::Target::AVX512;
        let t0 = Instant::now();
        let plans: Vec<_> = l.stages.iter().map(|s| plan::plan_for(s, &t)).collect();
        let t1 = Instant::now();
        let mut bytes = 0;
        for p in &plans {
            bytes += convjit_x86::emit(p, convjit_x86::Isa::Avx512)
                .unwrap()
                .len();
        }
        let t2 = Instant::now();
        println!(
            "{:40} plan {:7.1} us emit {:7.1} us  {bytes} bytes",
            l.name,
            (t1 - t0).as_secs_f64() * 1e6,
            (t2 - t1).as_secs_f64() * 1e6
        );
    }
}
