//! A thin layer over iced-x86's `Encoder`: instructions are encoded one by
//! one as they are made (no block encoder: ours knows its own branches),
//! forward branches are `rel32` and patched when the function is done,
//! backward ones take `rel8` where it reaches.

use iced_x86::{Code, Encoder, IcedError, Instruction, MemoryOperand, Register};

/// A position in the code, bound once.
#[derive(Clone, Copy, Debug)]
pub struct Label(usize);

pub struct Asm {
    enc: Encoder,
    /// Bytes emitted so far: the address (from 0) of the next instruction.
    len: u64,
    labels: Vec<Option<u64>>,
    /// `(end of a rel32 branch, label)`: its last four bytes are patched.
    fixups: Vec<(u64, usize)>,
    /// The first encoding error (a generator bug), reported by `finish`.
    err: Option<String>,
}

impl Asm {
    pub fn new() -> Asm {
        Asm {
            enc: Encoder::new(64),
            len: 0,
            labels: Vec::new(),
            fixups: Vec::new(),
            err: None,
        }
    }

    /// Encodes one instruction (made by `Instruction::withN`).
    pub fn emit(&mut self, i: Result<Instruction, IcedError>) {
        match i.and_then(|i| self.enc.encode(&i, self.len)) {
            Ok(n) => self.len += n as u64,
            Err(e) => {
                self.err.get_or_insert_with(|| e.to_string());
            }
        }
    }

    /// Encodes an instruction after `edit` (op mask, zeroing) has set it up.
    pub fn emit_with(
        &mut self,
        i: Result<Instruction, IcedError>,
        edit: impl FnOnce(&mut Instruction),
    ) {
        self.emit(i.map(|mut i| {
            edit(&mut i);
            i
        }));
    }

    pub fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    pub fn bind(&mut self, l: Label) {
        self.labels[l.0] = Some(self.len);
    }

    /// A conditional or unconditional branch to `l`: `near` is its rel32
    /// form, `short` its rel8 form (used backwards where it reaches).
    pub fn branch(&mut self, short: Code, near: Code, l: Label) {
        match self.labels[l.0] {
            Some(target) if (target as i64 - (self.len as i64 + 2)) >= -128 => {
                self.emit(Instruction::with_branch(short, target));
            }
            Some(target) => self.emit(Instruction::with_branch(near, target)),
            None => {
                // Any in-range target; the displacement is patched in `finish`.
                self.emit(Instruction::with_branch(near, self.len));
                self.fixups.push((self.len, l.0));
            }
        }
    }

    /// The machine code, with every forward branch patched.
    pub fn finish(mut self) -> Result<Vec<u8>, String> {
        if let Some(e) = self.err {
            return Err(e);
        }
        let mut code = self.enc.take_buffer();
        for (end, l) in self.fixups {
            let target = self.labels[l].ok_or("a branch to a label never bound")?;
            let rel =
                i32::try_from(target as i64 - end as i64).map_err(|_| "branch out of range")?;
            code[end as usize - 4..end as usize].copy_from_slice(&rel.to_le_bytes());
        }
        Ok(code)
    }
}

/// `[base + disp]` (the caller has made sure `disp` fits 32 bits).
pub fn mem(base: Register, disp: i32) -> MemoryOperand {
    MemoryOperand::with_base_displ(base, disp as i64)
}

/// `[base + disp]{1toN}`: an embedded broadcast of one f32 (AVX-512).
pub fn bcst(base: Register, disp: i32) -> MemoryOperand {
    MemoryOperand::with_base_displ_bcst_seg(base, disp as i64, true, Register::None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_and_backward_branches_land_on_their_labels() {
        let mut a = Asm::new();
        let top = a.label();
        let out = a.label();
        a.bind(top);
        a.emit(Instruction::with1(Code::Dec_rm64, Register::RAX));
        a.branch(Code::Je_rel8_64, Code::Je_rel32_64, out);
        a.branch(Code::Jmp_rel8_64, Code::Jmp_rel32_64, top);
        a.bind(out);
        a.emit(Ok(Instruction::with(Code::Retnq)));
        let code = a.finish().unwrap();
        // dec rax (3) ; je +2 (6: rel32) ; jmp -11 (2: rel8) ; ret
        assert_eq!(
            code,
            [0x48, 0xff, 0xc8, 0x0f, 0x84, 0x02, 0, 0, 0, 0xeb, 0xf5, 0xc3]
        );
    }
    fn decode(code: &[u8]) -> Vec<iced_x86::Instruction> {
        iced_x86::Decoder::with_ip(64, code, 0, iced_x86::DecoderOptions::NONE)
            .into_iter()
            .collect()
    }

    fn nops(a: &mut Asm, n: usize) {
        for _ in 0..n {
            a.emit(Ok(Instruction::with(Code::Nopd)));
        }
    }

    /// Every forward branch to a label is patched to it, however far,
    /// whether bound before or after other labels.
    #[test]
    fn forward_branches_are_patched_to_their_labels() {
        let mut a = Asm::new();
        let (near, far) = (a.label(), a.label());
        a.branch(Code::Je_rel8_64, Code::Je_rel32_64, far);
        a.branch(Code::Jmp_rel8_64, Code::Jmp_rel32_64, near);
        a.branch(Code::Jne_rel8_64, Code::Jne_rel32_64, far);
        nops(&mut a, 3);
        a.bind(near);
        nops(&mut a, 300);
        a.bind(far);
        a.emit(Ok(Instruction::with(Code::Retnq)));
        let ins = decode(&a.finish().unwrap());
        let (near_at, far_at) = (6 + 5 + 6 + 3, 6 + 5 + 6 + 3 + 300);
        let targets: Vec<u64> = ins[..3].iter().map(|i| i.near_branch_target()).collect();
        assert_eq!(targets, [far_at, near_at, far_at]);
        assert_eq!(ins[0].code(), Code::Je_rel32_64);
        assert_eq!(ins[1].code(), Code::Jmp_rel32_64);
    }

    /// A backward branch takes the 2-byte form exactly where its target
    /// is within -128 bytes of the branch's end.
    #[test]
    fn backward_branches_are_short_where_they_reach() {
        for (gap, short) in [(126, true), (127, false), (1000, false)] {
            let mut a = Asm::new();
            let top = a.label();
            a.bind(top);
            nops(&mut a, gap);
            a.branch(Code::Jne_rel8_64, Code::Jne_rel32_64, top);
            let ins = decode(&a.finish().unwrap());
            let jne = ins.last().unwrap();
            assert_eq!(jne.near_branch_target(), 0, "{gap}");
            let code = if short {
                Code::Jne_rel8_64
            } else {
                Code::Jne_rel32_64
            };
            assert_eq!(jne.code(), code, "{gap}");
        }
    }

    #[test]
    fn a_label_never_bound_is_an_error() {
        let mut a = Asm::new();
        let l = a.label();
        a.branch(Code::Jmp_rel8_64, Code::Jmp_rel32_64, l);
        assert_eq!(a.finish().unwrap_err(), "a branch to a label never bound");
    }

    /// An instruction that does not encode (a generator bug) fails the
    /// function with the first such error, not a later one.
    #[test]
    fn the_first_encoding_error_is_reported() {
        let mut a = Asm::new();
        a.emit(Instruction::with2(Code::Add_rm64_imm32, Register::RAX, 1));
        a.emit(Instruction::with_branch(Code::Jmp_rel8_64, 1000));
        a.emit(Instruction::with_branch(Code::Je_rel8_64, 2000));
        let err = a.finish().unwrap_err();
        // iced names the target in hex: 1000 = 0x3E8, 2000 = 0x7D0.
        assert!(err.contains("3E8"), "{err}");
        assert!(!err.contains("7D0"), "{err}");
    }

    #[test]
    fn operands_address_base_plus_displacement() {
        let m = mem(Register::R12, -8);
        assert_eq!(
            (m.base, m.displacement, m.is_broadcast),
            (Register::R12, -8, false)
        );
        let b = bcst(Register::RAX, i32::MAX);
        assert_eq!((b.base, b.displacement), (Register::RAX, i32::MAX as i64));
        assert!(b.is_broadcast);
    }
}
