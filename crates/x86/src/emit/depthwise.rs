//! Depthwise stages: the rows (row vectors and row pairs where the plan
//! has them, then the column blocks), the taps of one kernel row, and the
//! prefetch of the input rows the next output row adds.

use super::{pxs_of, BlockArgs, Count, Ctr, Gen, Slot, Src, IMM, IP, LEFT, OY, WP};
use convjit_plan::stage_plan::{InSrc, Run};
use iced_x86::{Code, Instruction as I, Register as R};

/// Prefetch instructions per depthwise register block at most: 16 pixels
/// of a 3-wide kernel at stride 2 read 33 lines of each of 2 new rows.
const MAX_PREFETCHES: usize = 72;

impl Gen<'_> {
    /// Depthwise: every output row alike, a run-time loop over its valid
    /// kernel rows; each row walks the plan's column blocks.
    pub(super) fn dw_body(&mut self) {
        let p = self.p;
        let vectors = p.row_vectors();
        let cols = match vectors {
            Some((a, b)) => [p.col_blocks_in(0, a), p.col_blocks_in(b, p.wo)].concat(),
            None => p.col_blocks(),
        };
        let px_in = (p.sw * p.ci * 4) as i64;
        let px_out = (p.co * 4) as i64;
        let borders = |g: &mut Self| {
            for c in &cols {
                // Input column start*sw - pl: every tap offset is >= 0.
                let in_off = (c.start * p.sw) as i64 * (p.ci * 4) as i64 - (p.pl * p.ci * 4) as i64;
                g.slot_plus(Slot::SegI, Slot::InRow, in_off);
                g.slot_plus(Slot::SegO, Slot::OutRow, c.start as i64 * px_out);
                let npx = c.cols.len();
                let k = BlockArgs {
                    npx,
                    cols: Some(c.cols.clone()),
                    nky: Count::Slot(Slot::Nky),
                    wk0: true,
                    kx0: 0,
                    nkx: 0,
                };
                g.repeat(Count::Const(c.count), Ctr::Slot(Slot::SegC), &mut |g| {
                    g.channels(&k);
                    g.add_imm(Ctr::Slot(Slot::SegI), npx as i64 * px_in);
                    g.add_imm(Ctr::Slot(Slot::SegO), npx as i64 * px_out);
                });
            }
        };
        let pairs = vectors.and_then(|(a, b)| Some((a, b, self.row_pair_rows()?)));
        self.rows(&mut |g| {
            g.row_taps();
            g.out_row();
            if let Some((a, b, (first, last))) = pairs {
                // Rows `OY` and `OY + 1` both read all kernel rows, and
                // both are in this call: their interior together, then
                // each row's borders, and the loop moves on by two.
                let single = g.a.label();
                let done = g.a.label();
                g.a.emit(I::with2(Code::Cmp_rm64_imm32, LEFT, 2));
                g.a.branch(Code::Jl_rel8_64, Code::Jl_rel32_64, single);
                g.mov_imm(IMM, first as i64);
                g.a.emit(I::with2(Code::Cmp_r64_rm64, OY, IMM));
                g.a.branch(Code::Jl_rel8_64, Code::Jl_rel32_64, single);
                g.mov_imm(IMM, last as i64);
                g.a.emit(I::with2(Code::Cmp_r64_rm64, OY, IMM));
                g.a.branch(Code::Jge_rel8_64, Code::Jge_rel32_64, single);
                g.row_vector_blocks(a, b, true);
                borders(g);
                g.a.emit(I::with2(Code::Add_rm64_imm32, OY, 1));
                g.a.emit(I::with1(Code::Dec_rm64, LEFT));
                g.row_taps();
                g.out_row();
                borders(g);
                g.a.branch(Code::Jmp_rel8_64, Code::Jmp_rel32_64, done);
                g.a.bind(single);
                g.row_vector_blocks(a, b, false);
                borders(g);
                g.a.bind(done);
            } else {
                if let Some((a, b)) = vectors {
                    g.row_vector_blocks(a, b, false);
                }
                borders(g);
            }
        });
    }

    /// The taps of one kernel row (`rax`, `rbx` at its input and weights).
    pub(super) fn dw_taps(&mut self, run: &Run, acc: &[Vec<R>], cols: &[(usize, usize)]) {
        let p = self.p;
        let nu = run.units.len();
        let free = acc.len() * nu;
        let vector_input = matches!(run.units[0].input, InSrc::Vector(_) | InSrc::Lanes(..));
        if nu == 1 && vector_input && free + p.kw < self.regs {
            return self.dw_taps_by_column(run, acc, cols);
        }
        let pstride = (p.sw * p.ci * 4) as i64;
        let w: Vec<R> = (0..nu).map(|u| self.v(free + u)).collect();
        let x = self.v(free + nu);
        for kx in 0..p.kw {
            let pxs = pxs_of(cols, kx);
            if pxs.is_empty() {
                continue;
            }
            let tap_in = (kx * p.dil_w * p.ci * 4) as i64;
            for (u, &wr) in w.iter().enumerate() {
                let at = (kx * run.w_step * 4 + run.unit_bytes(u)) as i64;
                let m = self.at(WP, at);
                self.vload(wr, m);
            }
            for &px in &pxs {
                let base = px as i64 * pstride + tap_in;
                // Units reading the same input share one load.
                let mut done = vec![false; nu];
                for u in 0..nu {
                    if done[u] {
                        continue;
                    }
                    let src = run.units[u].input.clone();
                    let b = match src {
                        InSrc::Splat(c) if self.evex() => {
                            Src::M(self.at_bcst(IP, base + c as i64 * 4))
                        }
                        _ => {
                            self.input(&src, x, base);
                            Src::R(x)
                        }
                    };
                    for v in u..nu {
                        if run.units[v].input == src {
                            done[v] = true;
                            let b = match b {
                                // Recompute: `at` may have used r10 for another operand since.
                                Src::M(_) => match src {
                                    InSrc::Splat(c) => {
                                        Src::M(self.at_bcst(IP, base + c as i64 * 4))
                                    }
                                    _ => b,
                                },
                                r => r,
                            };
                            self.fma(acc[px][v], w[v], b);
                        }
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
        let row = (p.w * p.ci * 4) as i64;
        let vb = self.vb as usize;
        // The bytes of a row the block reads, as merged ranges.
        let mut ranges: Vec<(usize, usize)> = cols
            .iter()
            .enumerate()
            .flat_map(|(px, &(kx0, nkx))| (kx0..kx0 + nkx).map(move |kx| px * p.sw + kx * p.dil_w))
            .flat_map(|x| {
                run.units.iter().filter_map(move |u| match u.input {
                    InSrc::Vector(c) | InSrc::Lanes(c, _) => Some((x * p.ci + c) * 4),
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

    /// [`Gen::dw_taps`] for one unit, input column by input column: each
    /// input vector is loaded once and feeds every (pixel, kernel column)
    /// that reads it, the row's weight vectors in registers.
    fn dw_taps_by_column(&mut self, run: &Run, acc: &[Vec<R>], cols: &[(usize, usize)]) {
        let p = self.p;
        let unit = &run.units[0];
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
                let m = self.at(WP, (kx * run.w_step * 4 + run.unit_bytes(0)) as i64);
                self.vload(wr, m);
            }
        }
        let mut uses: Vec<(usize, usize, usize)> = Vec::new();
        for (px, &(kx0, nkx)) in cols.iter().enumerate() {
            for kx in kx0..kx0 + nkx {
                uses.push((px * p.sw + kx * p.dil_w, px, kx));
            }
        }
        uses.sort();
        let mut k = 0;
        let mut n = 0;
        while k < uses.len() {
            let c = uses[k].0;
            let x = xs[n % nx];
            n += 1;
            self.input(&unit.input, x, (c * p.ci * 4) as i64);
            while k < uses.len() && uses[k].0 == c {
                let (_, px, kx) = uses[k];
                self.fma(acc[px][0], x, Src::R(w[kx]));
                k += 1;
            }
        }
    }

    /// Loads a unit's input at `rax + base` into `x`.
    fn input(&mut self, src: &InSrc, x: R, base: i64) {
        match *src {
            InSrc::Vector(c) => {
                let m = self.at(IP, base + c as i64 * 4);
                self.vload(x, m);
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
