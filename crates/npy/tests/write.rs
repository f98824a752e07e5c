//! Writing `.npy` files: round trips and atomic replacement.

use std::fs;
use std::path::Path;

use convjit_npy::{read_npy, write_npy, write_npz, Array};

/// Names in `dir`, sorted, so a leftover temporary file would show up.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn round_trips_npy_of_every_rank() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        Array::new(vec![], vec![7.25]),
        Array::new(vec![0], vec![]),
        Array::new(vec![3, 0, 2], vec![]),
        Array::new(
            vec![5],
            vec![1.0, -0.0, f32::MIN_POSITIVE, f32::MAX, f32::NEG_INFINITY],
        ),
        Array::new(
            vec![1, 12, 12, 3],
            (0..432).map(|i| (i as f32).sin()).collect(),
        ),
    ];
    for (i, array) in cases.iter().enumerate() {
        let path = dir.path().join(format!("a{i}.npy"));
        write_npy(&path, &array.shape, &array.data).unwrap();
        assert_eq!(&read_npy(&path).unwrap(), array, "case {i}");
    }
}

#[test]
fn nan_payloads_survive_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nan.npy");
    let bits = [0x7fc0_0000u32, 0xffc0_0001, 0x7f80_0001];
    let data: Vec<f32> = bits.iter().map(|&b| f32::from_bits(b)).collect();
    write_npy(&path, &[3], &data).unwrap();
    let back: Vec<u32> = read_npy(&path)
        .unwrap()
        .data
        .iter()
        .map(|v| v.to_bits())
        .collect();
    assert_eq!(back, bits);
}

#[test]
fn replaces_an_existing_file_and_leaves_no_temporaries() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.npy");
    fs::write(&path, b"old contents").unwrap();
    write_npy(&path, &[2], &[1.0, 2.0]).unwrap();
    assert_eq!(
        read_npy(&path).unwrap(),
        Array::new(vec![2], vec![1.0, 2.0])
    );
    assert_eq!(listing(dir.path()), vec!["w.npy"]);
}

#[test]
fn missing_directory_is_an_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no/such/dir/out.npy");
    let err = write_npy(&path, &[1], &[1.0]).unwrap_err();
    assert_eq!(err.path(), path);
    assert_eq!(
        err.to_string(),
        format!(
            "{}: cannot write: No such file or directory (os error 2)",
            path.display()
        )
    );
    let err = write_npz(&path, &[]).unwrap_err();
    assert!(err
        .to_string()
        .ends_with("out.npy: cannot write: No such file or directory (os error 2)"));
}

#[test]
fn failed_rename_leaves_target_and_directory_untouched() {
    let dir = tempfile::tempdir().unwrap();
    // A non-empty directory cannot be replaced by a file.
    let target = dir.path().join("taken");
    fs::create_dir(&target).unwrap();
    fs::write(target.join("keep"), b"x").unwrap();
    let err = write_npy(&target, &[1], &[1.0]).unwrap_err();
    assert_eq!(err.path(), target);
    assert!(err.to_string().contains("taken: cannot write: "), "{err}");
    assert_eq!(listing(dir.path()), vec!["taken"]);
    assert_eq!(listing(&target), vec!["keep"]);
}

#[cfg(unix)]
#[test]
fn new_files_get_ordinary_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("reference");
    fs::File::create(&reference).unwrap();
    let path = dir.path().join("w.npy");
    write_npy(&path, &[1], &[1.0]).unwrap();
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode(&path),
        mode(&reference),
        "same as File::create, not tempfile's 0600"
    );
}

#[test]
#[should_panic(expected = "does not match 5 data values")]
fn mismatched_shape_is_a_caller_bug() {
    let dir = tempfile::tempdir().unwrap();
    let _ = write_npy(dir.path().join("bad.npy"), &[2, 3], &[0.0; 5]);
}

#[test]
#[should_panic(expected = "Array::new: shape [2, 2] does not match 3 data values")]
fn array_new_checks_the_shape() {
    Array::new(vec![2, 2], vec![0.0; 3]);
}

#[test]
fn lazy_arrays_are_made_chunk_by_chunk_as_written() {
    use convjit_npy::{read_npz, write_npz_lazy, LazyArray};
    use std::cell::Cell;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.npz");
    // Three chunks and a bit; a value is its position, negated.
    let n = 3 * 16384 + 5;
    let calls = Cell::new(0);
    let arrays = [
        LazyArray {
            key: "big".into(),
            shape: vec![n],
            fill: Box::new(|start, out: &mut [f32]| {
                calls.set(calls.get() + 1);
                for (i, v) in out.iter_mut().enumerate() {
                    *v = -((start + i) as f32);
                }
            }),
        },
        LazyArray {
            key: "empty".into(),
            shape: vec![2, 0],
            fill: Box::new(|_, _: &mut [f32]| panic!("nothing to make")),
        },
    ];
    write_npz_lazy(&path, &arrays).unwrap();
    assert_eq!(calls.get(), 4);
    let npz = read_npz(&path).unwrap();
    let big = npz.get("big").unwrap();
    assert_eq!(big.shape, [n]);
    assert!(big.data.iter().enumerate().all(|(i, &v)| v == -(i as f32)));
    assert_eq!(npz.get("empty").unwrap().shape, [2, 0]);
    assert_eq!(listing(dir.path()), ["w.npz"]);
}
