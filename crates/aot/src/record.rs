//! A [`Module`] that forwards everything to another one and, when asked,
//! records the machine code listing (Cranelift's VCode after register
//! allocation) of every function it compiles: `--emit asm` without
//! compiling anything twice.

use cranelift_codegen::control::ControlPlane;
use cranelift_codegen::{ir, isa, Context};
use cranelift_module::{
    DataDescription, DataId, FuncId, Linkage, Module, ModuleDeclarations, ModuleReloc, ModuleResult,
};

pub struct Recording<M> {
    inner: M,
    asm: Option<String>,
}

impl<M: Module> Recording<M> {
    pub fn new(inner: M, record: bool) -> Recording<M> {
        Recording {
            inner,
            asm: record.then(String::new),
        }
    }

    /// The wrapped module and the listing (if recording).
    pub fn into_parts(self) -> (M, Option<String>) {
        (self.inner, self.asm)
    }
}

impl<M: Module> Module for Recording<M> {
    fn isa(&self) -> &dyn isa::TargetIsa {
        self.inner.isa()
    }

    fn declarations(&self) -> &ModuleDeclarations {
        self.inner.declarations()
    }

    fn declare_function(
        &mut self,
        name: &str,
        linkage: Linkage,
        signature: &ir::Signature,
    ) -> ModuleResult<FuncId> {
        self.inner.declare_function(name, linkage, signature)
    }

    fn declare_anonymous_function(&mut self, signature: &ir::Signature) -> ModuleResult<FuncId> {
        self.inner.declare_anonymous_function(signature)
    }

    fn declare_data(
        &mut self,
        name: &str,
        linkage: Linkage,
        writable: bool,
        tls: bool,
    ) -> ModuleResult<DataId> {
        self.inner.declare_data(name, linkage, writable, tls)
    }

    fn declare_anonymous_data(&mut self, writable: bool, tls: bool) -> ModuleResult<DataId> {
        self.inner.declare_anonymous_data(writable, tls)
    }

    fn define_function_with_control_plane(
        &mut self,
        func: FuncId,
        ctx: &mut Context,
        ctrl_plane: &mut ControlPlane,
    ) -> ModuleResult<()> {
        if self.asm.is_some() {
            ctx.set_disasm(true);
        }
        self.inner
            .define_function_with_control_plane(func, ctx, ctrl_plane)?;
        if let Some(asm) = &mut self.asm {
            let name = &self.inner.declarations().get_function_decl(func).name;
            let name = name.as_deref().unwrap_or("(anonymous)");
            let listing = ctx
                .compiled_code()
                .and_then(|c| c.vcode.as_deref())
                .unwrap_or("(no listing)\n");
            asm.push_str(&format!("; function {name}\n{listing}\n"));
        }
        Ok(())
    }

    fn define_function_bytes(
        &mut self,
        func_id: FuncId,
        alignment: u64,
        bytes: &[u8],
        relocs: &[ModuleReloc],
    ) -> ModuleResult<()> {
        self.inner
            .define_function_bytes(func_id, alignment, bytes, relocs)
    }

    fn define_data(&mut self, data_id: DataId, data: &DataDescription) -> ModuleResult<()> {
        self.inner.define_data(data_id, data)
    }
}
