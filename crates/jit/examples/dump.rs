//! Prints a layer's CLIF:
//! `cargo run --release -p convjit-jit --example dump -- "input 4x6x7\n p: pointwise 5"`.
use convjit_ir::{compile_source, Weights};
use convjit_jit::Kernel;

fn main() {
    let body = std::env::args()
        .nth(1)
        .expect("layer body")
        .replace("\\n", "\n");
    let l = compile_source(&format!("layer l {{ {body} }}"))
        .unwrap()
        .remove(0);
    let k = Kernel::compile(&l, &Weights::random(&l, 1)).unwrap();
    println!("{:?}\n{}", k.schedules(), k.clif());
}
