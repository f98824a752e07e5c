//! The bf16 ceilings as runnable loops (`convjit_x86::peak`), installed in
//! executable memory like stage functions: `convjit bench` times them in
//! the same rounds as the kernels (`amx-bf16-peak`, `bf16-512-peak`).

use crate::{codegen_err, tiles_refused, JitError};
use cranelift_codegen::ir::{types::I64, AbiParam};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{Linkage, Module};

type PeakFn = unsafe extern "C" fn(usize, *mut u8);

/// A peak loop ready to run.
pub struct PeakLoop {
    name: &'static str,
    flops_per_iteration: u64,
    f: PeakFn,
    scratch: Vec<u8>,
    /// Owns the loop's executable memory.
    _module: JITModule,
}

impl PeakLoop {
    /// Its benchmark row: `amx-bf16-peak` or `bf16-512-peak`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// FLOPs of [`PeakLoop::run`] with `iterations`.
    pub fn flops(&self, iterations: usize) -> u64 {
        self.flops_per_iteration * iterations as u64
    }

    /// Runs `iterations` iterations of the loop.
    pub fn run(&mut self, iterations: usize) {
        // SAFETY: the loop reads at most PEAK_SCRATCH_BYTES of `scratch`
        // (that long) and writes its first 64 (the tile configuration);
        // it needs the instructions `bf16_peaks` checked the host has
        // (and, for tiles, the state this process was granted).
        unsafe { (self.f)(iterations, self.scratch.as_mut_ptr()) }
    }
}

/// The bf16 peak loops this host runs: AMX tiles where this process may
/// use them, `vdpbf16ps` where the CPU has AVX512_BF16.
pub fn bf16_peaks() -> Result<Vec<PeakLoop>, JitError> {
    let mut loops = Vec::new();
    if tiles_refused().is_none() {
        let code = convjit_x86::peak::amx_bf16_peak().map_err(codegen_err)?;
        loops.push(install(
            "amx-bf16-peak",
            convjit_x86::peak::AMX_PEAK_FLOPS,
            &code,
        )?);
    }
    if convjit_plan::backend::has_bf16() {
        let code = convjit_x86::peak::bf16_512_peak().map_err(codegen_err)?;
        loops.push(install(
            "bf16-512-peak",
            convjit_x86::peak::BF16_512_PEAK_FLOPS,
            &code,
        )?);
    }
    Ok(loops)
}

fn install(name: &'static str, flops: u64, code: &[u8]) -> Result<PeakLoop, JitError> {
    let isa = convjit_cranelift::isa()?;
    let mut module = JITModule::new(JITBuilder::with_isa(
        isa,
        cranelift_module::default_libcall_names(),
    ));
    let mut sig = module.make_signature();
    sig.params = vec![AbiParam::new(I64); 2];
    let id = module
        .declare_function(name, Linkage::Local, &sig)
        .map_err(codegen_err)?;
    module
        .define_function_bytes(id, convjit_x86::X86_CODE_ALIGN, code, &[])
        .map_err(codegen_err)?;
    module.finalize_definitions().map_err(codegen_err)?;
    let ptr = module.get_finalized_function(id);
    // SAFETY: defined above with the signature (i64, i64) -> () in the
    // host's default calling convention: `extern "C" fn(usize, *mut u8)`.
    let f = unsafe { std::mem::transmute::<*const u8, PeakFn>(ptr) };
    Ok(PeakLoop {
        name,
        flops_per_iteration: flops,
        f,
        // bf16 ones (0x3f80, little-endian) in the tiles: products of
        // zeros could cost less power, and so run faster, than a kernel's.
        scratch: [0x80u8, 0x3f]
            .into_iter()
            .cycle()
            .take(convjit_x86::peak::PEAK_SCRATCH_BYTES)
            .collect(),
        _module: module,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where the host runs them, the loops run and count their FLOPs.
    #[test]
    fn the_peak_loops_run_where_the_host_has_them() {
        let loops = bf16_peaks().unwrap();
        let want =
            usize::from(tiles_refused().is_none()) + usize::from(convjit_plan::backend::has_bf16());
        assert_eq!(loops.len(), want);
        for mut l in loops {
            l.run(1000);
            assert!(l.flops(1000) > 0, "{}", l.name());
        }
    }
}
