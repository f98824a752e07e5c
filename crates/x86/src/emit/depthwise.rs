//! Depthwise stages: rows with row vectors (and row pairs) before their
//! column blocks, the taps of one kernel row, and the prefetch of the
//! input rows the next output row adds.

use super::{BlockArgs, Gen, Src, IMM, IP, LEFT, OY, WP};
#[cfg(doc)]
use convjit_plan::stage_plan::StagePlan;
use convjit_plan::stage_plan::{DwInputColumns, InSrc, Rows, Run};
use iced_x86::{Code, Instruction as I, Register as R};

/// Prefetch instructions per depthwise register block at most: 16 pixels
/// of a 3-wide kernel at stride 2 read 33 lines of each of 2 new rows.
const MAX_PREFETCHES: usize = 72;

impl Gen<'_> {
    /// A row with interior floats `a..b` (pixels times channels) as row
    /// vectors ([`Rows::row_vectors`]), then its register blocks; two rows
    /// at a time where grey-image rows pair ([`Gen::row_pair_rows`]).
    pub(super) fn vector_row(
        &mut self,
        r: &Rows,
        (a, b): (usize, usize),
        inner: &mut dyn FnMut(&mut Self, &BlockArgs),
    ) {
        let Some((first, last)) = self.row_pair_rows() else {
            self.row_vector_blocks(a, b, false);
            return self.row_blocks(r, inner);
        };
        // Rows `OY` and `OY + 1` both read all kernel rows, and both are
        // in this call: their interior together, then each row's blocks,
        // and the loop moves on by two.
        let single = self.a.label();
        let done = self.a.label();
        self.a.emit(I::with2(Code::Cmp_rm64_imm32, LEFT, 2));
        self.a.branch(Code::Jl_rel8_64, Code::Jl_rel32_64, single);
        self.mov_imm(IMM, first as i64);
        self.a.emit(I::with2(Code::Cmp_r64_rm64, OY, IMM));
        self.a.branch(Code::Jl_rel8_64, Code::Jl_rel32_64, single);
        self.mov_imm(IMM, last as i64);
        self.a.emit(I::with2(Code::Cmp_r64_rm64, OY, IMM));
        self.a.branch(Code::Jge_rel8_64, Code::Jge_rel32_64, single);
        self.row_vector_blocks(a, b, true);
        self.row_blocks(r, inner);
        self.a.emit(I::with2(Code::Add_rm64_imm32, OY, 1));
        self.a.emit(I::with1(Code::Dec_rm64, LEFT));
        self.row_start(r);
        self.row_blocks(r, inner);
        self.a.branch(Code::Jmp_rel8_64, Code::Jmp_rel32_64, done);
        self.a.bind(single);
        self.row_vector_blocks(a, b, false);
        self.row_blocks(r, inner);
        self.a.bind(done);
    }

    /// The taps of one kernel row (`rax`, `rbx` at its input and weights):
    /// input column by input column where the plan has them and the
    /// row's weights fit beside the accumulators
    /// ([`StagePlan::dw_input_columns`]), else kernel column by kernel
    /// column ([`StagePlan::dw_taps`]).
    pub(super) fn dw_taps(&mut self, run: &Run, acc: &[Vec<R>], cols: &[(usize, usize)]) {
        let p = self.p;
        let nu = run.units.len();
        let free = acc.len() * nu;
        if free + p.kw < self.regs {
            if let Some(by_input) = p.dw_input_columns(run, cols) {
                return self.dw_taps_by_column(&run.units[0].input, &by_input, acc, cols);
            }
        }
        let taps = p.dw_taps(run, cols);
        let w: Vec<R> = (0..nu).map(|u| self.v(free + u)).collect();
        let x = self.v(free + nu);
        for col in &taps.columns {
            for (&wr, &at) in w.iter().zip(&col.weights) {
                let m = self.at(WP, at);
                self.vload(wr, m);
            }
            for &(px, base) in &col.pixels {
                // Units reading the same input share one load.
                for t in &taps.inputs {
                    let b = match t.src {
                        InSrc::Splat(c) if self.evex() => {
                            Src::M(self.at_bcst(IP, base + c as i64 * 4))
                        }
                        _ => {
                            self.input(&t.src, x, base);
                            Src::R(x)
                        }
                    };
                    for u in t.units.clone() {
                        let b = match (b, &t.src) {
                            // Recompute: `at` may have used r10 for another operand since.
                            (Src::M(_), &InSrc::Splat(c)) => {
                                Src::M(self.at_bcst(IP, base + c as i64 * 4))
                            }
                            (b, _) => b,
                        };
                        self.fma(acc[px][u], w[u], b);
                    }
                }
            }
        }
    }

    /// Depthwise: prefetches into L2 the input rows that the next output
    /// row reads and this one did not (`sh` rows below the last read,
    /// which is at `rax + at_last`), one line per column and input vector
    /// of the block. A band of a fused dw -> 1x1 group is one output row:
    /// without this its next input row comes from L3 only when the next
    /// band asks for it, after the 1x1 stage, instead of meanwhile
    /// (MobileNet v2's 56x56x144 dw + project: 290-303 -> 260-277 us).
    /// A prefetch never faults, so rows past the image are harmless.
    pub(super) fn prefetch_next_rows(&mut self, run: &Run, cols: &[(usize, usize)], at_last: i64) {
        let p = self.p;
        let row = p.in_row_bytes();
        let value = p.in_bytes();
        // Bytes of one input vector (bf16: half a vector's).
        let vb = self.vb as usize * value / 4;
        // The bytes of a row the block reads, as merged ranges.
        let mut ranges: Vec<(usize, usize)> = cols
            .iter()
            .enumerate()
            .flat_map(|(px, &(kx0, nkx))| (kx0..kx0 + nkx).map(move |kx| px * p.sw + kx * p.dil_w))
            .flat_map(|x| {
                run.units.iter().filter_map(move |u| match u.input {
                    InSrc::Vector(c) | InSrc::Lanes(c, _) => Some((x * p.ci + c) * value),
                    _ => None,
                })
            })
            .map(|a| (a, a + vb))
            .collect();
        ranges.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::new();
        for (a, b) in ranges {
            match merged.last_mut() {
                Some(m) if a <= m.1 => m.1 = m.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        // One per 64 bytes: every line of a range where rows start on a
        // line (run buffers do), all but a range's last one else. Not for
        // wide kernels: a few loads' worth of instructions at most.
        let lines: usize = merged.iter().map(|&(a, b)| (b - a).div_ceil(64)).sum();
        if lines * p.sh > MAX_PREFETCHES {
            return;
        }
        for j in 1..=p.sh as i64 {
            for &(a, b) in &merged {
                for off in (a..b).step_by(64) {
                    let m = self.at(IP, at_last + j * row + off as i64);
                    self.a.emit(I::with1(Code::Prefetcht1_m8, m));
                }
            }
        }
    }

    /// [`Gen::dw_taps`] for one unit (reading `src`), input column by
    /// input column: each input vector is loaded once and feeds every
    /// (pixel, kernel column) that reads it, the weight vectors of the
    /// row's columns that `cols` read in registers.
    fn dw_taps_by_column(
        &mut self,
        src: &InSrc,
        by_input: &DwInputColumns,
        acc: &[Vec<R>],
        cols: &[(usize, usize)],
    ) {
        let p = self.p;
        let free = acc.len();
        let w: Vec<R> = (0..p.kw).map(|kx| self.v(free + kx)).collect();
        let nx = (self.regs - free - p.kw).min(2);
        let xs: Vec<R> = (0..nx).map(|i| self.v(free + p.kw + i)).collect();
        let mut used = vec![false; p.kw];
        for &(kx0, nkx) in cols {
            for u in used.iter_mut().skip(kx0).take(nkx) {
                *u = true;
            }
        }
        for (kx, &wr) in w.iter().enumerate() {
            if used[kx] {
                let m = self.at(WP, by_input.weights[kx]);
                self.vload(wr, m);
            }
        }
        for (n, column) in by_input.columns.iter().enumerate() {
            let x = xs[n % nx];
            self.input(src, x, column.in_off);
            for &(px, kx) in &column.uses {
                self.fma(acc[px][0], x, Src::R(w[kx]));
            }
        }
    }

    /// Loads a unit's input at `rax + base` into `x`: f32 (rounded to bf16
    /// where [`StagePlan::round_input`]), or stored as bf16
    /// ([`StagePlan::bf16_input`], whole vectors only) widened.
    fn input(&mut self, src: &InSrc, x: R, base: i64) {
        match *src {
            InSrc::Vector(c) if self.p.bf16_input => {
                let m = self.at(IP, base + c as i64 * 2);
                self.vload_bf16(x, m);
            }
            InSrc::Vector(c) => {
                let m = self.at(IP, base + c as i64 * 4);
                self.vload(x, m);
                if self.p.round_input {
                    self.round_bf16(x, x);
                }
            }
            InSrc::Splat(c) => {
                let m = self.at(IP, base + c as i64 * 4);
                self.vbroadcast(x, m);
            }
            InSrc::Lanes(c, n) => {
                let m = self.at(IP, base + c as i64 * 4);
                self.vload_masked(x, m, n, x);
            }
            InSrc::None => unreachable!("conv units have no vector input"),
        }
    }
}
