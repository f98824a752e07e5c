use convjit::{Kernel, Options, Precision, Rng, Weights};
use std::time::Instant;
fn main() {
    let layers = convjit::load_layers("examples/mobilenet_v2.conv").unwrap();
    let precision = Precision::Bf16;
    let o = Options {
        precision,
        ..Options::default()
    };
    let ks: Vec<Kernel> = layers
        .iter()
        .map(|l| Kernel::compile_with(l, &Weights::random(l, 1), &o).unwrap())
        .collect();
    let mut t = vec![Rng::new(2).vec(layers[0].input.len(), 1.0)];
    for l in &layers {
        t.push(vec![0.0; l.output().len()]);
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    let mut whole = vec![];
    for _ in 0..400 {
        let s0 = Instant::now();
        for (i, k) in ks.iter().enumerate() {
            let (d, r) = t.split_at_mut(i + 1);
            k.run(&d[i], &mut r[0], 1).unwrap();
        }
        whole.push(s0.elapsed().as_secs_f64() * 1e6);
    }
    let mut alone = 0.0;
    for (i, k) in ks.iter().enumerate() {
        let (d, r) = t.split_at_mut(i + 1);
        let mut v = vec![];
        for _ in 0..100 {
            let s = Instant::now();
            k.run(&d[i], &mut r[0], 1).unwrap();
            v.push(s.elapsed().as_secs_f64() * 1e6);
        }
        alone += med(&mut v);
    }
    println!(
        "chain median {:.0}  sum alone {:.0}",
        med(&mut whole),
        alone
    );
}
