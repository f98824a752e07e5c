//! Loops that measure the bf16 ceilings of this machine, timed beside the
//! kernels (`convjit bench`'s `amx-bf16-peak` and `bf16-512-peak`), as
//! the FMA peaks are: a loaded or slower-clocked machine then shows in
//! the ratio, not in the kernels' numbers alone.
//!
//! Both are `extern "C" fn(iterations: usize, scratch: *mut u8)`, the
//! scratch at least [`PEAK_SCRATCH_BYTES`] bytes (its values do not
//! matter: the products are never read).

use crate::asm::Asm;
use iced_x86::{Code, Instruction as I, Register as R};

/// Scratch bytes of a peak loop: a tile configuration and two tiles.
pub const PEAK_SCRATCH_BYTES: usize = 64 + 2 * 1024;

/// FLOPs of one iteration of [`amx_bf16_peak`]: four 16x16x32 tile
/// products.
pub const AMX_PEAK_FLOPS: u64 = 4 * 16 * 16 * 32 * 2;

/// FLOPs of one iteration of [`bf16_512_peak`]: twelve `vdpbf16ps zmm`,
/// each 16 lanes of two products and a sum.
pub const BF16_512_PEAK_FLOPS: u64 = 12 * 16 * 2 * 2;

/// `TDPBF16PS` on four accumulator tiles from two A and two B tiles (the
/// 2x2 blocking of the tile stages, without their loads).
pub fn amx_bf16_peak() -> Result<Vec<u8>, String> {
    let mut a = Asm::new();
    // The tile functions' configuration, built at [rsi].
    crate::tiles::tile_config(&mut a, R::RSI);
    let tmm: Vec<R> = (0..8).map(|i| R::TMM0 + i).collect();
    for t in &tmm[..4] {
        a.emit(I::with1(Code::VEX_Tilezero_tmm, *t));
    }
    // A and B tiles: 64-byte rows of the scratch after the configuration.
    a.emit(I::with2(Code::Mov_r64_imm64, R::RAX, 64u64));
    for (t, off) in [(4, 64), (5, 64), (6, 64 + 1024), (7, 64 + 1024)] {
        let m =
            iced_x86::MemoryOperand::with_base_index_scale_displ_size(R::RSI, R::RAX, 1, off, 1);
        a.emit(I::with2(Code::VEX_Tileloadd_tmm_sibmem, tmm[t], m));
    }
    let top = a.label();
    let done = a.label();
    a.emit(I::with2(Code::Test_rm64_r64, R::RDI, R::RDI));
    a.branch(Code::Je_rel8_64, Code::Je_rel32_64, done);
    a.bind(top);
    for (c, x, y) in [(0, 4, 6), (1, 4, 7), (2, 5, 6), (3, 5, 7)] {
        a.emit(I::with3(
            Code::VEX_Tdpbf16ps_tmm_tmm_tmm,
            tmm[c],
            tmm[x],
            tmm[y],
        ));
    }
    a.emit(I::with1(Code::Dec_rm64, R::RDI));
    a.branch(Code::Jne_rel8_64, Code::Jne_rel32_64, top);
    a.bind(done);
    a.emit(Ok(I::with(Code::VEX_Tilerelease)));
    a.emit(Ok(I::with(Code::VEX_Vzeroupper)));
    a.emit(Ok(I::with(Code::Retnq)));
    a.finish()
}

/// `vdpbf16ps zmm` on twelve independent accumulators (two per port for
/// its latency, as the FMA peaks do). Not latency-bound on Sapphire
/// Rapids: a C loop of the same (gcc -O3 intrinsics, one pinned core, load
/// about 1.2) ran 51-55 GFLOP/s with 8 or 12 accumulators and 52-57 with
/// 16, 24 or 28 (64 FLOPs an instruction), against 100-114 for 512-bit
/// FMAs in the same runs: `vdpbf16ps` issues at a quarter of the FMAs'
/// rate there, half their products, so bf16 stages off tiles keep f32
/// FMAs on Intel by default (`stage_plan::Bf16Units::Auto`).
pub fn bf16_512_peak() -> Result<Vec<u8>, String> {
    let mut a = Asm::new();
    let zmm = crate::tiles::zmm;
    for i in 0..14 {
        a.emit(I::with3(
            Code::EVEX_Vpxord_zmm_k1z_zmm_zmmm512b32,
            zmm(i),
            zmm(i),
            zmm(i),
        ));
    }
    let top = a.label();
    let done = a.label();
    a.emit(I::with2(Code::Test_rm64_r64, R::RDI, R::RDI));
    a.branch(Code::Je_rel8_64, Code::Je_rel32_64, done);
    a.bind(top);
    for i in 0..12 {
        a.emit(I::with3(
            Code::EVEX_Vdpbf16ps_zmm_k1z_zmm_zmmm512b32,
            zmm(i),
            zmm(12),
            zmm(13),
        ));
    }
    a.emit(I::with1(Code::Dec_rm64, R::RDI));
    a.branch(Code::Jne_rel8_64, Code::Jne_rel32_64, top);
    a.bind(done);
    a.emit(Ok(I::with(Code::VEX_Vzeroupper)));
    a.emit(Ok(I::with(Code::Retnq)));
    a.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{Decoder, DecoderOptions, Mnemonic};

    fn mnemonics(code: &[u8]) -> Vec<Mnemonic> {
        Decoder::with_ip(64, code, 0, DecoderOptions::NONE)
            .into_iter()
            .map(|i| i.mnemonic())
            .collect()
    }

    #[test]
    fn the_loops_hold_what_their_flops_count() {
        let amx = mnemonics(&amx_bf16_peak().unwrap());
        assert_eq!(amx.iter().filter(|&&m| m == Mnemonic::Tdpbf16ps).count(), 4);
        assert_eq!(AMX_PEAK_FLOPS, 4 * 16_384);
        let avx = mnemonics(&bf16_512_peak().unwrap());
        assert_eq!(
            avx.iter().filter(|&&m| m == Mnemonic::Vdpbf16ps).count(),
            12
        );
        assert!(amx.contains(&Mnemonic::Tilerelease) && avx.contains(&Mnemonic::Ret));
    }
}
