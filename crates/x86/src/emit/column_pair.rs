//! A filter's separated pair in one function, the column sums in
//! registers ([`ColumnPass`], AVX-512 only): per output row and 16
//! pixels, the column stage's sums of the next 16 pixels (one load per
//! kernel row, shared by the M outputs), then the row stage's taps from
//! the sums before, at and after (`valignd`), the bias, activation, and
//! for M = 2 the two outputs interleaved (`vpermi2ps`) as NHWC stores.
//! Every weight is broadcast into a register once per call, the row
//! weights only where they fit (else `{1to16}` memory operands).
//!
//! Rows are in classes of the same valid kernel rows (the top border,
//! the interior, the bottom border), each with its own code: a row
//! picks its class by comparing its index with the classes' ends. Along
//! a row the 16-pixel steps are in runs of the same kind (whether the
//! next sums' loads are whole, masked or past the image, whether the
//! stores are whole or masked), each run a loop or straight code. Where
//! the kernel rows' input passes half of L1d ([`ColumnPass::strip`]), the
//! rows run in column strips, each down all the call's rows: the first
//! strip, the middle ones (one loop, their code the same), the last.

use super::row_vectors::interleaving;
use super::{Count, Ctr, Gen, Slot, Src, IMG, IMM, OY, RUN_I, RUN_O, WTS};
use convjit_ir::Activation;
use convjit_plan::stage_plan::ColumnPass;
use iced_x86::{Code, Instruction as I, Register as R};

/// Loads of the column sums 16 pixels on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Next {
    /// All 16 pixels are in the image.
    Whole,
    /// The first `n` are.
    Masked(usize),
    /// None is: the sums are zero (the row stage's padding).
    Past,
}

/// Where a pair function keeps its vectors: per output `o` its sum and
/// its column sums before, at and after the current 16 pixels, then the
/// loaded input, two shifted taps, zero and six, the interleaving
/// permutations, the column weights, the bias and (where they fit) the row
/// weights.
struct Regs {
    m: usize,
    kh: usize,
    kw: usize,
}

impl Regs {
    fn out(&self, o: usize) -> usize {
        o
    }
    fn before(&self, o: usize) -> usize {
        self.m + o
    }
    fn at(&self, o: usize) -> usize {
        2 * self.m + o
    }
    fn after(&self, o: usize) -> usize {
        3 * self.m + o
    }
    fn input(&self) -> usize {
        4 * self.m
    }
    fn shifted(&self, n: usize) -> usize {
        4 * self.m + 1 + n % 2
    }
    fn zero(&self) -> usize {
        4 * self.m + 3
    }
    fn six(&self) -> usize {
        4 * self.m + 4
    }
    fn permutation(&self, hi: bool) -> usize {
        4 * self.m + 5 + usize::from(hi)
    }
    fn col_weight(&self, o: usize, i: usize) -> usize {
        4 * self.m + 7 + o * self.kh + i
    }
    fn bias(&self, o: usize) -> usize {
        4 * self.m + 7 + self.m * self.kh + o
    }
    /// Where [`ColumnPass::row_in_registers`].
    fn row_weight(&self, o: usize, j: usize) -> usize {
        4 * self.m + 7 + self.m * (self.kh + 1) + o * self.kw + j
    }
}

impl Gen<'_> {
    /// The body of a pair's function (`[Row0]`, `[Rows]` its output rows).
    pub(super) fn column_pair(&mut self, c: &ColumnPass) {
        let p = self.p;
        assert!(self.evex() && p.sched.lanes == 16, "a pair is AVX-512 code");
        let r = Regs {
            m: c.m,
            kh: c.kh,
            kw: p.kw,
        };
        // Masks: the image's last 16 pixels, the output's last stores.
        let rest_in = p.w % 16;
        let mut tails = store_tails(c.m, p.wo % 16);
        tails.push(rest_in);
        tails.retain(|&n| n > 0 && n < 16);
        tails.sort();
        tails.dedup();
        self.set_masks(tails);
        self.pair_weights(c, &r);
        // Row classes: the same valid kernel rows, contiguous rows.
        let mut classes: Vec<(usize, usize, usize)> = Vec::new();
        for y in 0..p.ho {
            let i0 = c.pt.saturating_sub(y).min(c.kh);
            let i1 = (c.h + c.pt).saturating_sub(y).min(c.kh).max(i0);
            match classes.last_mut() {
                Some(last) if (last.1, last.2) == (i0, i1) => last.0 = y + 1,
                _ => classes.push((y + 1, i0, i1)),
            }
        }
        let wo = p.wo;
        let s = c.strip;
        if s == 0 || wo < 2 * s {
            return self.pair_rows(c, &r, &classes, (0, wo));
        }
        // Strips: the first (no column sums before it), the middle ones
        // in a loop (the same code: every load and store whole), the last
        // with the rest.
        let count = wo / s;
        self.mov_imm(R::RAX, 0);
        self.store(Slot::STRIP, R::RAX);
        self.pair_rows(c, &r, &classes, (0, s));
        self.add_imm(Ctr::Slot(Slot::STRIP), (s * 4) as i64);
        self.repeat(
            Count::Const(count - 2),
            Ctr::Slot(Slot::STRIP_C),
            &mut |g| {
                g.pair_rows(c, &r, &classes, (s, 2 * s));
                g.add_imm(Ctr::Slot(Slot::STRIP), (s * 4) as i64);
            },
        );
        self.pair_rows(c, &r, &classes, ((count - 1) * s, wo));
    }

    /// Pixels `span` of the call's rows (`[Strip]` bytes on where the span
    /// does not start the row), each row by its class's code.
    fn pair_rows(
        &mut self,
        c: &ColumnPass,
        r: &Regs,
        classes: &[(usize, usize, usize)],
        span: (usize, usize),
    ) {
        self.rows(&mut |g| {
            let next = g.a.label();
            let mut bodies = Vec::new();
            for &(end, _, _) in &classes[..classes.len() - 1] {
                let l = g.a.label();
                g.mov_imm(IMM, end as i64);
                g.a.emit(I::with2(Code::Cmp_r64_rm64, OY, IMM));
                g.a.branch(Code::Jb_rel8_64, Code::Jb_rel32_64, l);
                bodies.push(l);
            }
            let last = g.a.label();
            g.a.branch(Code::Jmp_rel8_64, Code::Jmp_rel32_64, last);
            bodies.push(last);
            for (&l, &(_, i0, i1)) in bodies.iter().zip(classes) {
                g.a.bind(l);
                g.pair_row(c, r, (i0, i1), span);
                g.a.branch(Code::Jmp_rel8_64, Code::Jmp_rel32_64, next);
            }
            g.a.bind(next);
        });
    }

    /// Every weight broadcast into its register, the permutations and
    /// the activation's constants.
    fn pair_weights(&mut self, c: &ColumnPass, r: &Regs) {
        let p = self.p;
        let base = c.w_off as i64 * 4;
        for o in 0..c.m {
            for i in 0..c.kh {
                let m = self.at(WTS, base + 4 * (o * c.kh + i) as i64);
                self.vbroadcast(self.v(r.col_weight(o, i)), m);
            }
            for j in (0..p.kw).filter(|_| c.row_in_registers) {
                let m = self.at(WTS, base + 4 * (c.m * c.kh + o * p.kw + j) as i64);
                self.vbroadcast(self.v(r.row_weight(o, j)), m);
            }
            let m = self.at(WTS, base + 4 * (c.m * (c.kh + p.kw) + o) as i64);
            self.vbroadcast(self.v(r.bias(o)), m);
        }
        if c.m == 2 {
            for hi in [false, true] {
                let d = self.v(r.permutation(hi));
                self.byte_indices(d, &interleaving(16, hi));
            }
        }
        if p.activation != Activation::None {
            self.vzero(self.v(r.zero()));
        }
        if p.activation == Activation::Relu6 {
            self.vconst(self.v(r.six()), 6.0);
        }
    }

    /// Pixels `a..b` of output row `OY`, of a class reading kernel rows
    /// `i0..i1`.
    fn pair_row(
        &mut self,
        c: &ColumnPass,
        r: &Regs,
        (i0, i1): (usize, usize),
        (a, b): (usize, usize),
    ) {
        let p = self.p;
        // RUN_I at the first valid kernel row's input, RUN_O at the output
        // row, both at pixel `a` (`[Strip]` bytes of input on): both move
        // 16 pixels a step.
        self.mov_rr(RUN_I, OY);
        self.add_reg_imm(RUN_I, i0 as i64 - c.pt as i64);
        self.mul_imm(RUN_I, p.w as i64 * 4);
        self.add_rr(RUN_I, IMG);
        self.mov_rr(RUN_O, OY);
        self.mul_imm(RUN_O, (p.wo * p.co * 4) as i64);
        self.add_slot(RUN_O, Slot::OutBase);
        if a > 0 {
            self.load(R::RAX, Slot::STRIP);
            self.add_rr(RUN_I, R::RAX);
            for _ in 0..c.m {
                self.add_rr(RUN_O, R::RAX);
            }
        }
        let next_of = |j: usize| match (16 * j, 16 * (j + 1)) {
            (_, e) if e <= p.w => Next::Whole,
            (s, _) if s < p.w => Next::Masked(p.w - s),
            _ => Next::Past,
        };
        if p.pl > 0 {
            match a {
                0 => {
                    for o in 0..c.m {
                        self.vzero(self.v(r.before(o)));
                    }
                }
                _ => self.column_sums(c, r, (i0, i1), Next::Whole, -64, r.before(0)),
            }
        }
        self.column_sums(c, r, (i0, i1), next_of(a / 16), 0, r.at(0));
        // Steps of the same kind run as one loop.
        let (first, end) = (a / 16, b.div_ceil(16));
        let kind = |s: usize| (next_of(s + 1), 16 * (s + 1) <= p.wo);
        let mut s = first;
        while s < end {
            let k = kind(s);
            let n = (s..end).take_while(|&t| kind(t) == k).count();
            self.repeat(Count::Const(n), Ctr::Reg(R::RCX), &mut |g| {
                g.column_sums(c, r, (i0, i1), k.0, 64, r.after(0));
                g.row_taps_out(c, r, if k.1 { 16 } else { p.wo % 16 });
                g.add_reg_imm(RUN_I, 64);
                g.add_reg_imm(RUN_O, 64 * c.m as i64);
                for o in 0..c.m {
                    if p.pl > 0 {
                        g.vcopy(g.v(r.before(o)), g.v(r.at(o)));
                    }
                    g.vcopy(g.v(r.at(o)), g.v(r.after(o)));
                }
            });
            s += n;
        }
    }

    /// The column sums of the 16 pixels `off` bytes on from `RUN_I`
    /// (kernel rows `i0..i1`, a row apart) into registers `first..first +
    /// m`: each row's load feeds every output.
    fn column_sums(
        &mut self,
        c: &ColumnPass,
        r: &Regs,
        (i0, i1): (usize, usize),
        next: Next,
        off: i64,
        first: usize,
    ) {
        let x = self.v(r.input());
        if next == Next::Past || i0 == i1 {
            for o in 0..c.m {
                self.vzero(self.v(first + o));
            }
            return;
        }
        for i in i0..i1 {
            let m = self.at(RUN_I, off + ((i - i0) * self.p.w * 4) as i64);
            match next {
                Next::Masked(n) => self.vload_masked(x, m, n, x),
                _ => self.vload(x, m),
            }
            for o in 0..c.m {
                let (acc, w) = (self.v(first + o), self.v(r.col_weight(o, i)));
                if i == i0 {
                    self.a.emit(I::with3(
                        Code::EVEX_Vmulps_zmm_k1z_zmm_zmmm512b32_er,
                        acc,
                        x,
                        w,
                    ));
                } else {
                    self.a.emit(I::with3(
                        Code::EVEX_Vfmadd231ps_zmm_k1z_zmm_zmmm512b32_er,
                        acc,
                        x,
                        w,
                    ));
                }
            }
        }
    }

    /// The row stage's outputs of the current 16 pixels (`lanes` of them
    /// stored) from the column sums before, at and after them.
    fn row_taps_out(&mut self, c: &ColumnPass, r: &Regs, lanes: usize) {
        let p = self.p;
        let mut n = 0;
        for o in 0..c.m {
            let acc = self.v(r.out(o));
            self.vcopy(acc, self.v(r.bias(o)));
            for j in 0..p.kw {
                let d = j as i64 - p.pl as i64;
                let (before, at, after) = (r.before(o), r.at(o), r.after(o));
                let tap = match d {
                    0 => self.v(at),
                    -16 => self.v(before),
                    _ => {
                        let t = self.v(r.shifted(n));
                        n += 1;
                        // (hi:lo) >> d lanes: lanes d.. of `at`, then of
                        // `after`; or for a tap on the left, of `before`
                        // from 16 + d, then of `at`.
                        let (hi, lo, shift) = match d > 0 {
                            true => (after, at, d),
                            false => (at, before, 16 + d),
                        };
                        self.a.emit(I::with4(
                            Code::EVEX_Valignd_zmm_k1z_zmm_zmmm512b32_imm8,
                            t,
                            self.v(hi),
                            self.v(lo),
                            // 1..=15: a tap reaches at most 16 lanes left,
                            // 15 right (`column_pair`).
                            shift as u32,
                        ));
                        t
                    }
                };
                let w = match c.row_in_registers {
                    true => Src::R(self.v(r.row_weight(o, j))),
                    false => {
                        let off = c.w_off + c.m * c.kh + o * p.kw + j;
                        Src::M(self.at_bcst(WTS, off as i64 * 4))
                    }
                };
                self.fma(acc, tap, w);
            }
            if p.activation != Activation::None {
                self.vmax(acc, self.v(r.zero()));
            }
            if p.activation == Activation::Relu6 {
                self.vmin(acc, self.v(r.six()));
            }
        }
        // The stores: one output as it is; two interleaved, pixel by pixel.
        let stored: Vec<(R, usize)> = match c.m {
            1 => vec![(self.v(r.out(0)), lanes)],
            _ => {
                let (a0, a1) = (self.v(r.out(0)), self.v(r.out(1)));
                let mut halves = Vec::new();
                for (hi, t) in [(false, r.shifted(0)), (true, r.shifted(1))] {
                    let t = self.v(t);
                    self.vcopy(t, self.v(r.permutation(hi)));
                    self.a.emit(I::with3(
                        Code::EVEX_Vpermi2ps_zmm_k1z_zmm_zmmm512b32,
                        t,
                        a0,
                        a1,
                    ));
                    halves.push(t);
                }
                let floats = 2 * lanes;
                vec![
                    (halves[0], floats.min(16)),
                    (halves[1], floats.saturating_sub(16)),
                ]
            }
        };
        for (v, (reg, n)) in stored.into_iter().enumerate() {
            let m = self.at(RUN_O, v as i64 * 64);
            match n {
                0 => {}
                16 => self.vstore(m, reg),
                n => self.vstore_masked(m, reg, n, reg),
            }
        }
        // No `prefetchw` ahead of the stores, though the plan may ask
        // (`StagePlan::prefetch_stores`): Sobel's pair at 1920x1080 ran
        // 389-457 us without, 463-490 with (alternated, one run).
    }
}

/// The length of the masked store of a row's last `rest` pixels (none
/// where 0) of `m` outputs each: for two, the one vector of fewer than 16
/// floats, the first or the second.
fn store_tails(m: usize, rest: usize) -> Vec<usize> {
    match (m, rest) {
        (_, 0) => vec![],
        (1, n) => vec![n],
        (_, n) if 2 * n <= 16 => vec![2 * n],
        (_, n) => vec![2 * n - 16],
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::decode;
    use crate::Isa;
    use convjit_plan::stage_plan::{code_size, plan_pair};

    /// The code-size estimate the layer's limit checks (`code_size`)
    /// counts at least what a pair function emits: many row classes (a
    /// 19-row kernel padded on both sides), strips, masked tails, two
    /// outputs, row weights in memory.
    #[test]
    fn a_pairs_code_is_within_its_estimate() {
        for body in [
            "input 9x50x1\n c: conv 3x1 -> 2, pad 1 1 0 0\n r: depthwise 1x3, pad 0 0 1 1, bias",
            "input 40x1043x1\n c: depthwise 19x1, pad 9 9 0 0\n r: depthwise 1x5, pad 0 0 2 2, relu6",
            "input 30x2600x1\n c: conv 5x1 -> 2, pad 2 2 0 0\n r: depthwise 1x5, pad 0 0 2 2",
            "input 3x40x1\n c: depthwise 3x1, pad 9 9 0 0\n r: depthwise 1x3, pad 0 0 16 14",
        ] {
            let l = convjit_ir::compile_source(&format!("layer p {{ {body} }}"))
                .unwrap()
                .remove(0);
            let p = plan_pair(&l.stages[0], &l.stages[1], &Isa::Avx512.target());
            let n = decode(&crate::emit(&p, Isa::Avx512).unwrap()).len();
            assert!(n <= code_size(&p), "{body}: {n} instructions, {} estimated", code_size(&p));
        }
    }
}
