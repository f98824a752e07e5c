//! convjit's ONNX importer (work in progress).

pub mod proto;
