//! The `.npy` container: magic, version, header length, header, raw data.
//!
//! Decoding streams from any reader so that files and (possibly compressed)
//! `.npz` entries share one path, and so memory grows with the bytes actually
//! present rather than with what a header claims.

use std::io::{self, Read, Write};

use crate::header::{escape, header_dict, parse_header, Header};
use crate::{Array, FormatError};

const MAGIC: &[u8; 6] = b"\x93NUMPY";
/// Magic plus the two version bytes.
const PREAMBLE_LEN: usize = 8;
/// NumPy aligns the data start to this many bytes.
const ARRAY_ALIGN: usize = 64;
/// Largest header we read. NumPy itself refuses headers over 10 000 bytes
/// unless told otherwise; a 1 MiB cap keeps a corrupt v2/v3 length field
/// from costing more than that.
pub(crate) const MAX_HEADER_LEN: usize = 1 << 20;
/// Trailing bytes past the data that decoding counts for its message.
const MAX_TRAILING: u64 = 1 << 20;
/// Bytes read and converted per step when streaming the data.
const CHUNK: usize = 64 * 1024;

/// Why decoding stopped: a bad file, or a failure of the reader itself.
#[derive(Debug)]
pub(crate) enum DecodeError {
    Format(FormatError),
    Io(io::Error),
}

impl From<FormatError> for DecodeError {
    fn from(e: FormatError) -> Self {
        DecodeError::Format(e)
    }
}

impl From<io::Error> for DecodeError {
    fn from(e: io::Error) -> Self {
        DecodeError::Io(e)
    }
}

/// Decodes one `.npy` image from `r`, which must end exactly where the data ends.
///
/// `total_len` is the reader's full length when known (a slice or regular
/// file): then a wrong data length is reported before anything is allocated
/// for the data. Without it the data is read in chunks, so a lying header
/// costs at most the bytes that are really there.
pub(crate) fn decode<R: Read>(mut r: R, total_len: Option<u64>) -> Result<Array, DecodeError> {
    let (header, header_end) = read_header(&mut r)?;
    let data = match total_len {
        Some(total) => {
            let data_len = total.saturating_sub(header_end);
            check_data_len(&header, data_len)?;
            read_data(&mut r, &header, header.count)?
        }
        None => read_data(&mut r, &header, header.count.min(CHUNK / 4))?,
    };
    // What follows the data is counted only so far: an entry that
    // inflates to gigabytes past its shape is refused without inflating them.
    let extra = io::copy(&mut r.take(MAX_TRAILING), &mut io::sink())?;
    check_data_len(&header, header.data_bytes() + extra)?;
    Ok(Array {
        shape: header.shape,
        data,
    })
}

/// The shape an `.npy` image declares, reading only its header.
pub(crate) fn decode_shape<R: Read>(mut r: R) -> Result<Vec<usize>, DecodeError> {
    Ok(read_header(&mut r)?.0.shape)
}

/// Reads and parses everything before the data; returns the header and its total byte length.
fn read_header<R: Read>(r: &mut R) -> Result<(Header, u64), DecodeError> {
    let mut preamble = [0u8; PREAMBLE_LEN];
    let got = read_full(r, &mut preamble)?;
    check_magic(&preamble[..got])?;
    let len_bytes = match (preamble[6], preamble[7]) {
        (1, 0) => 2,
        (2 | 3, 0) => 4,
        (major, minor) => {
            return Err(FormatError::new(format!(
                "unsupported .npy format version {major}.{minor} (supported: 1.0, 2.0, 3.0)"
            ))
            .into())
        }
    };
    let mut len_buf = [0u8; 4];
    if read_full(r, &mut len_buf[..len_bytes])? < len_bytes {
        return Err(
            FormatError::new("truncated: the file ends inside the header length".into()).into(),
        );
    }
    let header_len = u32::from_le_bytes(len_buf) as usize;
    if header_len > MAX_HEADER_LEN {
        return Err(FormatError::new(format!(
            "header length {header_len} bytes exceeds the limit of {MAX_HEADER_LEN} bytes"
        ))
        .into());
    }
    let mut text = Vec::new();
    r.take(header_len as u64).read_to_end(&mut text)?;
    if text.len() < header_len {
        return Err(FormatError::new(format!(
            "truncated: the header should be {header_len} bytes but the file ends after {}",
            text.len()
        ))
        .into());
    }
    let header = parse_header(&text)?;
    Ok((header, (PREAMBLE_LEN + len_bytes + header_len) as u64))
}

/// `start` is what the file begins with (up to 8 bytes); it must be the magic and a version.
fn check_magic(start: &[u8]) -> Result<(), FormatError> {
    let n = start.len().min(MAGIC.len());
    if start[..n] != MAGIC[..n] {
        let hint = if start.starts_with(b"PK\x03\x04") {
            " (this looks like a zip archive: an .npz, not an .npy)"
        } else {
            ""
        };
        return Err(FormatError::new(format!(
            "not a .npy file: it starts with \"{}\", expected \"\\x93NUMPY\"{hint}",
            escape(start)
        )));
    }
    if start.is_empty() {
        return Err(FormatError::new("empty file, expected a .npy array".into()));
    }
    if start.len() < PREAMBLE_LEN {
        return Err(FormatError::new(format!(
            "truncated: the file ends after {} bytes, inside the .npy preamble",
            start.len()
        )));
    }
    Ok(())
}

/// Errors unless `data_len` is exactly what the header's shape needs.
fn check_data_len(header: &Header, data_len: u64) -> Result<(), FormatError> {
    if data_len == header.data_bytes() {
        Ok(())
    } else {
        Err(length_error(header, data_len))
    }
}

/// "truncated: header says shape [..] (N values, M bytes) but the file has K data bytes".
fn length_error(header: &Header, data_len: u64) -> FormatError {
    let want = header.data_bytes();
    let claim = format!(
        "header says shape {:?} ({} values, {want} bytes) but the file has {data_len} data bytes",
        header.shape, header.count
    );
    if data_len < want {
        FormatError::new(format!("truncated: {claim}"))
    } else {
        let extra = data_len - want;
        FormatError::new(format!(
            "too long: {claim} ({extra} unexpected trailing bytes)"
        ))
    }
}

/// Reads exactly `header.count` little-endian floats, chunk by chunk.
fn read_data<R: Read>(
    r: &mut R,
    header: &Header,
    capacity: usize,
) -> Result<Vec<f32>, DecodeError> {
    let mut data = Vec::with_capacity(capacity);
    let mut buf = vec![0u8; CHUNK.min(header.count.saturating_mul(4))];
    while data.len() < header.count {
        let want = buf.len().min((header.count - data.len()).saturating_mul(4));
        let got = read_full(r, &mut buf[..want])?;
        data.extend(
            buf[..got]
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        );
        if got < want {
            let present = data.len() as u64 * 4 + (got % 4) as u64;
            return Err(length_error(header, present).into());
        }
    }
    Ok(data)
}

/// Like `read_exact`, but returns how much was read instead of failing at end of input.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Writes a v1.0 `.npy` image (v2.0 only if the header outgrows 64 KiB), byte
/// for byte what `numpy.save` writes for the same C-order float32 array.
///
/// # Panics
/// If `data.len()` is not the product of `shape`: that is a caller bug, not a file problem.
pub(crate) fn encode<W: Write>(w: &mut W, shape: &[usize], data: &[f32]) -> io::Result<()> {
    let count = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    assert_eq!(
        count,
        Some(data.len()),
        "npy: shape {shape:?} does not match {} data values",
        data.len()
    );
    encode_with(w, shape, &|start, out| {
        out.copy_from_slice(&data[start..start + out.len()])
    })
}

/// [`encode`] with the values made chunk by chunk: `fill(start, out)` puts
/// the values at row-major positions `start..start + out.len()` in `out`.
///
/// # Panics
/// If the shape's element count overflows `usize`.
pub(crate) fn encode_with<W: Write>(
    w: &mut W,
    shape: &[usize],
    fill: &dyn Fn(usize, &mut [f32]),
) -> io::Result<()> {
    let count = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .expect("npy: the shape's element count overflows");
    w.write_all(&preamble(shape))?;
    let mut values = vec![0f32; (CHUNK / 4).min(count)];
    let mut buf = Vec::with_capacity(CHUNK);
    let mut start = 0;
    while start < count {
        let n = (count - start).min(values.len());
        fill(start, &mut values[..n]);
        buf.clear();
        buf.extend(values[..n].iter().flat_map(|v| v.to_le_bytes()));
        w.write_all(&buf)?;
        start += n;
    }
    Ok(())
}

/// Magic, version, header length and the padded header, as `numpy.lib.format._wrap_header` does.
fn preamble(shape: &[usize]) -> Vec<u8> {
    let dict = header_dict(shape);
    // The header text plus its final '\n'.
    let text_len = dict.len() + 1;
    let padded_len =
        |len_bytes| text_len + ARRAY_ALIGN - (PREAMBLE_LEN + len_bytes + text_len) % ARRAY_ALIGN;
    let (version, len_bytes) = if padded_len(2) <= usize::from(u16::MAX) {
        (1u8, 2)
    } else {
        (2u8, 4)
    };
    let header_len = padded_len(len_bytes);
    let pad = header_len - text_len;
    let mut out = Vec::with_capacity(PREAMBLE_LEN + len_bytes + header_len);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[version, 0]);
    // The header is our own dict of a shape (a few hundred bytes at most),
    // far below u32::MAX.
    out.extend_from_slice(&(header_len as u32).to_le_bytes()[..len_bytes]);
    out.extend_from_slice(dict.as_bytes());
    out.resize(out.len() + pad, b' ');
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(shape: &[usize], data: &[f32]) -> Vec<u8> {
        let mut out = Vec::new();
        encode(&mut out, shape, data).unwrap();
        out
    }

    #[test]
    fn data_starts_on_a_64_byte_boundary() {
        for ndim in [0, 1, 4, 9, 40, 200] {
            let shape = vec![1; ndim];
            let bytes = image(&shape, &[1.0]);
            assert_eq!((bytes.len() - 4) % ARRAY_ALIGN, 0, "ndim {ndim}");
            assert_eq!(bytes[bytes.len() - 5], b'\n');
        }
    }

    #[test]
    fn huge_headers_switch_to_version_2() {
        let shape = vec![1; 30_000];
        let bytes = image(&shape, &[3.0]);
        assert_eq!(&bytes[6..8], &[2, 0]);
        assert_eq!((bytes.len() - 4) % ARRAY_ALIGN, 0);
        let array = decode(&bytes[..], Some(bytes.len() as u64)).unwrap();
        assert_eq!((array.shape, array.data), (shape, vec![3.0]));
    }

    #[test]
    fn streaming_and_sized_decoding_agree() {
        let data: Vec<f32> = (0..50_000).map(|i| i as f32 * 0.5).collect();
        let bytes = image(&[100, 500], &data);
        let sized = decode(&bytes[..], Some(bytes.len() as u64)).unwrap();
        let streamed = decode(&bytes[..], None).unwrap();
        assert_eq!(sized.data, data);
        assert_eq!(streamed, sized);
        for cut in [bytes.len() - 1, bytes.len() - 4, 200] {
            let sized = decode(&bytes[..cut], Some(cut as u64)).unwrap_err();
            let streamed = decode(&bytes[..cut], None).unwrap_err();
            assert_eq!(
                format!("{sized:?}"),
                format!("{streamed:?}"),
                "cut at {cut}"
            );
        }
    }

    #[test]
    #[should_panic(expected = "does not match 5 data values")]
    fn encode_rejects_mismatched_shape() {
        image(&[2, 3], &[0.0; 5]);
    }
}
