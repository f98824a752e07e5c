//! Property tests: the reader is total (never panics) and writing round-trips.

use std::path::Path;

use convjit_npy::{npy_bytes, parse_npy, read_npz};
use proptest::prelude::*;

/// A shape of up to four small dimensions, with data to match.
fn array() -> impl Strategy<Value = (Vec<usize>, Vec<f32>)> {
    prop::collection::vec(0usize..5, 0..=4).prop_flat_map(|shape| {
        let count = shape.iter().product::<usize>();
        let data = prop::collection::vec(any::<u32>().prop_map(f32::from_bits), count);
        (Just(shape), data)
    })
}

/// One edit of a byte image: overwrite, insert, delete or cut.
#[derive(Debug, Clone)]
enum Edit {
    Set(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Truncate(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    // Indices below 140 mostly land in the preamble and header, where parsing happens.
    let index = prop_oneof![3 => 0usize..140, 1 => any::<usize>()];
    prop_oneof![
        4 => (index.clone(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        2 => (index.clone(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
        2 => index.clone().prop_map(Edit::Remove),
        1 => index.prop_map(Edit::Truncate),
    ]
}

fn apply(bytes: &mut Vec<u8>, edit: &Edit) {
    let len = bytes.len().max(1);
    match *edit {
        Edit::Set(i, b) if !bytes.is_empty() => bytes[i % len] = b,
        Edit::Insert(i, b) => bytes.insert(i % (bytes.len() + 1), b),
        Edit::Remove(i) if !bytes.is_empty() => {
            bytes.remove(i % len);
        }
        Edit::Truncate(i) => bytes.truncate(i % len),
        _ => {}
    }
}

/// Header-shaped text built from the tokens the parser knows, in random order.
fn header_soup() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        Just("{"),
        Just("}"),
        Just("("),
        Just(")"),
        Just(","),
        Just(":"),
        Just(" "),
        Just("\n"),
        Just("'descr'"),
        Just("'shape'"),
        Just("'fortran_order'"),
        Just("'<f4'"),
        Just("\"<f8\""),
        Just("True"),
        Just("False"),
        Just("0"),
        Just("7"),
        Just("-1"),
        Just("2147483649"),
        Just("99999999999999999999999"),
        Just("L"),
        Just("'"),
        Just("\\"),
    ];
    prop::collection::vec(token, 0..40).prop_map(|tokens| {
        let text = tokens.concat();
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(text.len() as u16).to_le_bytes());
        out.extend_from_slice(text.as_bytes());
        out.extend_from_slice(&[0; 8]);
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn write_then_parse_round_trips((shape, data) in array()) {
        let parsed = parse_npy(&npy_bytes(&shape, &data)).unwrap();
        prop_assert_eq!(&parsed.shape, &shape);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        prop_assert_eq!(bits(&parsed.data), bits(&data));
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let result = parse_npy(&bytes);
        prop_assert!(result.is_err() || bytes.starts_with(b"\x93NUMPY"));
    }

    #[test]
    fn mutated_files_never_panic((shape, data) in array(), edits in prop::collection::vec(edit(), 1..6)) {
        let mut bytes = npy_bytes(&shape, &data);
        for e in &edits {
            apply(&mut bytes, e);
        }
        // Either an error with a message, or an array whose size agrees with its shape.
        match parse_npy(&bytes) {
            Ok(array) => prop_assert_eq!(array.shape.iter().product::<usize>(), array.data.len()),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn header_soup_never_panics(bytes in header_soup()) {
        match parse_npy(&bytes) {
            Ok(array) => prop_assert_eq!(array.shape.iter().product::<usize>(), array.data.len()),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn mutated_archives_never_panic(
        compressed in any::<bool>(),
        edits in prop::collection::vec((any::<usize>(), any::<u8>()), 1..8),
    ) {
        let name = if compressed { "savez_compressed.npz" } else { "savez.npz" };
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name);
        let mut bytes = std::fs::read(fixture).unwrap();
        for &(i, b) in &edits {
            let len = bytes.len();
            bytes[i % len] = b;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.npz");
        std::fs::write(&path, &bytes).unwrap();
        let prefix = format!("{}: ", path.display());
        match read_npz(&path) {
            Ok(npz) => {
                let consistent = |a: &convjit_npy::Array| a.shape.iter().product::<usize>() == a.len();
                prop_assert!(npz.keys().all(|k| npz.get(k).is_some_and(consistent)));
            }
            Err(e) => prop_assert!(e.to_string().starts_with(&prefix), "{}", e),
        }
    }
}
