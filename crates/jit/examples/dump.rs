//! Prints a layer's generated code (CLIF, or the x86 generators' disassembly):
//! `cargo run --release -p convjit-jit --example dump -- "input 4x6x7\n p: pointwise 5" [avx512]`.
use convjit_ir::{compile_source, Weights};
use convjit_jit::Kernel;
use convjit_plan::{Backend, Options};

fn main() {
    let mut args = std::env::args().skip(1);
    let body = args.next().expect("layer body").replace("\\n", "\n");
    let backend = args
        .next()
        .map(|b| Backend::parse(&b).expect("auto, cranelift, avx2 or avx512"))
        .unwrap_or_default();
    let l = compile_source(&format!("layer l {{ {body} }}"))
        .unwrap()
        .remove(0);
    let o = Options {
        backend,
        ..Options::default()
    };
    let k = Kernel::compile_with(&l, &Weights::random(&l, 1), &o).unwrap();
    println!("{:?}\n{}{}", k.schedules(), k.clif(), k.asm());
}
