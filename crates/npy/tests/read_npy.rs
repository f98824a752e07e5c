//! Reading `.npy` files: NumPy-written fixtures and every way a file can be wrong.

use std::path::{Path, PathBuf};

use convjit_npy::{npy_bytes, parse_npy, read_npy, Array};

/// What `numpy.save` writes for `np.arange(6, dtype='<f4').reshape(2, 3)`.
const ARANGE_2X3: &[u8] = b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }                                                          \n\x00\x00\x00\x00\x00\x00\x80?\x00\x00\x00@\x00\x00@@\x00\x00\x80@\x00\x00\xa0@";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn arange_2x3() -> Array {
    Array::new(vec![2, 3], vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
}

/// Writes `bytes` to `name` in a fresh directory and returns read_npy's error text.
fn read_error(name: &str, bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    let err = read_npy(&path).expect_err("the file is invalid");
    assert_eq!(err.path(), path, "the error names the file");
    assert_eq!(err.key(), None);
    let text = err.to_string();
    let prefix = format!("{}: ", path.display());
    text.strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{text:?} should start with {prefix:?}"))
        .to_string()
}

/// A v1.0 image with a custom header dict, padded like NumPy's.
fn with_header(dict: &str, data: &[u8]) -> Vec<u8> {
    let mut text = dict.to_string();
    while !(10 + text.len() + 1).is_multiple_of(64) {
        text.push(' ');
    }
    text.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(text.len() as u16).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(data);
    out
}

fn f4_header(shape: &str) -> String {
    format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}")
}

#[test]
fn writes_exactly_what_numpy_save_writes() {
    assert_eq!(npy_bytes(&[2, 3], &arange_2x3().data), ARANGE_2X3);
    assert_eq!(std::fs::read(fixture("f32_v1.npy")).unwrap(), ARANGE_2X3);
    assert_eq!(parse_npy(ARANGE_2X3).unwrap(), arange_2x3());
}

#[test]
fn matches_numpy_for_0d_and_empty_arrays() {
    let scalar = std::fs::read(fixture("f32_scalar.npy")).unwrap();
    assert_eq!(npy_bytes(&[], &[2.5]), scalar);
    let empty = std::fs::read(fixture("f32_empty.npy")).unwrap();
    assert_eq!(npy_bytes(&[0, 3], &[]), empty);
}

#[test]
fn reads_all_numpy_format_versions() {
    for name in ["f32_v1.npy", "f32_v2.npy", "f32_v3.npy"] {
        assert_eq!(read_npy(fixture(name)).unwrap(), arange_2x3(), "{name}");
    }
    let v2 = std::fs::read(fixture("f32_v2.npy")).unwrap();
    assert_eq!(&v2[6..8], &[2, 0], "the fixture really is version 2.0");
}

#[test]
fn reads_0d_and_zero_length_arrays() {
    let scalar = read_npy(fixture("f32_scalar.npy")).unwrap();
    assert_eq!(scalar, Array::new(vec![], vec![2.5]));
    assert_eq!(scalar.len(), 1, "a 0-d array holds one value");
    let empty = read_npy(fixture("f32_empty.npy")).unwrap();
    assert_eq!(empty.shape, vec![0, 3]);
    assert!(empty.is_empty());
}

#[test]
fn wrong_dtypes_are_named() {
    let path = fixture("f64.npy");
    let err = read_npy(&path).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: dtype is float64 ('<f8'), expected float32 ('<f4')",
            path.display()
        )
    );
    let err = read_npy(fixture("i32.npy")).unwrap_err().to_string();
    assert!(
        err.ends_with("i32.npy: dtype is int32 ('<i4'), expected float32 ('<f4')"),
        "{err}"
    );
    let big_endian = with_header(
        "{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }",
        &[0; 4],
    );
    assert_eq!(
        read_error("be.npy", &big_endian),
        "dtype is big-endian float32 ('>f4'), expected float32 ('<f4')"
    );
}

#[test]
fn fortran_order_is_refused_with_a_fix() {
    let err = read_npy(fixture("fortran.npy")).unwrap_err().to_string();
    assert!(
        err.contains("fortran.npy: array is stored in Fortran (column-major) order"),
        "{err}"
    );
    assert!(err.contains("np.ascontiguousarray(a)"), "{err}");
}

#[test]
fn missing_file_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.npy");
    let err = read_npy(&path).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: cannot read: No such file or directory (os error 2)",
            path.display()
        )
    );
    assert_eq!(err.path(), path);
}

#[test]
fn a_directory_is_not_readable_as_npy() {
    let dir = tempfile::tempdir().unwrap();
    let err = read_npy(dir.path()).unwrap_err().to_string();
    assert!(err.contains(": cannot read: Is a directory"), "{err}");
}

#[test]
fn truncated_data_reports_both_sizes() {
    let image = with_header(&f4_header("(1, 12, 12, 3)"), &[0; 1000]);
    assert_eq!(
        read_error("in.npy", &image),
        "truncated: header says shape [1, 12, 12, 3] (432 values, 1728 bytes) but the file has 1000 data bytes"
    );
}

#[test]
fn trailing_bytes_are_an_error() {
    let mut image = ARANGE_2X3.to_vec();
    image.extend_from_slice(&[7; 6]);
    assert_eq!(
        read_error("long.npy", &image),
        "too long: header says shape [2, 3] (6 values, 24 bytes) but the file has 30 data bytes (6 unexpected trailing bytes)"
    );
}

#[test]
fn a_lying_header_fails_before_allocating() {
    // 2^31 values claimed, 8 bytes present: must fail fast, not reserve 8 GiB.
    let image = with_header(&f4_header("(2147483648,)"), &[0; 8]);
    let err = read_error("liar.npy", &image);
    assert!(
        err.starts_with(
            "truncated: header says shape [2147483648] (2147483648 values, 8589934592 bytes)"
        ),
        "{err}"
    );
    let image = with_header(&f4_header("(65536, 65536)"), &[]);
    assert!(
        read_error("huge.npy", &image).contains("has too many elements (the limit is 2147483648)")
    );
}

#[test]
fn bad_preambles_are_explained() {
    assert_eq!(
        read_error("empty.npy", b""),
        "empty file, expected a .npy array"
    );
    assert_eq!(
        read_error("text.npy", b"hello world"),
        "not a .npy file: it starts with \"hello wo\", expected \"\\x93NUMPY\""
    );
    let zip = read_error("zip.npy", &std::fs::read(fixture("savez.npz")).unwrap());
    assert!(
        zip.ends_with("(this looks like a zip archive: an .npz, not an .npy)"),
        "{zip}"
    );
    assert_eq!(
        read_error("short.npy", b"\x93NUM"),
        "truncated: the file ends after 4 bytes, inside the .npy preamble"
    );
    assert_eq!(
        read_error("v4.npy", b"\x93NUMPY\x04\x00\x10\x00"),
        "unsupported .npy format version 4.0 (supported: 1.0, 2.0, 3.0)"
    );
    assert_eq!(
        read_error("len.npy", b"\x93NUMPY\x01\x00\x10"),
        "truncated: the file ends inside the header length"
    );
    assert_eq!(
        read_error("hdr.npy", b"\x93NUMPY\x01\x00\x76\x00{'descr'"),
        "truncated: the header should be 118 bytes but the file ends after 8"
    );
    assert_eq!(
        read_error("big.npy", b"\x93NUMPY\x02\x00\xff\xff\xff\xff{"),
        "header length 4294967295 bytes exceeds the limit of 1048576 bytes"
    );
}

#[test]
fn malformed_header_is_quoted() {
    let image = with_header(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'extra': 1, }",
        &[0; 24],
    );
    assert_eq!(
        read_error("x.npy", &image),
        "malformed header: unknown key 'extra' (expected only 'descr', 'fortran_order' and 'shape')"
    );
    let image = with_header(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3) }}",
        &[0; 24],
    );
    let err = read_error("y.npy", &image);
    assert!(
        err.starts_with("malformed header: expected only padding after the closing '}' at byte 58, found `}` in header \"{'descr'"),
        "{err}"
    );
}

#[test]
fn parse_npy_reports_without_a_file_name() {
    let err = parse_npy(&ARANGE_2X3[..ARANGE_2X3.len() - 3]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "truncated: header says shape [2, 3] (6 values, 24 bytes) but the file has 21 data bytes"
    );
}
