//! Which channel blocks a tile stage computes together: pairs of
//! blocks (`[N0]`, `[N1]`) sharing each A tile, the last of an odd count
//! alone, and for a grouped stage pairs within a group only (a pair
//! straddling two groups would reduce one block over the other's
//! channels), with the A pointer moved to the pair's group.

use super::{imm32, Slot, Tiles};
use iced_x86::{Code, Instruction as I, Register as R};

impl Tiles<'_> {
    /// `body` for every pair of channel blocks (`[N0]`, `[N1] = [N0] +
    /// 1`), then, for an odd count, once more for the last block alone
    /// (`self.n_pair` false: half the products of a pair, where a pair
    /// clamped to the last block would compute it twice).
    pub(super) fn channel_pairs(&mut self, body: impl Fn(&mut Self)) {
        let t = self.t;
        if let Some((per_group, _)) = t.group_blocks.filter(|g| g.0 % 2 == 1 && t.pair_blocks) {
            return self.group_pairs(per_group, body);
        }
        if !t.pair_blocks {
            // Every block alone (a grouped stage whose pairs would
            // straddle groups).
            self.store_imm(Slot::N0, 0);
            let top = self.a.label();
            self.a.bind(top);
            self.block_alone(&body);
            self.load(R::RAX, Slot::N0);
            self.a
                .emit(I::with2(Code::Cmp_rm64_imm32, R::RAX, imm32(t.n_blocks)));
            self.a.branch(Code::Jb_rel8_64, Code::Jb_rel32_64, top);
            return;
        }
        if t.n_blocks >= 2 {
            self.store_imm(Slot::N0, 0);
            let top = self.a.label();
            self.a.bind(top);
            self.block_pair(&body);
            self.load(R::RAX, Slot::N0);
            self.a.emit(I::with2(
                Code::Cmp_rm64_imm32,
                R::RAX,
                imm32(t.n_blocks / 2 * 2),
            ));
            self.a.branch(Code::Jb_rel8_64, Code::Jb_rel32_64, top);
        }
        if t.n_blocks % 2 == 1 {
            self.store_imm(Slot::N0, (t.n_blocks - 1) as i64);
            self.store_imm(Slot::N1, (t.n_blocks - 1) as i64);
            self.n_pair = false;
            body(self);
            self.n_pair = true;
        }
    }

    /// [`Tiles::channel_pairs`] of a grouped stage with an odd count of
    /// blocks per group (tiles): pairs within each group, its last block
    /// alone (a pair straddling two groups would reduce one block over
    /// the other's channels).
    fn group_pairs(&mut self, per_group: usize, body: impl Fn(&mut Self)) {
        let t = self.t;
        let (top, single, next) = (self.a.label(), self.a.label(), self.a.label());
        self.store_imm(Slot::N0, 0);
        self.a.bind(top);
        // [N0] % per_group: the group's last block alone.
        self.load(R::RAX, Slot::N0);
        self.a.emit(I::with2(Code::Xor_r32_rm32, R::EDX, R::EDX));
        self.mov_imm(R::RCX, per_group as i64);
        self.a.emit(I::with1(Code::Div_rm64, R::RCX));
        self.a
            .emit(I::with2(Code::Cmp_rm64_imm32, R::RDX, imm32(per_group - 1)));
        self.a.branch(Code::Je_rel8_64, Code::Je_rel32_64, single);
        self.block_pair(&body);
        self.a.branch(Code::Jmp_rel8_64, Code::Jmp_rel32_64, next);
        self.a.bind(single);
        self.block_alone(&body);
        self.a.bind(next);
        self.load(R::RAX, Slot::N0);
        self.a
            .emit(I::with2(Code::Cmp_rm64_imm32, R::RAX, imm32(t.n_blocks)));
        self.a.branch(Code::Jb_rel8_64, Code::Jb_rel32_64, top);
    }

    /// `body` for blocks `[N0]` and `[N0] + 1`, then `[N0]` += 2.
    fn block_pair(&mut self, body: &impl Fn(&mut Self)) {
        self.load(R::RAX, Slot::N0);
        self.lea(R::RCX, R::RAX, 1);
        self.store(Slot::N1, R::RCX);
        body(self);
        self.add_slot(Slot::N0, 2);
    }

    /// `body` for block `[N0]` alone (`self.n_pair` false), then
    /// `[N0]` += 1.
    fn block_alone(&mut self, body: &impl Fn(&mut Self)) {
        self.load(R::RAX, Slot::N0);
        self.store(Slot::N1, R::RAX);
        self.n_pair = false;
        body(self);
        self.n_pair = true;
        self.add_slot(Slot::N0, 1);
    }

    /// A grouped stage ([`convjit_plan::stage_plan::TilePlan::group_blocks`]): `a` += the converted
    /// bytes before channel block `[N0]`'s group, `[N0] / per_group *
    /// group_bytes` (a pair's `[N1]` lies in the same group). Uses rax,
    /// rcx, rdx.
    pub(super) fn add_group_offset(&mut self, a: R) {
        let Some((per_group, group_bytes)) = self.t.group_blocks else {
            return;
        };
        self.load(R::RAX, Slot::N0);
        self.a.emit(I::with2(Code::Xor_r32_rm32, R::EDX, R::EDX));
        self.mov_imm(R::RCX, per_group as i64);
        self.a.emit(I::with1(Code::Div_rm64, R::RCX));
        self.mul_imm(R::RAX, group_bytes as i64);
        self.a.emit(I::with2(Code::Add_r64_rm64, a, R::RAX));
    }
}
