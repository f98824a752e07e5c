//! The `.npy` header: a Python dict literal such as
//! `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }`.
//!
//! NumPy reads it with `ast.literal_eval`; we accept only the small subset that
//! `numpy.save` can produce (strings, `True`/`False`, tuples of integers) and
//! reject everything else with a message showing what was found, since a
//! header we half-understand is worse than one we refuse.

use crate::FormatError;

/// Most elements an array may have (2^31, i.e. 8 GiB of float32): far beyond
/// any real convolution tensor, small enough that a lying header cannot make
/// a reader allocate without bound.
pub const MAX_ELEMENTS: usize = 1 << 31;

/// What the header tells us about a float32 C-order array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    pub shape: Vec<usize>,
    /// Product of `shape`, checked against [`MAX_ELEMENTS`].
    pub count: usize,
}

impl Header {
    /// Number of data bytes that must follow the header.
    pub fn data_bytes(&self) -> u64 {
        self.count as u64 * 4
    }
}

/// Parses and validates the dict literal (after the magic, version and length).
pub(crate) fn parse_header(text: &[u8]) -> Result<Header, FormatError> {
    let entries = Parser::new(text).dict()?;
    let mut fields = Fields::default();
    for (key, value) in entries {
        fields.set(key, value)?;
    }
    fields.into_header()
}

/// The header text NumPy writes for a C-order float32 array, without padding.
///
/// Mirrors `numpy.lib.format._write_array_header`: keys sorted, a trailing
/// `", "` after each entry, then spare spaces so the shape can grow in place.
pub(crate) fn header_dict(shape: &[usize]) -> String {
    const GROWTH_AXIS_MAX_DIGITS: usize = 21;
    let shape_repr = shape_repr(shape);
    let mut dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_repr}, }}");
    if let Some(first) = shape.first() {
        let digits = first.to_string().len();
        dict.extend(std::iter::repeat_n(' ', GROWTH_AXIS_MAX_DIGITS - digits));
    }
    dict
}

/// Python's `repr` of a tuple of ints: `()`, `(5,)`, `(2, 3)`.
fn shape_repr(shape: &[usize]) -> String {
    match shape {
        [] => "()".to_string(),
        [n] => format!("({n},)"),
        _ => {
            let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
            format!("({})", dims.join(", "))
        }
    }
}

/// A value in the header dict.
#[derive(Debug)]
enum Value {
    Str(String),
    Bool(bool),
    Tuple(Vec<usize>),
}

impl Value {
    /// How the value looked, for error messages.
    fn describe(&self) -> String {
        match self {
            Value::Str(s) => format!("the string '{}'", clip(s)),
            Value::Bool(b) => if *b { "True" } else { "False" }.to_string(),
            Value::Tuple(t) => format!("the tuple {}", shape_repr(t)),
        }
    }
}

/// The three keys NumPy writes, each seen at most once.
#[derive(Default)]
struct Fields {
    descr: Option<String>,
    fortran_order: Option<bool>,
    shape: Option<Vec<usize>>,
}

impl Fields {
    fn set(&mut self, key: String, value: Value) -> Result<(), FormatError> {
        let fresh = match (key.as_str(), value) {
            ("descr", Value::Str(s)) => self.descr.replace(s).is_none(),
            ("fortran_order", Value::Bool(b)) => self.fortran_order.replace(b).is_none(),
            ("shape", Value::Tuple(t)) => self.shape.replace(t).is_none(),
            ("descr" | "fortran_order" | "shape", value) => return Err(wrong_type(&key, &value)),
            _ => return Err(unknown_key(&key)),
        };
        if fresh {
            Ok(())
        } else {
            Err(FormatError::new(format!(
                "malformed header: key '{key}' appears twice"
            )))
        }
    }

    /// Checks dtype, then memory order, then shape: the most fundamental first.
    fn into_header(self) -> Result<Header, FormatError> {
        let descr = self.descr.ok_or_else(|| missing("descr"))?;
        check_dtype(&descr)?;
        if self.fortran_order.ok_or_else(|| missing("fortran_order"))? {
            return Err(FormatError::new(
                "array is stored in Fortran (column-major) order, expected C order; \
                 save np.ascontiguousarray(a) instead"
                    .to_string(),
            ));
        }
        let shape = self.shape.ok_or_else(|| missing("shape"))?;
        let count = element_count(&shape)?;
        Ok(Header { shape, count })
    }
}

const KEYS: [&str; 3] = ["descr", "fortran_order", "shape"];

fn unknown_key(key: &str) -> FormatError {
    FormatError::new(format!(
        "malformed header: unknown key '{}' (expected only 'descr', 'fortran_order' and 'shape')",
        clip(key)
    ))
}

fn missing(key: &str) -> FormatError {
    FormatError::new(format!("malformed header: no '{key}' key"))
}

fn wrong_type(key: &str, value: &Value) -> FormatError {
    let expected = match key {
        "descr" => "a dtype string like '<f4'",
        "fortran_order" => "True or False",
        _ => "a tuple of integers like (1, 12, 12, 3)",
    };
    FormatError::new(format!(
        "malformed header: '{key}' should be {expected}, found {}",
        value.describe()
    ))
}

/// Product of the dimensions, refusing overflow and anything over [`MAX_ELEMENTS`].
fn element_count(shape: &[usize]) -> Result<usize, FormatError> {
    if shape.contains(&0) {
        return Ok(0);
    }
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= MAX_ELEMENTS)
        .ok_or_else(|| {
            FormatError::new(format!(
                "shape {shape:?} has too many elements (the limit is {MAX_ELEMENTS})"
            ))
        })
}

/// Accepts exactly little-endian float32; names anything else in human terms.
fn check_dtype(descr: &str) -> Result<(), FormatError> {
    if descr == "<f4" {
        return Ok(());
    }
    Err(FormatError::new(format!(
        "dtype is {} ('{}'), expected float32 ('<f4')",
        dtype_name(descr),
        clip(descr)
    )))
}

/// A human name for a NumPy dtype string, e.g. `>f4` → "big-endian float32".
fn dtype_name(descr: &str) -> String {
    let (order, rest) = match descr.as_bytes().first() {
        Some(&c @ (b'<' | b'>' | b'|' | b'=')) => (Some(c), &descr[1..]),
        _ => (None, descr),
    };
    let mut chars = rest.chars();
    let kind = chars.next();
    let size: Option<usize> = chars.as_str().parse().ok();
    let Some(base) = base_type_name(kind, size) else {
        return "an unsupported dtype".to_string();
    };
    let multibyte = size.is_some_and(|s| s > 1) && !matches!(kind, Some('S' | 'U' | 'V'));
    match order {
        Some(b'>') if multibyte => format!("big-endian {base}"),
        Some(b'=') if multibyte => format!("native-byte-order {base}"),
        Some(b'|') if multibyte => format!("{base} without a byte order"),
        _ => base,
    }
}

fn base_type_name(kind: Option<char>, size: Option<usize>) -> Option<String> {
    let name = match (kind?, size) {
        ('f', Some(2)) => "float16".into(),
        ('f', Some(4)) => "float32".into(),
        ('f', Some(8)) => "float64".into(),
        ('f', Some(12 | 16)) => "long double (float128)".into(),
        ('i', Some(n @ (1 | 2 | 4 | 8))) => format!("int{}", n * 8),
        ('u', Some(n @ (1 | 2 | 4 | 8))) => format!("uint{}", n * 8),
        ('b', Some(1)) => "bool".into(),
        ('c', Some(8)) => "complex64".into(),
        ('c', Some(16)) => "complex128".into(),
        ('O', _) => "object (pickled Python objects)".into(),
        ('U', _) => "unicode string".into(),
        ('S' | 'a', _) => "byte string".into(),
        ('V', _) => "raw void".into(),
        ('M', _) => "datetime64".into(),
        ('m', _) => "timedelta64".into(),
        _ => return None,
    };
    Some(name)
}

/// A cursor over the header bytes, with errors that quote the header.
struct Parser<'a> {
    text: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn new(text: &'a [u8]) -> Self {
        Parser { text, pos: 0 }
    }

    /// `'{' (key ':' value ',')* [key ':' value] '}'`, then only whitespace.
    fn dict(&mut self) -> Result<Vec<(String, Value)>, FormatError> {
        self.skip_ws();
        self.expect(b'{', "'{' opening the header dict")?;
        let mut entries = Vec::new();
        loop {
            self.skip_ws();
            if self.eat(b'}') {
                break;
            }
            let key = self.string("a quoted key or '}'")?;
            if !KEYS.contains(&key.as_str()) {
                return Err(unknown_key(&key));
            }
            self.skip_ws();
            self.expect(b':', "':' after the key")?;
            self.skip_ws();
            entries.push((key, self.value()?));
            self.skip_ws();
            if !self.eat(b',') {
                self.expect(b'}', "',' or '}' after the value")?;
                break;
            }
        }
        self.skip_ws();
        if self.pos < self.text.len() {
            return Err(self.unexpected("only padding after the closing '}'"));
        }
        Ok(entries)
    }

    fn value(&mut self) -> Result<Value, FormatError> {
        match self.peek() {
            Some(b'\'' | b'"') => self.string("a string").map(Value::Str),
            Some(b'(') => self.tuple().map(Value::Tuple),
            Some(c) if c.is_ascii_alphabetic() => self.boolean().map(Value::Bool),
            _ => Err(self.unexpected("a value (a string, True/False or a tuple)")),
        }
    }

    /// A quoted string without escapes: NumPy never needs them in a header.
    fn string(&mut self, what: &str) -> Result<String, FormatError> {
        let quote = match self.peek() {
            Some(q @ (b'\'' | b'"')) => q,
            _ => return Err(self.unexpected(what)),
        };
        self.pos += 1;
        let start = self.pos;
        while let Some(c) = self.peek() {
            match c {
                _ if c == quote => {
                    let s = String::from_utf8_lossy(&self.text[start..self.pos]).into_owned();
                    self.pos += 1;
                    return Ok(s);
                }
                b'\\' | b'\n' => break,
                _ => self.pos += 1,
            }
        }
        Err(self.unexpected("the closing quote of a string (escapes are not supported)"))
    }

    fn boolean(&mut self) -> Result<bool, FormatError> {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_')
        {
            self.pos += 1;
        }
        match &self.text[start..self.pos] {
            b"True" => Ok(true),
            b"False" => Ok(false),
            _ => {
                self.pos = start;
                Err(self.unexpected("True or False"))
            }
        }
    }

    /// `()`, `(5,)`, `(2, 3)`, `(2, 3,)`; `(5)` is an int in Python, not a tuple.
    fn tuple(&mut self) -> Result<Vec<usize>, FormatError> {
        self.expect(b'(', "'('")?;
        let mut dims = Vec::new();
        let mut trailing_comma = false;
        loop {
            self.skip_ws();
            if self.eat(b')') {
                break;
            }
            dims.push(self.dim()?);
            self.skip_ws();
            trailing_comma = self.eat(b',');
            if !trailing_comma {
                self.expect(b')', "',' or ')' in the shape tuple")?;
                break;
            }
        }
        if dims.len() == 1 && !trailing_comma {
            return Err(FormatError::new(format!(
                "malformed header: shape ({}) is an integer in parentheses, not a tuple \
                 (a 1-d shape is written ({},))",
                dims[0], dims[0]
            )));
        }
        Ok(dims)
    }

    /// A non-negative decimal integer; Python 2's `L` suffix is tolerated as NumPy does.
    fn dim(&mut self) -> Result<usize, FormatError> {
        if self.peek() == Some(b'-') {
            return Err(self.unexpected("a non-negative dimension"));
        }
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        let digits = &self.text[start..self.pos];
        if digits.is_empty() {
            return Err(self.unexpected("an integer dimension"));
        }
        self.eat(b'L');
        std::str::from_utf8(digits)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                FormatError::new(format!(
                    "shape dimension {} is too large",
                    String::from_utf8_lossy(digits)
                ))
            })
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        let hit = self.peek() == Some(c);
        if hit {
            self.pos += 1;
        }
        hit
    }

    fn expect(&mut self, c: u8, what: &str) -> Result<(), FormatError> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.unexpected(what))
        }
    }

    fn skip_ws(&mut self) {
        while self
            .peek()
            .is_some_and(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r' | b'\x0c'))
        {
            self.pos += 1;
        }
    }

    /// "expected X at byte N, found Y in header {…}".
    fn unexpected(&self, expected: &str) -> FormatError {
        let found = match self.peek() {
            None => "the end of the header".to_string(),
            Some(c) => format!("`{}`", escape(&[c])),
        };
        FormatError::new(format!(
            "malformed header: expected {expected} at byte {}, found {found} in header {}",
            self.pos,
            quote_header(self.text)
        ))
    }
}

/// The header text for an error message: escaped, padding trimmed, length capped.
fn quote_header(text: &[u8]) -> String {
    const MAX: usize = 160;
    let trimmed = text.trim_ascii_end();
    let shown = &trimmed[..trimmed.len().min(MAX)];
    let ellipsis = if trimmed.len() > MAX { "..." } else { "" };
    format!("\"{}{ellipsis}\"", escape(shown))
}

/// A file-provided string for a message: escaped, and cut short if long.
fn clip(s: &str) -> String {
    const MAX: usize = 60;
    match s.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", s[..cut].escape_debug()),
        None => s.escape_debug().to_string(),
    }
}

/// Bytes as readable text: printable ASCII kept, everything else as `\xNN`-style escapes.
pub(crate) fn escape(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| match b {
            b' '..=b'~' if b != b'"' && b != b'\\' => char::from(b).to_string(),
            _ => b.escape_ascii().to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Header, String> {
        parse_header(text.as_bytes()).map_err(|e| e.to_string())
    }

    fn shape(text: &str) -> Vec<usize> {
        match parse(text) {
            Ok(h) => h.shape,
            Err(e) => panic!("{text}: {e}"),
        }
    }

    #[test]
    fn accepts_numpy_output_and_python_variants() {
        let numpy = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 12, 12, 3), }    \n";
        assert_eq!(shape(numpy), vec![1, 12, 12, 3]);
        assert_eq!(
            shape(r#"{"shape":(5,),"descr":"<f4","fortran_order":False}"#),
            vec![5]
        );
        assert_eq!(
            shape("{'fortran_order': False, 'shape': (), 'descr': '<f4'}"),
            vec![]
        );
        assert_eq!(
            shape("\n{ 'descr' : '<f4' ,\n'fortran_order':False,'shape':( 2 , 3 , ) , }\n"),
            vec![2, 3]
        );
        assert_eq!(
            shape("{'descr': '<f4', 'fortran_order': False, 'shape': (3L, 4L), }"),
            vec![3, 4]
        );
    }

    #[test]
    fn counts_elements() {
        let h = parse("{'descr': '<f4', 'fortran_order': False, 'shape': (), }").unwrap();
        assert_eq!(h.count, 1, "a 0-d array holds one value");
        let h = parse("{'descr': '<f4', 'fortran_order': False, 'shape': (4, 0, 3), }").unwrap();
        assert_eq!((h.count, h.data_bytes()), (0, 0));
        let big = format!(
            "{{'descr': '<f4', 'fortran_order': False, 'shape': (0, {}, {}), }}",
            usize::MAX,
            usize::MAX
        );
        assert_eq!(
            parse(&big).unwrap().count,
            0,
            "a zero dimension wins over overflow"
        );
    }

    #[test]
    fn rejects_too_many_elements() {
        let at_cap = "{'descr': '<f4', 'fortran_order': False, 'shape': (2147483648,), }";
        assert_eq!(parse(at_cap).unwrap().count, MAX_ELEMENTS);
        let over = "{'descr': '<f4', 'fortran_order': False, 'shape': (2147483649,), }";
        assert!(parse(over).unwrap_err().contains("too many elements"));
        let overflow = format!(
            "{{'descr': '<f4', 'fortran_order': False, 'shape': ({}, 3), }}",
            usize::MAX
        );
        let err = parse(&overflow).unwrap_err();
        assert!(
            err.contains("too many elements") && err.contains(&usize::MAX.to_string()),
            "{err}"
        );
        let huge =
            "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999,), }";
        assert!(parse(huge)
            .unwrap_err()
            .contains("dimension 99999999999999999999999 is too large"));
    }

    #[test]
    fn names_wrong_dtypes() {
        for (descr, name) in [
            ("<f8", "float64"),
            ("<f2", "float16"),
            ("<i4", "int32"),
            ("<i8", "int64"),
            ("|u1", "uint8"),
            ("|b1", "bool"),
            (">f4", "big-endian float32"),
            ("=f4", "native-byte-order float32"),
            ("|f4", "float32 without a byte order"),
            ("<c8", "complex64"),
            ("|O", "object"),
            ("<M8[ns]", "datetime64"),
            ("<U3", "unicode string"),
            ("zz", "an unsupported dtype"),
        ] {
            let text = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': (2,), }}");
            let err = parse(&text).unwrap_err();
            let want = format!("dtype is {name}");
            assert!(err.contains(&want), "{descr}: {err}");
            assert!(
                err.contains(&format!("('{descr}'), expected float32 ('<f4')")),
                "{err}"
            );
        }
    }

    #[test]
    fn fortran_order_suggests_ascontiguousarray() {
        let err = parse("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }").unwrap_err();
        assert!(
            err.contains("Fortran") && err.contains("np.ascontiguousarray"),
            "{err}"
        );
    }

    #[test]
    fn rejects_malformed_headers_saying_what_was_found() {
        let cases = [
            (
                "",
                "expected '{' opening the header dict at byte 0, found the end of the header",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'x': 1}",
                "unknown key 'x'",
            ),
            ("{'descr': '<f4', 'fortran_order': False}", "no 'shape' key"),
            ("{'descr': '<f4', 'shape': (2,)}", "no 'fortran_order' key"),
            ("{'fortran_order': False, 'shape': (2,)}", "no 'descr' key"),
            (
                "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}",
                "'descr' appears twice",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (5)}",
                "shape (5) is an integer in parentheses",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}",
                "expected a non-negative dimension at byte",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': [2, 3]}",
                "expected a value (a string, True/False or a tuple) at byte 50, found `[`",
            ),
            (
                "{'descr': '<f4', 'fortran_order': 0, 'shape': (2,)}",
                "found `0`",
            ),
            (
                "{'descr': '<f4', 'fortran_order': false, 'shape': (2,)}",
                "expected True or False",
            ),
            (
                "{'descr': (2,), 'fortran_order': False, 'shape': (2,)}",
                "'descr' should be a dtype string like '<f4', found the tuple (2,)",
            ),
            (
                "{'descr': '<f4', 'fortran_order': 'no', 'shape': (2,)}",
                "'fortran_order' should be True or False, found the string 'no'",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': True}",
                "'shape' should be a tuple",
            ),
            (
                "{'descr': '<f4' 'fortran_order': False, 'shape': (2,)}",
                "expected ',' or '}' after the value",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (2,)} x",
                "expected only padding after the closing '}'",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (2,),,}",
                "expected a quoted key or '}'",
            ),
            (
                "{'descr' '<f4'}",
                "expected ':' after the key at byte 9, found `'`",
            ),
            (
                "{'descr': '<f\\x34', 'fortran_order': False, 'shape': (2,)}",
                "escapes are not supported",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (2 3)}",
                "expected ',' or ')' in the shape tuple",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (2, x)}",
                "expected an integer dimension",
            ),
        ];
        for (text, want) in cases {
            let err = parse(text).expect_err(text);
            assert!(err.contains(want), "{text:?}\n  got: {err}\n want: {want}");
        }
    }

    #[test]
    fn error_quotes_header_escaped_and_trimmed() {
        let err = parse("{'descr': '<f4', \x01}            \n").unwrap_err();
        assert!(
            err.contains("found `\\x01` in header \"{'descr': '<f4', \\x01}\""),
            "{err}"
        );
        let long = format!("{{'shape': ({}x)}}", "1, ".repeat(200));
        let err = parse(&long).unwrap_err();
        assert!(
            err.contains("expected an integer dimension at byte 611, found `x`"),
            "{err}"
        );
        assert!(err.ends_with("...\""), "{err}");
        assert!(err.len() < 400, "long headers are cut: {}", err.len());
        let err = parse(&format!("{{'{}': 1}}", "k".repeat(500))).unwrap_err();
        assert!(
            err.contains(&format!("unknown key '{}...'", "k".repeat(60))),
            "{err}"
        );
        assert!(err.len() < 200, "long keys are cut: {}", err.len());
    }

    #[test]
    fn writes_numpy_header_dicts() {
        let pad = |n| " ".repeat(n);
        assert_eq!(
            header_dict(&[]),
            "{'descr': '<f4', 'fortran_order': False, 'shape': (), }"
        );
        assert_eq!(
            header_dict(&[5]),
            format!(
                "{{'descr': '<f4', 'fortran_order': False, 'shape': (5,), }}{}",
                pad(20)
            )
        );
        assert_eq!(
            header_dict(&[12, 3]),
            format!(
                "{{'descr': '<f4', 'fortran_order': False, 'shape': (12, 3), }}{}",
                pad(19)
            )
        );
        for shape in [
            vec![],
            vec![0],
            vec![7],
            vec![1, 12, 12, 3],
            vec![0, usize::MAX],
        ] {
            let parsed = parse_header(header_dict(&shape).as_bytes()).map(|h| h.shape);
            assert_eq!(parsed.ok(), Some(shape));
        }
    }
}
