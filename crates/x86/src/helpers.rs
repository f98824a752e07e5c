//! Two small functions a bf16 object calls beside its stage functions
//! (`convjit build --precision bf16`): what the JIT's runtime does in Rust
//! (`convjit_jit`'s `bf16.rs` and `tiles.rs`), as machine code, so the
//! object needs nothing but the C library.

use crate::asm::{mem, Asm};
use iced_x86::{Code, Instruction as I, Register as R};

/// `extern "C" fn(src: *const f32, dst: *mut f32, n: usize)`: `n` floats
/// of `src` rounded to bf16 into `dst` (which may be `src`), bit for bit
/// `convjit_ir::round_bf16`: nearest even by integer arithmetic, a NaN
/// made quiet and kept a NaN (`vcvtneps2bf16` would flush denormals).
/// Sixteen at a time, the tail masked. AVX-512F.
pub fn round_bf16_code() -> Result<Vec<u8>, String> {
    let mut a = Asm::new();
    let k = RoundRegs {
        consts: [R::ZMM1, R::ZMM2, R::ZMM3, R::ZMM4, R::ZMM5, R::ZMM6],
        tmp: R::ZMM8,
        mask: R::K1,
    };
    k.load_constants(&mut a);
    let (top, tail, done) = (a.label(), a.label(), a.label());
    a.emit(I::with2(Code::Cmp_rm64_imm8, R::RDX, 16));
    a.branch(Code::Jb_rel8_64, Code::Jb_rel32_64, tail);
    a.bind(top);
    a.emit(I::with2(
        Code::EVEX_Vmovdqu32_zmm_k1z_zmmm512,
        R::ZMM0,
        mem(R::RDI, 0),
    ));
    k.round(&mut a, R::ZMM0, R::ZMM7);
    a.emit(I::with2(
        Code::EVEX_Vmovdqu32_zmmm512_k1z_zmm,
        mem(R::RSI, 0),
        R::ZMM7,
    ));
    a.emit(I::with2(Code::Add_rm64_imm8, R::RDI, 64));
    a.emit(I::with2(Code::Add_rm64_imm8, R::RSI, 64));
    a.emit(I::with2(Code::Sub_rm64_imm8, R::RDX, 16));
    a.emit(I::with2(Code::Cmp_rm64_imm8, R::RDX, 16));
    a.branch(Code::Jae_rel8_64, Code::Jae_rel32_64, top);
    a.bind(tail);
    a.emit(I::with2(Code::Test_rm64_r64, R::RDX, R::RDX));
    a.branch(Code::Je_rel8_64, Code::Je_rel32_64, done);
    // k2: the low n (< 16) lanes.
    a.emit(I::with2(Code::Mov_r32_rm32, R::ECX, R::EDX));
    a.emit(I::with2(Code::Mov_r32_imm32, R::EAX, 1u32));
    a.emit(I::with2(Code::Shl_rm32_CL, R::EAX, R::CL));
    a.emit(I::with1(Code::Dec_rm32, R::EAX));
    a.emit(I::with2(Code::VEX_Kmovw_kr_r32, R::K2, R::EAX));
    a.emit_with(
        I::with2(
            Code::EVEX_Vmovdqu32_zmm_k1z_zmmm512,
            R::ZMM0,
            mem(R::RDI, 0),
        ),
        |i| {
            i.set_op_mask(R::K2);
            i.set_zeroing_masking(true);
        },
    );
    k.round(&mut a, R::ZMM0, R::ZMM7);
    a.emit_with(
        I::with2(
            Code::EVEX_Vmovdqu32_zmmm512_k1z_zmm,
            mem(R::RSI, 0),
            R::ZMM7,
        ),
        |i| i.set_op_mask(R::K2),
    );
    a.bind(done);
    a.emit(Ok(I::with(Code::VEX_Vzeroupper)));
    a.emit(Ok(I::with(Code::Retnq)));
    a.finish()
}

/// The registers of [`RoundRegs::round`]: six for its constants (0x7fff,
/// 0x7fffffff, 0x7f800000 (inf), the quiet bit, the kept half, 1), a
/// temporary and an opmask.
pub(crate) struct RoundRegs {
    pub consts: [R; 6],
    pub tmp: R,
    pub mask: R,
}

impl RoundRegs {
    /// Broadcasts the constants (uses eax).
    pub fn load_constants(&self, a: &mut Asm) {
        let values = [
            0x7fffu32,
            0x7fff_ffff,
            0x7f80_0000,
            0x0040_0000,
            0xffff_0000,
            1,
        ];
        for (z, v) in self.consts.into_iter().zip(values) {
            a.emit(I::with2(Code::Mov_r32_imm32, R::EAX, v));
            a.emit(I::with2(Code::EVEX_Vpbroadcastd_zmm_k1z_r32, z, R::EAX));
        }
    }

    /// `dst` = `src`'s sixteen floats rounded to bf16 (`dst` may be `src`:
    /// it is written last).
    pub fn round(&self, a: &mut Asm, src: R, dst: R) {
        let [bias, magnitude, inf, quiet, kept, one] = self.consts;
        let (tmp, mask) = (self.tmp, self.mask);
        // NaN lanes: |u| > inf (predicate 6: not less or equal, unsigned).
        a.emit(I::with3(
            Code::EVEX_Vpandd_zmm_k1z_zmm_zmmm512b32,
            tmp,
            src,
            magnitude,
        ));
        a.emit(I::with4(
            Code::EVEX_Vpcmpud_kr_k1_zmm_zmmm512b32_imm8,
            mask,
            tmp,
            inf,
            6u32,
        ));
        // Rounded: u + 0x7fff + ((u >> 16) & 1); NaN lanes u | quiet bit.
        a.emit(I::with3(
            Code::EVEX_Vpsrld_zmm_k1z_zmmm512b32_imm8,
            tmp,
            src,
            16u32,
        ));
        for (op, x) in [
            (Code::EVEX_Vpandd_zmm_k1z_zmm_zmmm512b32, one),
            (Code::EVEX_Vpaddd_zmm_k1z_zmm_zmmm512b32, bias),
            (Code::EVEX_Vpaddd_zmm_k1z_zmm_zmmm512b32, src),
        ] {
            a.emit(I::with3(op, tmp, tmp, x));
        }
        a.emit_with(
            I::with3(Code::EVEX_Vpord_zmm_k1z_zmm_zmmm512b32, tmp, src, quiet),
            |i| i.set_op_mask(mask),
        );
        a.emit(I::with3(
            Code::EVEX_Vpandd_zmm_k1z_zmm_zmmm512b32,
            dst,
            tmp,
            kept,
        ));
    }
}

/// `extern "C" fn() -> i64`: asks Linux for the AMX tile state
/// (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`, by `syscall`:
/// glibc has no wrapper everywhere) and returns its result, 0 when granted
/// (for every thread of the process; asking again is cheap and harmless).
pub fn tile_permission_code() -> Result<Vec<u8>, String> {
    const SYS_ARCH_PRCTL: u32 = 158;
    const ARCH_REQ_XCOMP_PERM: u32 = 0x1023;
    const XFEATURE_XTILEDATA: u32 = 18;
    let mut a = Asm::new();
    a.emit(I::with2(Code::Mov_r32_imm32, R::EAX, SYS_ARCH_PRCTL));
    a.emit(I::with2(Code::Mov_r32_imm32, R::EDI, ARCH_REQ_XCOMP_PERM));
    a.emit(I::with2(Code::Mov_r32_imm32, R::ESI, XFEATURE_XTILEDATA));
    a.emit(Ok(I::with(Code::Syscall)));
    a.emit(Ok(I::with(Code::Retnq)));
    a.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_helpers_encode() {
        let round = crate::disassemble(&round_bf16_code().unwrap());
        for op in ["vpcmpnleud", "vpord", "kmovw", "vzeroupper"] {
            assert!(round.contains(op), "{op} in\n{round}");
        }
        let perm = crate::disassemble(&tile_permission_code().unwrap());
        assert!(perm.contains("syscall"), "{perm}");
    }
}
