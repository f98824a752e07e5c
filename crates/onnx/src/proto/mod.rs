//! Types generated from the official `onnx.proto` (see proto/README.md).
#![allow(clippy::all, missing_docs, rustdoc::all)]

include!("onnx.rs");
