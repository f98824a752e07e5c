//! The Cranelift code generator.
