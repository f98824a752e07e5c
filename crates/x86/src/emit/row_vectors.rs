//! Depthwise rows of fewer channels than lanes, run as vectors of
//! consecutive outputs along the row (`StagePlan::row_vectors`): one
//! channel, grey-image row pairs, a depth multiplier spread by a
//! permutation (`StagePlan::row_multiplier`), and 2-12 channels with
//! weights packed per channel phase (`StagePlan::row_weights_off`).

use super::vector::nth_register;
use super::{Count, Ctr, Gen, Slot, Src, CKY, IMM, IP, WP, WTS};
use crate::Isa;
use convjit_plan::stage_plan::tap_range;
use iced_x86::{Code, Instruction as I, Register as R};

/// The widest kernel rows whose row pairs take their taps from shifted
/// vectors ([`Gen::pair_shifts`]): a tap is then a `valignd` on the FMAs'
/// ports instead of a load that crosses a cache line (two loads' worth).
/// One channel, 54x1920 rows (in L2), one thread, alternated: 3x3
/// 11.7-12.3 -> 9.1-9.4 us, 5x5 26.7-27.2 -> 24.1-24.5; 7x7 level
/// (48.0-49.2 against 48.3-51.1), 9x9 82-83 -> 91-94.
const PAIR_SHIFTED_TAPS: usize = 5;

impl Gen<'_> {
    /// Grey-image rows run in pairs ([`Gen::row_pair_block`]) between
    /// output rows `first` and `last` (every kernel row valid): where one
    /// channel runs along the row, rows are consecutive input rows
    /// (stride and dilation 1), the kernel at most 16 rows tall, and two
    /// rows' accumulators and kernel rows fit the register file beside 2
    /// vectors each; at least 2 kernel rows (a 1xK row shares no input
    /// row: it runs one row at a time, with [`Gen::shifted_inputs`]).
    pub(super) fn row_pair_rows(&self) -> Option<(usize, usize)> {
        let p = self.p;
        let one = p.ci == 1 && p.co == 1 && p.row_multiplier == 1;
        // Unrolled over kernel rows: a tall kernel would be too much code.
        if !one || p.sh != 1 || p.dil_h != 1 || p.kh < 2 || p.kh > 16 || self.pair_vectors() < 2 {
            return None;
        }
        let full = |oy: usize| tap_range(oy, p.sh, p.dil_h, p.pt, p.kh, p.h) == (0, p.kh);
        let first = (0..p.ho).find(|&oy| full(oy))?;
        let last = (first..p.ho).take_while(|&oy| full(oy)).last()?;
        (last > first).then_some((first, last))
    }

    /// Vectors per row of a pair block: two rows of accumulators, two
    /// kernel rows of broadcast weights and two input registers.
    /// With taps from shifted vectors ([`Gen::pair_shifts`]), also an
    /// input row's whole vectors.
    fn pair_vectors(&self) -> usize {
        let p = self.p;
        let fixed = 2 * p.kw + 2;
        match self.pair_shifts() {
            true => {
                let extra = ((p.kw - 1) * p.dil_w).div_ceil(p.sched.lanes);
                (self.regs.saturating_sub(fixed + extra) / 3).min(8)
            }
            false => (self.regs.saturating_sub(fixed) / 2).min(8),
        }
    }

    /// A pair block takes its taps by `valignd` from an input row's whole
    /// vectors ([`Gen::shifted_inputs`]) rather than a load each, for
    /// up to [`PAIR_SHIFTED_TAPS`] kernel columns (AVX-512).
    fn pair_shifts(&self) -> bool {
        self.evex() && (2..=PAIR_SHIFTED_TAPS).contains(&self.p.kw)
    }

    /// A one-channel depthwise row's interior floats `a..b` (columns times channels; see
    /// [`StagePlan::row_vectors`](convjit_plan::stage_plan::StagePlan::row_vectors)) in blocks of up to 8 vectors of consecutive
    /// output pixels: per kernel row, its weights broadcast into
    /// registers, then per tap and vector one load and one FMA. The last
    /// block is moved back to end at `b` (recomputing a few pixels, with
    /// the same result).
    pub(super) fn row_vector_blocks(&mut self, a: usize, b: usize, pair: bool) {
        let p = self.p;
        let lanes = p.sched.lanes;
        let vl = (lanes * 4) as i64;
        // `a..b`: floats of the output row (pixels x channels,
        // interleaved); the input row has `m` times fewer with a multiplier.
        let m = p.row_multiplier;
        let nv_most = if pair {
            self.pair_vectors()
        } else if m > 1 {
            (self.regs - 4).min(8)
        } else if p.ci == 1 {
            (self.regs - p.kw - 2).min(8)
        } else {
            convjit_plan::stage_plan::row_block_vectors(p.ci, &p.target)
        };
        let n = b - a;
        let per_block = nv_most * lanes;
        // Full blocks, a block of the whole vectors left, and the last
        // vector moved back to end at `b` (n >= lanes: it starts at `a`
        // or later, so it reads no border column).
        let mut pieces: Vec<(usize, usize, usize)> = Vec::new();
        if n / per_block > 0 {
            pieces.push((a, n / per_block, nv_most));
        }
        let rest = n % per_block;
        if rest / lanes > 0 {
            pieces.push((a + n / per_block * per_block, 1, rest / lanes));
        }
        if !rest.is_multiple_of(lanes) {
            pieces.push((b - lanes, 1, 1));
        }
        for (start, count, nv) in pieces {
            let in_off = ((start / m) as i64 - (p.pl * p.ci) as i64) * 4;
            self.slot_plus(Slot::SegI, Slot::InRow, in_off);
            self.slot_plus(Slot::SegO, Slot::OutRow, start as i64 * 4);
            // Channel of lane 0 of each vector: the same in every
            // repetition (a block is a whole number of channel periods).
            let phases: Vec<usize> = (0..nv).map(|v| (start + v * lanes) % p.ci).collect();
            self.repeat(Count::Const(count), Ctr::Slot(Slot::SegC), &mut |g| {
                if pair {
                    g.row_pair_block(nv);
                } else if m == 2 && g.evex() && nv % 2 == 0 && nv + 2 * p.kw + 2 <= g.regs {
                    g.row_multiplier_planar_block(nv);
                } else if m > 1 {
                    g.row_multiplier_block(nv);
                } else if p.ci == 1 {
                    g.row_vector_block(nv);
                } else {
                    g.row_channels_block(&phases);
                }
                g.add_imm(Ctr::Slot(Slot::SegI), nv as i64 * vl / m as i64);
                g.add_imm(Ctr::Slot(Slot::SegO), nv as i64 * vl);
            });
        }
    }

    /// One block of [`Gen::row_vector_blocks`]: `nv` vectors of output
    /// pixels at `[SegO]`, their first kernel row's input at `[SegI]`.
    fn row_vector_block(&mut self, nv: usize) {
        let p = self.p;
        let acc: Vec<R> = (0..nv).map(|v| self.v(v)).collect();
        let w: Vec<R> = (0..p.kw).map(|kx| self.v(nv + kx)).collect();
        let xs = [self.v(nv + p.kw), self.v(nv + p.kw + 1)];
        // One channel: each tap's weight is lane 0 of its packed unit (a
        // step apart: a vector, or one float where packed compact).
        let tap = p.runs[0].tap_bytes(1) as i64;
        if let Some(off) = p.bias_off {
            let m = self.at(WTS, (off * 4) as i64);
            self.vbroadcast(acc[0], m);
        } else {
            self.vzero(acc[0]);
        }
        for &r in &acc[1..] {
            self.vcopy(r, acc[0]);
        }
        self.first_kernel_row(tap, None);
        let in_ky = (p.dil_h * p.w * 4) as i64;
        let shifted = self.shifted_inputs(nv, p.dil_w, nv + p.kw + 2);
        self.repeat(Count::Slot(Slot::Nky), Ctr::Reg(CKY), &mut |g| {
            for (kx, &wr) in w.iter().enumerate() {
                let m = g.at(WP, kx as i64 * tap);
                g.vbroadcast(wr, m);
            }
            if let Some(sh) = &shifted {
                g.load_aligned_inputs(sh, 0);
            }
            let mut n = 0;
            for (kx, &wr) in w.iter().enumerate() {
                for (v, &a) in acc.iter().enumerate() {
                    let x = xs[n % 2];
                    n += 1;
                    let x = g.tap_input(shifted.as_ref(), x, v, kx * p.dil_w);
                    g.fma(a, x, Src::R(wr));
                }
            }
            g.add_reg_imm(IP, in_ky);
            g.add_reg_imm(WP, p.kw as i64 * tap);
        });
        self.row_epilogue(&acc);
    }

    /// [`Gen::row_vector_block`] for output rows `OY` and `OY + 1` at once
    /// (see [`Gen::row_pair_rows`]): each of the `kh + 1` input rows is
    /// loaded once per tap and vector and feeds both rows, kernel row `j`
    /// of the first and `j - 1` of the second: 15 loads per output vector
    /// of a 5x5 instead of 25; up to [`PAIR_SHIFTED_TAPS`] kernel columns,
    /// each input row's whole vectors are loaded once and the taps shifted
    /// from them. Fully unrolled (every kernel row valid).
    // `kx` indexes both rows' weights, chosen per input row.
    #[allow(clippy::needless_range_loop)]
    fn row_pair_block(&mut self, nv: usize) {
        let p = self.p;
        let (kh, kw) = (p.kh, p.kw);
        let vl = self.vb;
        let tap = p.runs[0].tap_bytes(1) as i64;
        let acc: [Vec<R>; 2] = [
            (0..nv).map(|v| self.v(v)).collect(),
            (nv..2 * nv).map(|v| self.v(v)).collect(),
        ];
        let w: [Vec<R>; 2] = [
            (0..kw).map(|kx| self.v(2 * nv + kx)).collect(),
            (0..kw).map(|kx| self.v(2 * nv + kw + kx)).collect(),
        ];
        let xs = [self.v(2 * nv + 2 * kw), self.v(2 * nv + 2 * kw + 1)];
        if let Some(off) = p.bias_off {
            let m = self.at(WTS, (off * 4) as i64);
            self.vbroadcast(acc[0][0], m);
        } else {
            self.vzero(acc[0][0]);
        }
        for &r in acc[0][1..].iter().chain(&acc[1]) {
            self.vcopy(r, acc[0][0]);
        }
        self.load(IP, Slot::SegI);
        let row = (p.w * 4) as i64;
        let shifted = match self.pair_shifts() {
            true => self.shifted_inputs(nv, p.dil_w, 2 * nv + 2 * kw + 2),
            false => None,
        };
        let mut n = 0;
        for j in 0..=kh {
            if let Some(sh) = &shifted {
                self.load_aligned_inputs(sh, j as i64 * row);
            }
            // Input row j: kernel row j of output row 0, j - 1 of row 1.
            let rows: Vec<(usize, usize)> = [(0, j), (1, j.wrapping_sub(1))]
                .into_iter()
                .filter(|&(_, ky)| ky < kh)
                .collect();
            for &(r, ky) in &rows {
                for (kx, &wr) in w[r].iter().enumerate() {
                    let m = self.at(WTS, ((ky * kw + kx) as i64) * tap);
                    self.vbroadcast(wr, m);
                }
            }
            for kx in 0..kw {
                for v in 0..nv {
                    let x = xs[n % 2];
                    n += 1;
                    let x = match &shifted {
                        Some(sh) => self.tap_input(Some(sh), x, v, kx * p.dil_w),
                        None => {
                            let m = self.at(
                                IP,
                                j as i64 * row + v as i64 * vl + (kx * p.dil_w * 4) as i64,
                            );
                            self.vload(x, m);
                            x
                        }
                    };
                    for &(r, _) in &rows {
                        self.fma(acc[r][v], x, Src::R(w[r][kx]));
                    }
                }
            }
        }
        let (zero, six) = (w[0][0], w[0][1.min(kw - 1)]);
        let six = if six == zero { xs[0] } else { six };
        self.row_epilogue_at(&acc[0], zero, six, 0);
        self.row_epilogue_at(&acc[1], zero, six, (p.wo * 4) as i64);
    }

    /// [`Gen::row_vector_block`] for one channel and multiplier `M` (2 or
    /// 4): vector `v` holds outputs of `lanes / M` pixels, lane `l` output
    /// `l % M` of pixel `l / M`. Per tap and vector, a load of those
    /// pixels (a half or quarter vector: never past the row's last
    /// input), a permutation spreading each to its `M` lanes (the index
    /// vector packed after the weights), and an FMA with the tap's
    /// weights `[tap][lane]` as a memory operand.
    ///
    /// The indices `l / M` are made in registers (bytes from immediates,
    /// zero-extended to dwords), not packed: the packed weights stay
    /// copies of the layer's weights ([`StagePlan::pack_copies`](convjit_plan::stage_plan::StagePlan::pack_copies)), which an AOT
    /// object without weights runs.
    fn row_multiplier_block(&mut self, nv: usize) {
        let p = self.p;
        let (m, lanes) = (p.row_multiplier, p.sched.lanes);
        let off = p.row_weights_off.expect("row multiplier weights") as i64 * 4;
        let vl = self.vb;
        let taps = (p.kh * p.kw) as i64;
        let acc: Vec<R> = (0..nv).map(|v| self.v(v)).collect();
        let idx = self.v(nv);
        let x = self.v(nv + 1);
        let bias = p.bias_off.is_some();
        for &a in &acc {
            if bias {
                let mem = self.at(WTS, off + taps * vl);
                self.vload(a, mem);
            } else {
                self.vzero(a);
            }
        }
        self.spread_indices(idx, m);
        self.first_kernel_row(vl, Some(off));
        let in_ky = (p.dil_h * p.w * 4) as i64;
        let (narrow, perm) = match (self.isa, lanes / m) {
            (Isa::Avx512, 8) => (
                Code::EVEX_Vmovups_ymm_k1z_ymmm256,
                Code::EVEX_Vpermps_zmm_k1z_zmm_zmmm512b32,
            ),
            (Isa::Avx512, 4) => (
                Code::EVEX_Vmovups_xmm_k1z_xmmm128,
                Code::EVEX_Vpermps_zmm_k1z_zmm_zmmm512b32,
            ),
            (Isa::Avx2, 4) => (
                Code::VEX_Vmovups_xmm_xmmm128,
                Code::VEX_Vpermps_ymm_ymm_ymmm256,
            ),
            other => panic!("no row multiplier load for {other:?}"),
        };
        let part = match lanes / m {
            8 => nth_register(R::YMM0, self.index(x)),
            _ => self.x(self.index(x)),
        };
        self.repeat(Count::Slot(Slot::Nky), Ctr::Reg(CKY), &mut |g| {
            for kx in 0..p.kw {
                for (v, &a) in acc.iter().enumerate() {
                    let mem = g.at(IP, ((v * lanes / m + kx * p.dil_w) * 4) as i64);
                    g.a.emit(I::with2(narrow, part, mem));
                    g.a.emit(I::with3(perm, x, idx, x));
                    let w = g.at(WP, kx as i64 * vl);
                    g.fma(a, x, Src::M(w));
                }
            }
            g.add_reg_imm(IP, in_ky);
            g.add_reg_imm(WP, p.kw as i64 * vl);
        });
        self.row_epilogue(&acc);
    }

    /// [`Gen::row_multiplier_block`] for multiplier 2 on AVX-512, planar:
    /// the `nv` accumulators hold `nv / 2` vectors of 16 whole pixels,
    /// output 0 and output 1 of each (`acc[2 pv + o]`), so a tap is one
    /// load of 16 input pixels and two FMAs with its two weights broadcast
    /// in registers, with no permutation; the pairs are interleaved into
    /// the output's order (two `vpermi2ps` per 32 outputs) before the
    /// stores. Per 16 pixels and tap: 1 load (or a `valignd` of loaded
    /// inputs), 2 FMAs, instead of 2 loads, 2 permutations, 2 FMAs and 2
    /// weight loads.
    fn row_multiplier_planar_block(&mut self, nv: usize) {
        let p = self.p;
        let off = p.row_weights_off.expect("row multiplier weights") as i64 * 4;
        let vl = self.vb;
        let taps = (p.kh * p.kw) as i64;
        let acc: Vec<R> = (0..nv).map(|v| self.v(v)).collect();
        // Each tap's two weights broadcast: [kx][o].
        let w: Vec<R> = (0..2 * p.kw).map(|i| self.v(nv + i)).collect();
        let xs = [self.v(nv + 2 * p.kw), self.v(nv + 2 * p.kw + 1)];
        for (v, &a) in acc.iter().enumerate() {
            if p.bias_off.is_some() {
                // Lane `o` of the packed bias vector is output `o`'s.
                let mem = self.at(WTS, off + taps * vl + (v % 2) as i64 * 4);
                self.vbroadcast(a, mem);
            } else {
                self.vzero(a);
            }
        }
        self.first_kernel_row(vl, Some(off));
        let in_ky = (p.dil_h * p.w * 4) as i64;
        // A kernel row's taps from the `nv / 2` vectors' inputs loaded
        // once and shifted (`valignd`), not a load per tap crossing lines:
        // Sobel dx+dy (3x3, one channel to two) in L2 24 -> 19.8 us.
        let shifted = self.shifted_inputs(nv / 2, p.dil_w, nv + 2 * p.kw + 2);
        self.repeat(Count::Slot(Slot::Nky), Ctr::Reg(CKY), &mut |g| {
            for kx in 0..p.kw {
                for o in 0..2 {
                    let m = g.at(WP, kx as i64 * vl + o as i64 * 4);
                    g.vbroadcast(w[2 * kx + o], m);
                }
            }
            if let Some(sh) = &shifted {
                g.load_aligned_inputs(sh, 0);
            }
            let mut n = 0;
            for kx in 0..p.kw {
                for pv in 0..nv / 2 {
                    let x = xs[n % 2];
                    n += 1;
                    let x = g.tap_input(shifted.as_ref(), x, pv, kx * p.dil_w);
                    g.fma(acc[2 * pv], x, Src::R(w[2 * kx]));
                    g.fma(acc[2 * pv + 1], x, Src::R(w[2 * kx + 1]));
                }
            }
            g.add_reg_imm(IP, in_ky);
            g.add_reg_imm(WP, p.kw as i64 * vl);
        });
        // Interleave: output vector 2pv holds pixels 0-7 of the pair's 16
        // as (o0, o1) lane pairs, 2pv + 1 pixels 8-15.
        let (ilo, ihi) = (w[0], w[1]);
        self.byte_indices(ilo, &interleaving(p.sched.lanes, false));
        self.byte_indices(ihi, &interleaving(p.sched.lanes, true));
        for pv in 0..nv / 2 {
            let (a0, a1) = (acc[2 * pv], acc[2 * pv + 1]);
            for (x, idx) in [(xs[0], ilo), (xs[1], ihi)] {
                self.vcopy(x, idx);
                self.a.emit(I::with3(
                    Code::EVEX_Vpermi2ps_zmm_k1z_zmm_zmmm512b32,
                    x,
                    a0,
                    a1,
                ));
            }
            self.vcopy(a0, xs[0]);
            self.vcopy(a1, xs[1]);
        }
        self.row_epilogue(&acc);
    }

    /// `d`'s dword lanes to `l / m`: the lane's byte from two 64-bit
    /// immediates (one with 8 lanes), zero-extended.
    /// `IP` at the segment's input, `WP` at the first valid kernel row's
    /// weights (`[Wk0]` rows of `row_bytes` each, from `WTS`, plus `off`
    /// where the row weights sit after the stage's own).
    fn first_kernel_row(&mut self, row_bytes: i64, off: Option<i64>) {
        self.load(IP, Slot::SegI);
        self.load(WP, Slot::Wk0);
        self.mul_imm(WP, row_bytes);
        self.add_rr(WP, WTS);
        if let Some(off) = off {
            self.add_reg_imm(WP, off);
        }
    }

    fn spread_indices(&mut self, d: R, m: usize) {
        let lanes = self.p.sched.lanes;
        let bytes: Vec<u8> = (0..lanes).map(|l| (l / m) as u8).collect();
        self.byte_indices(d, &bytes);
    }

    /// `d`'s dword lanes to `bytes` (one per lane, at most 255): from
    /// two 64-bit immediates (one with 8 lanes), zero-extended.
    pub(super) fn byte_indices(&mut self, d: R, bytes: &[u8]) {
        let lanes = self.p.sched.lanes;
        let qword = |q: &[u8]| i64::from_le_bytes(q.try_into().expect("8 bytes"));
        let x = self.x(self.index(d));
        let e = self.evex();
        self.a
            .emit(I::with2(Code::Mov_r64_imm64, IMM, qword(&bytes[..8])));
        let movq = if e {
            Code::EVEX_Vmovq_xmm_rm64
        } else {
            Code::VEX_Vmovq_xmm_rm64
        };
        self.a.emit(I::with2(movq, x, IMM));
        if lanes == 16 {
            self.a
                .emit(I::with2(Code::Mov_r64_imm64, IMM, qword(&bytes[8..])));
            self.a.emit(I::with4(
                Code::EVEX_Vpinsrq_xmm_xmm_rm64_imm8,
                x,
                x,
                IMM,
                1u32,
            ));
            self.a
                .emit(I::with2(Code::EVEX_Vpmovzxbd_zmm_k1z_xmmm128, d, x));
        } else {
            self.a.emit(I::with2(Code::VEX_Vpmovzxbd_ymm_xmmm64, d, x));
        }
    }

    /// [`Gen::row_vector_block`] for 2 or more channels: vector `v`'s lane
    /// 0 holds channel `phases[v]`, and its weights and bias are the
    /// plan's row weights of that phase. Per kernel column, each phase's
    /// weights are loaded once into a register where they fit beside the
    /// accumulators ([`phase_registers`]), so an FMA needs only its input
    /// load (an RGB row of 12 vectors: 15 loads per 12 FMAs, not 24; two
    /// loads per FMA bound these rows on AVX-512's two load ports), else
    /// read as memory operands.
    fn row_channels_block(&mut self, phases: &[usize]) {
        let p = self.p;
        let c = p.ci;
        let off = p.row_weights_off.expect("few-channel row weights") as i64 * 4;
        let vl = self.vb;
        let taps = (p.kh * p.kw) as i64;
        let acc: Vec<R> = (0..phases.len()).map(|v| self.v(v)).collect();
        let xs = [self.v(acc.len()), self.v(acc.len() + 1)];
        // The distinct phases, each with its weight register (after the
        // accumulators and the two input registers), where they fit.
        let distinct = phase_registers(phases, self.regs);
        let wreg = |r: usize| -> Option<R> {
            let d = distinct.as_ref()?;
            let i = d.iter().position(|&q| q == r).expect("a block's phase");
            Some(self.v(phases.len() + 2 + i))
        };
        let wregs: Vec<Option<R>> = phases.iter().map(|&r| wreg(r)).collect();
        let used = phases.len() + 2 + distinct.as_ref().map_or(0, Vec::len);
        let shifted = self.shifted_inputs(phases.len(), p.dil_w * c, used);
        for (&a, &r) in acc.iter().zip(phases) {
            if p.bias_off.is_some() {
                let m = self.at(WTS, off + (taps * c as i64 + r as i64) * vl);
                self.vload(a, m);
            } else {
                self.vzero(a);
            }
        }
        self.first_kernel_row(c as i64 * vl, Some(off));
        let in_ky = (p.dil_h * p.w * c * 4) as i64;
        self.repeat(Count::Slot(Slot::Nky), Ctr::Reg(CKY), &mut |g| {
            if let Some(sh) = &shifted {
                g.load_aligned_inputs(sh, 0);
            }
            let mut n = 0;
            for kx in 0..p.kw {
                for (i, &r) in distinct.iter().flatten().enumerate() {
                    let m = g.at(WP, (kx * c + r) as i64 * vl);
                    g.vload(g.v(phases.len() + 2 + i), m);
                }
                for (v, (&a, &r)) in acc.iter().zip(phases).enumerate() {
                    let x = xs[n % 2];
                    n += 1;
                    let x = g.tap_input(shifted.as_ref(), x, v, kx * p.dil_w * c);
                    let w = match wregs[v] {
                        Some(w) => Src::R(w),
                        None => Src::M(g.at(WP, (kx * c + r) as i64 * vl)),
                    };
                    g.fma(a, x, w);
                }
            }
            g.add_reg_imm(IP, in_ky);
            g.add_reg_imm(WP, (p.kw * c) as i64 * vl);
        });
        self.row_epilogue(&acc);
    }
}

/// A row block's inputs as whole vectors from where the block starts
/// (`[IP]`, one per output vector and as many more as the widest tap
/// reaches), each tap's input made from two of them by `valignd`
/// ([`Gen::shifted_inputs`]).
struct Shifted {
    /// The first of the registers holding the whole vectors.
    first: usize,
    /// How many.
    count: usize,
    /// Lanes of the last one the taps read (all where 0): the others are
    /// not loaded (they may lie past the buffer).
    last_lanes: usize,
}

impl Gen<'_> {
    /// AVX-512 only: a block of `nv` vectors whose taps start `step`
    /// floats apart reads each tap's input as `valignd` of two vectors
    /// loaded once per kernel row, rather than as a load of its own, where
    /// the vectors fit after the first `used` registers: every tap but
    /// the first is off a cache line, and a load across two lines costs
    /// two (a 1x7 grey row: 12 cycles per output vector, not 7). The
    /// shuffle takes the FMA's other port, so the block is bound by
    /// ports 0 and 5, not by the loads.
    fn shifted_inputs(&self, nv: usize, step: usize, used: usize) -> Option<Shifted> {
        let p = self.p;
        let lanes = p.sched.lanes;
        let reach = (p.kw - 1) * step;
        let count = nv + reach.div_ceil(lanes);
        let last_lanes = reach % lanes;
        let mask = last_lanes == 0 || self.masks.contains(&last_lanes);
        let fits = used + count <= self.regs;
        (self.evex() && reach > 0 && mask && fits).then_some(Shifted {
            first: used,
            count,
            last_lanes,
        })
    }

    /// Loads [`Shifted`]'s vectors from `[IP]`: the last one masked to the
    /// lanes the taps read.
    fn load_aligned_inputs(&mut self, sh: &Shifted, base: i64) {
        for j in 0..sh.count {
            let r = self.v(sh.first + j);
            let m = self.at(IP, base + j as i64 * self.vb);
            if j + 1 == sh.count && sh.last_lanes != 0 {
                self.vload_masked(r, m, sh.last_lanes, r);
            } else {
                self.vload(r, m);
            }
        }
    }

    /// The input of vector `v`'s tap `d` floats along the row: the whole
    /// vector itself, `valignd` of two of them into `x`, or (without
    /// `shifted`) a load into `x`.
    fn tap_input(&mut self, shifted: Option<&Shifted>, x: R, v: usize, d: usize) -> R {
        let lanes = self.p.sched.lanes;
        let Some(sh) = shifted else {
            let m = self.at(IP, v as i64 * self.vb + d as i64 * 4);
            self.vload(x, m);
            return x;
        };
        let (q, r) = (v + d / lanes, d % lanes);
        let lo = self.v(sh.first + q);
        if r == 0 {
            return lo;
        }
        let hi = self.v(sh.first + q + 1);
        self.a.emit(I::with4(
            Code::EVEX_Valignd_zmm_k1z_zmm_zmmm512b32_imm8,
            x,
            hi,
            lo,
            // r = d % lanes < 16: the imm8 of valignd.
            r as u32,
        ));
        x
    }
}

/// The `vpermi2ps` indices that interleave two vectors of `lanes` lanes
/// pixel by pixel: their first halves (`hi`: their second halves).
pub(super) fn interleaving(lanes: usize, hi: bool) -> Vec<u8> {
    let half = if hi { lanes / 2 } else { 0 };
    (0..lanes)
        .map(|l| ((l % 2) * lanes + half + l / 2) as u8)
        .collect()
}

/// The distinct channel phases of a few-channel row block, in order of
/// first use, where a register each fits beside the block's accumulators
/// and its two input registers (`regs` vector registers); `None` where
/// not (the weights are then memory operands).
fn phase_registers(phases: &[usize], regs: usize) -> Option<Vec<usize>> {
    let mut distinct: Vec<usize> = Vec::new();
    for &r in phases {
        if !distinct.contains(&r) {
            distinct.push(r);
        }
    }
    (phases.len() + 2 + distinct.len() <= regs).then_some(distinct)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{any_plan, emitted};
    use crate::Isa;
    use iced_x86::Code;

    /// The permutation indices of a depth multiplier `m`: lane `l` reads
    /// input pixel `l / m`, one byte per lane in the 64-bit immediates.
    #[test]
    fn spread_indices_put_lane_l_at_pixel_l_over_m() {
        for (isa, m) in [(Isa::Avx2, 2), (Isa::Avx512, 2), (Isa::Avx512, 4)] {
            let p = any_plan(isa);
            let lanes = p.sched.lanes;
            let ins = emitted(&p, isa, |g| g.spread_indices(g.v(3), m));
            let bytes: Vec<u8> = ins
                .iter()
                .filter(|i| i.code() == Code::Mov_r64_imm64)
                .flat_map(|i| i.immediate64().to_le_bytes())
                .collect();
            let want: Vec<u8> = (0..lanes).map(|l| (l / m) as u8).collect();
            assert_eq!(bytes, want, "{isa:?}, multiplier {m}");
            let widen = ins.last().unwrap();
            let code = match isa {
                Isa::Avx2 => Code::VEX_Vpmovzxbd_ymm_xmmm64,
                Isa::Avx512 => Code::EVEX_Vpmovzxbd_zmm_k1z_xmmm128,
            };
            assert_eq!(widen.code(), code);
        }
    }
}
