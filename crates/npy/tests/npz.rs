//! Reading and writing `.npz` archives.

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};

use convjit_npy::{npy_bytes, read_npz, write_npz, Array};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// The arrays `make_fixtures.py` stores in its archives.
fn fixture_arrays() -> (Array, Array) {
    let a = Array::new(vec![2, 3], (0..6).map(|i| i as f32).collect());
    let b = Array::new(
        vec![2, 3, 4],
        (0..24).map(|i| i as f32 / 4.0 - 2.0).collect(),
    );
    (a, b)
}

/// A zip of raw `(name, bytes)` entries, optionally deflated.
fn zip_bytes(entries: &[(&str, &[u8])], method: CompressionMethod) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    let mut zip = ZipWriter::new(&mut out);
    let options = SimpleFileOptions::default()
        .compression_method(method)
        .large_file(true);
    for (name, bytes) in entries {
        zip.start_file(*name, options).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap();
    out.into_inner()
}

/// Writes `bytes` as `name` in a fresh directory and returns read_npz's error
/// with the path prefix removed, plus the error's key.
fn npz_error(name: &str, bytes: &[u8]) -> (String, Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    let err = read_npz(&path).expect_err("the archive is invalid");
    assert_eq!(err.path(), path);
    let text = err.to_string();
    let prefix = format!("{}: ", path.display());
    let reason = text
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{text:?} should start with {prefix:?}"));
    (reason.to_string(), err.key().map(str::to_string))
}

/// Offset of the first central-directory header in a zip image.
fn central_directory(zip: &[u8]) -> usize {
    zip.windows(4).position(|w| w == b"PK\x01\x02").unwrap()
}

#[test]
fn reads_savez_and_savez_compressed() {
    let (a, b) = fixture_arrays();
    for name in ["savez.npz", "savez_compressed.npz"] {
        let npz = read_npz(fixture(name)).unwrap();
        assert_eq!(npz.path(), fixture(name));
        assert_eq!(
            npz.keys().collect::<Vec<_>>(),
            vec!["a", "dw.weight"],
            "{name}"
        );
        assert_eq!((npz.len(), npz.is_empty()), (2, false));
        assert_eq!(npz.get("a"), Some(&a), "{name}");
        assert_eq!(npz.get("dw.weight"), Some(&b), "{name}");
        assert_eq!(npz.get("a.npy"), None, "keys have no .npy suffix");
    }
}

#[test]
fn wrong_dtype_names_file_and_key() {
    let path = fixture("savez_f64.npz");
    let err = read_npz(&path).unwrap_err();
    assert_eq!(err.key(), Some("dw.weight"));
    assert_eq!(
        err.to_string(),
        format!(
            "{}: key 'dw.weight': dtype is float64 ('<f8'), expected float32 ('<f4')",
            path.display()
        )
    );
}

#[test]
fn round_trips_arrays_of_every_rank() {
    let arrays = [
        ("scalar", Array::new(vec![], vec![-1.5])),
        ("empty", Array::new(vec![0], vec![])),
        ("zero_dim", Array::new(vec![2, 0, 4], vec![])),
        ("bias", Array::new(vec![3], vec![1.0, f32::INFINITY, -0.0])),
        (
            "dw.weight",
            Array::new(vec![3, 3, 1, 8], (0..72).map(|i| i as f32 * 0.1).collect()),
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.npz");
    let refs: Vec<(&str, &Array)> = arrays.iter().map(|(k, a)| (*k, a)).collect();
    write_npz(&path, &refs).unwrap();
    let npz = read_npz(&path).unwrap();
    assert_eq!(npz.len(), arrays.len());
    for (key, array) in &arrays {
        assert_eq!(npz.get(key), Some(array), "{key}");
    }
}

#[test]
fn writes_stored_npy_entries() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.npz");
    let a = Array::new(vec![2], vec![1.0, 2.0]);
    write_npz(&path, &[("k", &a)]).unwrap();
    let mut zip = zip::ZipArchive::new(std::fs::File::open(&path).unwrap()).unwrap();
    let entry = zip.by_index(0).unwrap();
    assert_eq!(entry.name().unwrap(), "k.npy");
    assert_eq!(entry.compression(), CompressionMethod::Stored);
    assert_eq!(entry.size(), npy_bytes(&[2], &[1.0, 2.0]).len() as u64);
}

#[test]
fn empty_archive_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("none.npz");
    write_npz(&path, &[]).unwrap();
    let npz = read_npz(&path).unwrap();
    assert!(npz.is_empty());
    assert_eq!(npz.keys().count(), 0);
}

#[test]
fn write_rejects_duplicate_keys_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dup.npz");
    let a = Array::new(vec![1], vec![1.0]);
    let err = write_npz(&path, &[("x", &a), ("y", &a), ("x", &a)]).unwrap_err();
    assert_eq!(err.key(), Some("x"));
    assert!(
        err.to_string()
            .ends_with("dup.npz: key 'x': given twice; keys must be unique"),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// A pipe, FIFO or device cannot be a zip (read by seeking): refused as
/// such, and never opened a second time (the hint's second open of a
/// FIFO whose writer had left waited for ever).
#[cfg(unix)]
#[test]
fn only_regular_files_are_archives() {
    for path in ["/dev/null", "/dev/zero"] {
        let err = convjit_npy::NpzArchive::open(path)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("not a regular file"), "{err}");
    }
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("w.npz");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: `c` is a NUL-terminated path that lives across the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let writer = {
        let fifo = fifo.clone();
        // Opens (unblocking the reader's open), writes a few bytes, leaves.
        std::thread::spawn(move || std::fs::write(fifo, b"\x93NUMPY junk"))
    };
    let err = convjit_npy::NpzArchive::open(&fifo)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("not a regular file"), "{err}");
    writer.join().unwrap().ok();
}

#[test]
fn corrupt_archives_are_not_npz() {
    let (err, key) = npz_error("junk.npz", b"this is not a zip file at all");
    assert!(err.starts_with("not a valid .npz (zip) archive: "), "{err}");
    assert_eq!(key, None);
    let npy = std::fs::read(fixture("f32_v1.npy")).unwrap();
    let (err, _) = npz_error("npy.npz", &npy);
    assert!(err.starts_with("not a valid .npz (zip) archive: "), "{err}");
    assert!(
        err.ends_with(" (this looks like a single .npy array, not an .npz)"),
        "{err}"
    );
    let whole = std::fs::read(fixture("savez.npz")).unwrap();
    let (err, _) = npz_error("cut.npz", &whole[..whole.len() - 30]);
    assert!(err.starts_with("not a valid .npz (zip) archive: "), "{err}");
}

#[test]
fn missing_archive_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gone.npz");
    let err = read_npz(&path).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: cannot read: No such file or directory (os error 2)",
            path.display()
        )
    );
}

#[test]
fn entries_must_be_npy() {
    let npy = npy_bytes(&[1], &[1.0]);
    let zip = zip_bytes(
        &[("a.npy", &npy), ("notes.txt", b"hi")],
        CompressionMethod::Stored,
    );
    let (err, key) = npz_error("mixed.npz", &zip);
    assert_eq!(
        err,
        "entry 'notes.txt' is not a .npy array (every entry of a .npz must be named KEY.npy)"
    );
    assert_eq!(key, None);
}

#[test]
fn duplicate_entries_name_the_key() {
    let one = npy_bytes(&[1], &[1.0]);
    let two = npy_bytes(&[1], &[2.0]);
    let zip = zip_bytes(
        &[("w.npy", &one), ("v.npy", &two)],
        CompressionMethod::Stored,
    );
    // Rename the second entry to the first one's name, in its local and central headers.
    let renamed: Vec<u8> = replace_all(&zip, b"v.npy", b"w.npy");
    let (err, key) = npz_error("dup.npz", &renamed);
    assert_eq!(err, "key 'w': entry 'w.npy' is stored twice in the archive");
    assert_eq!(key.as_deref(), Some("w"));
}

fn replace_all(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = haystack.to_vec();
    let mut i = 0;
    while i + from.len() <= out.len() {
        if &out[i..i + from.len()] == from {
            out[i..i + from.len()].copy_from_slice(to);
        }
        i += 1;
    }
    out
}

#[test]
fn bad_entries_are_reported_with_their_key() {
    let good = npy_bytes(&[2], &[1.0, 2.0]);
    let cut = &good[..good.len() - 2];
    for method in [CompressionMethod::Stored, CompressionMethod::Deflated] {
        let zip = zip_bytes(&[("ok.npy", &good), ("layer1.bias.npy", cut)], method);
        let (err, key) = npz_error("cut.npz", &zip);
        assert_eq!(
            err,
            "key 'layer1.bias': truncated: header says shape [2] (2 values, 8 bytes) but the file has 6 data bytes",
            "{method:?}"
        );
        assert_eq!(key.as_deref(), Some("layer1.bias"));
    }
}

#[test]
fn lying_entry_header_is_bounded_by_real_data() {
    // Claims 2^31 values over a deflated stream holding only a few bytes.
    let mut liar = npy_bytes(&[1], &[0.0]);
    let from = b"(1,), }";
    let to = b"(2147483648,), }";
    let at = liar.windows(from.len()).position(|w| w == from).unwrap();
    liar.splice(at..at + from.len(), to.iter().copied());
    liar.drain(at + to.len()..at + to.len() + 9); // keep the header length unchanged
    let zip = zip_bytes(&[("big.npy", &liar)], CompressionMethod::Deflated);
    let (err, key) = npz_error("liar.npz", &zip);
    assert!(
        err.starts_with("key 'big': truncated: header says shape [2147483648] (2147483648 values, 8589934592 bytes) but the file has 4 data bytes"),
        "{err}"
    );
    assert_eq!(key.as_deref(), Some("big"));
}

#[test]
fn oversized_declared_entry_is_refused() {
    let npy = npy_bytes(&[1], &[1.0]);
    let mut zip = zip_bytes(&[("bomb.npy", &npy)], CompressionMethod::Stored);
    // The zip64 extra field's uncompressed size follows the name and the field's id and length.
    let size_at = central_directory(&zip) + 46 + "bomb.npy".len() + 4;
    zip[size_at..size_at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let (err, key) = npz_error("bomb.npz", &zip);
    assert!(
        err.starts_with(
            "key 'bomb': entry declares 1099511627776 uncompressed bytes, more than the limit of "
        ),
        "{err}"
    );
    assert_eq!(key.as_deref(), Some("bomb"));
}

#[test]
fn corrupted_entry_data_fails_the_checksum() {
    let npy = npy_bytes(&[4], &[1.0, 2.0, 3.0, 4.0]);
    let mut zip = zip_bytes(&[("w.npy", &npy)], CompressionMethod::Stored);
    let data_at = zip
        .windows(4)
        .position(|w| w == 1.0f32.to_le_bytes())
        .unwrap();
    zip[data_at] ^= 0xff;
    let (err, key) = npz_error("crc.npz", &zip);
    assert!(err.starts_with("key 'w': cannot read: "), "{err}");
    assert!(err.to_lowercase().contains("checksum"), "{err}");
    assert_eq!(key.as_deref(), Some("w"));
}
