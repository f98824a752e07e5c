//! Kernels run as a network runs its layers: one after another, each on
//! the previous one's output, with one call.
//!
//! Run one by one, each kernel has buffers of its own and each layer's
//! output is a fresh tensor, so a chain of 19 MobileNet v2 layers touches
//! 19 sets of run buffers and 19 output tensors per image, all cold by the
//! time they are used again. A [`Network`] keeps one arena per concurrent
//! run instead (TFLite's approach): every kernel's run buffers in one
//! `Scratch`, sized by the largest kernel rather than their sum, and two
//! tensors the layers' outputs alternate between, so what a layer writes
//! was written two layers ago and is still in cache.

use crate::scratch::{fit, must_refit, zeroed, Buf, Scratch};
use crate::{check_len, JitError, Kernel};
use convjit_ir::DataError;
use std::sync::Mutex;

/// Layers compiled for the host, run back to back (`Send + Sync`, like
/// [`Kernel`]).
pub struct Network {
    kernels: Vec<Kernel>,
    /// Arenas of finished runs, for the next (one per concurrent run).
    arenas: Mutex<Vec<Arena>>,
}

/// The memory of one run besides its input and output.
struct Arena {
    scratch: Scratch,
    /// Layer `i < n - 1` writes its output to `tensors[i % 2]`.
    tensors: [Buf; 2],
}

impl Network {
    /// The network of `kernels`, in order. Each kernel's layer must read
    /// the shape the one before writes: else the error names both.
    pub fn new(kernels: Vec<Kernel>) -> Result<Network, JitError> {
        if kernels.is_empty() {
            return Err(DataError::tensor("network", "a network needs at least one layer").into());
        }
        for pair in kernels.windows(2) {
            let (a, b) = (pair[0].layer(), pair[1].layer());
            if b.input != a.output() {
                return Err(DataError::tensor(
                    "network",
                    format!(
                        "layer '{}' reads {} but layer '{}' before it writes {}",
                        b.name,
                        b.input,
                        a.name,
                        a.output()
                    ),
                )
                .into());
            }
        }
        Ok(Network {
            kernels,
            arenas: Mutex::new(Vec::new()),
        })
    }

    /// The kernels, in the order they run.
    pub fn kernels(&self) -> &[Kernel] {
        &self.kernels
    }

    /// Shape of one input image (the first layer's).
    pub fn input(&self) -> convjit_ir::Shape {
        self.kernels[0].layer().input
    }

    /// Shape of one output image (the last layer's).
    pub fn output(&self) -> convjit_ir::Shape {
        self.kernels[self.kernels.len() - 1].layer().output()
    }

    /// Runs `batch` NHWC images through every layer. Checks
    /// `input.len() == batch * input().len()` and `output.len() == batch *
    /// output().len()` first, and each kernel its own buffers.
    ///
    /// A panic in a kernel's thread (a bug) is [`JitError::Panicked`], as
    /// for [`Kernel::run`]; the network stays usable.
    pub fn run(&self, input: &[f32], output: &mut [f32], batch: usize) -> Result<(), JitError> {
        let (first, last) = (self.input(), self.output());
        check_len("input", input.len(), batch, first.len(), first)?;
        check_len("output", output.len(), batch, last.len(), last)?;
        if batch == 0 {
            return Ok(());
        }
        let arenas = || self.arenas.lock().unwrap_or_else(|e| e.into_inner());
        let mut arena = arenas().pop().unwrap_or_else(|| Arena {
            scratch: Scratch::default(),
            tensors: [zeroed(0), zeroed(0)],
        });
        let n = self.kernels.len();
        for (i, k) in self.kernels.iter().enumerate() {
            let Arena { scratch, tensors } = &mut arena;
            let [even, odd] = tensors;
            // Layer i reads tensors[(i - 1) % 2] and writes tensors[i % 2].
            let (before, mine) = if i % 2 == 0 { (odd, even) } else { (even, odd) };
            let src = match i {
                0 => input,
                _ => &before[..batch * k.layer().input.len()],
            };
            if i + 1 == n {
                k.run_in(scratch, src, output, batch)?;
                break;
            }
            // (An intermediate may be larger than the input `check_len` saw.)
            let out_len = batch.checked_mul(k.layer().output().len()).ok_or_else(|| {
                DataError::tensor("batch", format!("{batch} images are too many"))
            })?;
            if must_refit(mine, out_len) {
                convjit_ir::budget::check(
                    format_args!("the output of layer '{}'", k.layer().name),
                    (out_len as u64).checked_mul(4),
                )?;
                fit(mine, out_len);
            }
            k.run_in(scratch, src, &mut mine[..out_len], batch)?;
        }
        arenas().push(arena);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use convjit_ir::{compile_source, Rng, Weights};

    /// The layers of `src`, layer `i` compiled for `threads(i)` threads
    /// (used whatever the work: `min_thread_cycles` 0).
    fn kernels(src: &str, threads: impl Fn(usize) -> usize) -> Vec<Kernel> {
        compile_source(src)
            .unwrap()
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let options = crate::Options {
                    threads: threads(i),
                    min_thread_cycles: 0,
                    ..Default::default()
                };
                Kernel::compile_with(l, &Weights::random(l, i as u64), &options).unwrap()
            })
            .collect()
    }

    /// Each layer alone, one after another: what the network must equal.
    fn one_by_one(kernels: &[Kernel], input: &[f32], batch: usize) -> Vec<f32> {
        let mut x = input.to_vec();
        for k in kernels {
            x = k.run_alloc(&x, batch).unwrap();
        }
        x
    }

    const CHAIN: &str = "
        layer a { input 9x11x3
          c: conv 3x3 -> 8, stride 2, pad same, bias, relu }
        layer b { input 5x6x8
          e: pointwise 24, relu6
          d: depthwise 3x3, pad same
          p: pointwise 8, residual }
        layer c { input 5x6x8
          p: pointwise 5 }
        layer d { input 5x6x5
          s: conv 3x3 -> 7, pad valid, separable depthwise }";

    #[test]
    fn equals_its_kernels_run_one_by_one_on_every_thread_count() {
        // The same threads for all layers, and mixed: kernels of one
        // arena made for other thread counts before them.
        let mixes: [&dyn Fn(usize) -> usize; 4] = [&|_| 1, &|_| 2, &|_| 3, &|i| [1, 3, 2][i % 3]];
        for (m, threads) in mixes.iter().enumerate() {
            let net = Network::new(kernels(CHAIN, threads)).unwrap();
            let most = |k: &Kernel| k.layer_plan().groups.iter().map(|g| g.threads).max();
            let planned: Vec<_> = net.kernels().iter().map(most).collect();
            assert_eq!(
                planned.iter().any(|&t| t > Some(1)),
                threads(1) > 1,
                "mix {m}: {planned:?}"
            );
            for batch in [1, 2, 3] {
                let x = Rng::new(batch as u64).vec(batch * net.input().len(), 1.0);
                let want = one_by_one(net.kernels(), &x, batch);
                let mut got = vec![f32::NAN; batch * net.output().len()];
                // Twice: the second run reuses the arena another batch
                // size or the first run left.
                for _ in 0..2 {
                    net.run(&x, &mut got, batch).unwrap();
                    assert_eq!(got, want, "threads mix {m}, batch {batch}");
                }
            }
        }
    }

    #[test]
    fn a_single_layer_network_is_its_kernel() {
        let net = Network::new(kernels(CHAIN, |_| 1).split_off(3)).unwrap();
        let x = Rng::new(7).vec(net.input().len(), 1.0);
        let want = net.kernels()[0].run_alloc(&x, 1).unwrap();
        let mut got = vec![0.0; net.output().len()];
        net.run(&x, &mut got, 1).unwrap();
        assert_eq!(got, want);
    }

    #[test]
    fn layers_that_do_not_chain_are_refused_with_both_names() {
        let mut ks = kernels(CHAIN, |_| 1);
        ks.swap(1, 2);
        let e = Network::new(ks).err().unwrap().to_string();
        assert!(e.contains("'b' reads 5x6x8") && e.contains("'c'"), "{e}");
        assert!(Network::new(Vec::new()).is_err());
    }

    #[test]
    fn wrong_lengths_are_refused_before_any_layer_runs() {
        let net = Network::new(kernels(CHAIN, |_| 1)).unwrap();
        let x = vec![0.0; net.input().len()];
        let mut out = vec![0.0; net.output().len() + 1];
        assert!(matches!(net.run(&x, &mut out, 1), Err(JitError::Data(_))));
        let mut out = vec![0.0; net.output().len()];
        assert!(matches!(
            net.run(&x[1..], &mut out, 1),
            Err(JitError::Data(_))
        ));
        assert!(net.run(&[], &mut [], 0).is_ok());
    }
}
