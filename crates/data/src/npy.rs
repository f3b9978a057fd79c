//! NumPy `.npy` arrays (format versions 1, 2 and 3; little-endian u8, i32, i64, f32, f64;
//! C order) and `.npz` archives of them, turned into a [`Dataset`] from a feature array `x`
//! and an optional label array `y`.
//!
//! The header is a Python dict literal; it is parsed with a small literal parser rather than
//! by pattern matching so that key order, quoting style and spacing from any NumPy version
//! are accepted.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use super::dataset::{Dataset, Features};
use super::error::DataError;

const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// Element storage of an `.npy` array, in the array's own type.
#[derive(Clone, Debug, PartialEq)]
pub enum NpyData {
    U8(Vec<u8>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
}

impl NpyData {
    pub fn len(&self) -> usize {
        match self {
            NpyData::U8(v) => v.len(),
            NpyData::I32(v) => v.len(),
            NpyData::I64(v) => v.len(),
            NpyData::F32(v) => v.len(),
            NpyData::F64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The NumPy dtype name, for messages.
    pub fn dtype(&self) -> &'static str {
        match self {
            NpyData::U8(_) => "uint8",
            NpyData::I32(_) => "int32",
            NpyData::I64(_) => "int64",
            NpyData::F32(_) => "float32",
            NpyData::F64(_) => "float64",
        }
    }

    fn into_f32(self) -> Vec<f32> {
        match self {
            NpyData::U8(v) => v.iter().map(|&x| f32::from(x)).collect(),
            NpyData::I32(v) => v.iter().map(|&x| x as f32).collect(),
            NpyData::I64(v) => v.iter().map(|&x| x as f32).collect(),
            NpyData::F32(v) => v,
            NpyData::F64(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }
}

/// A C-ordered array read from an `.npy` file.
#[derive(Clone, Debug, PartialEq)]
pub struct NpyArray {
    pub shape: Vec<usize>,
    pub data: NpyData,
}

/// How a 4-D u8 feature array stores its channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum ImageLayout {
    /// NCHW when axis 1 has 1, 3 or 4 entries and axis 3 does not, NHWC in the opposite
    /// case; anything else is ambiguous and rejected.
    #[default]
    Auto,
    /// N x C x H x W (PyTorch).
    Nchw,
    /// N x H x W x C (Keras, TensorFlow Datasets).
    Nhwc,
}

/// Member names of the feature and label arrays in an `.npz` archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NpzKeys {
    pub x: String,
    /// `None` loads an unlabelled dataset.
    pub y: Option<String>,
}

impl Default for NpzKeys {
    fn default() -> Self {
        NpzKeys {
            x: "x".into(),
            y: Some("y".into()),
        }
    }
}

/// Reads one `.npy` file.
pub fn read_npy(path: &Path) -> Result<NpyArray, DataError> {
    let bytes = fs::read(path).map_err(|e| DataError::io(path, e))?;
    parse_npy(&bytes, path)
}

/// Parses `.npy` bytes; `path` is only used to name the source in errors.
pub fn parse_npy(bytes: &[u8], path: &Path) -> Result<NpyArray, DataError> {
    let fmt_err =
        |what: &str, expected: &str, found: String| DataError::format(path, what, expected, found);
    if bytes.len() < 10 {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            what: "header",
            expected: 10,
            found: bytes.len() as u64,
        });
    }
    if &bytes[..6] != MAGIC {
        return Err(DataError::BadMagic {
            path: path.to_path_buf(),
            expected: "\\x93NUMPY".into(),
            found: format!("{:02x?}", &bytes[..6]),
        });
    }
    let major = bytes[6];
    let (header_len, header_start) = match major {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(DataError::Truncated {
                    path: path.to_path_buf(),
                    what: "header",
                    expected: 12,
                    found: bytes.len() as u64,
                });
            }
            let len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
            (len as usize, 12)
        }
        v => {
            return Err(fmt_err(
                "format version",
                "1.x, 2.x or 3.x",
                format!("{v}.{}", bytes[7]),
            ))
        }
    };
    let data_start = header_start + header_len;
    if bytes.len() < data_start {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            what: "header",
            expected: data_start as u64,
            found: bytes.len() as u64,
        });
    }
    // Version 1 and 2 headers are Latin-1; their keys and values are ASCII in practice, so
    // UTF-8 decoding (version 3's encoding) accepts every header NumPy writes.
    let header = std::str::from_utf8(&bytes[header_start..data_start]).map_err(|e| {
        fmt_err(
            "header encoding",
            "ASCII/UTF-8 text",
            format!("invalid byte at header offset {}", e.valid_up_to()),
        )
    })?;
    let header = parse_header(header).map_err(|e| fmt_err("header", "a dict literal", e))?;
    if header.fortran_order {
        return Err(DataError::Unsupported {
            path: path.to_path_buf(),
            what: "Fortran-order array (fortran_order: True) is not supported; save it in C \
                   order, e.g. np.save(f, np.ascontiguousarray(a))"
                .into(),
        });
    }
    let dtype = Dtype::parse(&header.descr).map_err(|what| DataError::Unsupported {
        path: path.to_path_buf(),
        what,
    })?;
    let count = header
        .shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .and_then(|c| c.checked_mul(dtype.size()))
        .ok_or_else(|| {
            fmt_err(
                "shape",
                "a size that fits in memory",
                format!("{:?}", header.shape),
            )
        })?;
    let payload = &bytes[data_start..];
    if payload.len() < count {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            what: "data",
            expected: count as u64,
            found: payload.len() as u64,
        });
    }
    if payload.len() > count {
        return Err(fmt_err(
            "data length",
            &format!("{count} bytes for shape {:?}", header.shape),
            format!("{} bytes", payload.len()),
        ));
    }
    Ok(NpyArray {
        shape: header.shape,
        data: dtype.decode(payload),
    })
}

#[derive(Clone, Copy, Debug)]
enum Dtype {
    U8,
    I32,
    I64,
    F32,
    F64,
}

impl Dtype {
    fn parse(descr: &str) -> Result<Dtype, String> {
        let supported = "supported: |u1, <i4, <i8, <f4, <f8";
        let (order, code) = match descr.chars().next() {
            Some(c @ ('<' | '>' | '|' | '=')) => (c, &descr[1..]),
            _ => ('|', descr),
        };
        let dtype = match code {
            "u1" => Dtype::U8,
            "i4" => Dtype::I32,
            "i8" => Dtype::I64,
            "f4" => Dtype::F32,
            "f8" => Dtype::F64,
            _ => return Err(format!("unsupported dtype {descr:?} ({supported})")),
        };
        let big = order == '>' || (order == '=' && cfg!(target_endian = "big"));
        if big && dtype.size() > 1 {
            return Err(format!(
                "big-endian dtype {descr:?} is not supported ({supported}); convert with \
                 a.astype(a.dtype.newbyteorder('<'))"
            ));
        }
        Ok(dtype)
    }

    fn size(self) -> usize {
        match self {
            Dtype::U8 => 1,
            Dtype::I32 | Dtype::F32 => 4,
            Dtype::I64 | Dtype::F64 => 8,
        }
    }

    fn decode(self, b: &[u8]) -> NpyData {
        fn le<const N: usize, T>(b: &[u8], f: fn([u8; N]) -> T) -> Vec<T> {
            b.chunks_exact(N)
                .map(|c| {
                    let mut a = [0u8; N];
                    a.copy_from_slice(c);
                    f(a)
                })
                .collect()
        }
        match self {
            Dtype::U8 => NpyData::U8(b.to_vec()),
            Dtype::I32 => NpyData::I32(le(b, i32::from_le_bytes)),
            Dtype::I64 => NpyData::I64(le(b, i64::from_le_bytes)),
            Dtype::F32 => NpyData::F32(le(b, f32::from_le_bytes)),
            Dtype::F64 => NpyData::F64(le(b, f64::from_le_bytes)),
        }
    }
}

struct Header {
    descr: String,
    fortran_order: bool,
    shape: Vec<usize>,
}

/// The subset of Python literals that `.npy` headers use.
#[derive(Debug, PartialEq)]
enum Lit {
    Str(String),
    Bool(bool),
    Int(u64),
    Tuple(Vec<Lit>),
    List(Vec<Lit>),
    Dict(Vec<(Lit, Lit)>),
}

fn parse_header(text: &str) -> Result<Header, String> {
    let mut p = LitParser {
        s: text.as_bytes(),
        i: 0,
    };
    let lit = p.value()?;
    p.skip_ws();
    if p.i != p.s.len() {
        return Err(format!("unexpected text at header offset {}", p.i));
    }
    let Lit::Dict(entries) = lit else {
        return Err(format!("{lit:?}"));
    };
    let get = |key: &str| {
        entries
            .iter()
            .find(|(k, _)| matches!(k, Lit::Str(s) if s == key))
            .map(|(_, v)| v)
    };
    let descr = match get("descr") {
        Some(Lit::Str(s)) => s.clone(),
        Some(Lit::List(_)) => return Err("structured dtype (descr is a list)".into()),
        other => return Err(format!("'descr' string, got {other:?}")),
    };
    let fortran_order = match get("fortran_order") {
        Some(Lit::Bool(b)) => *b,
        other => return Err(format!("'fortran_order' True/False, got {other:?}")),
    };
    let shape = match get("shape") {
        Some(Lit::Tuple(dims)) => dims
            .iter()
            .map(|d| match d {
                Lit::Int(v) => usize::try_from(*v).map_err(|_| format!("dimension {v}")),
                other => Err(format!("integer dimension, got {other:?}")),
            })
            .collect::<Result<Vec<_>, _>>()?,
        other => return Err(format!("'shape' tuple, got {other:?}")),
    };
    Ok(Header {
        descr,
        fortran_order,
        shape,
    })
}

struct LitParser<'a> {
    s: &'a [u8],
    i: usize,
}

impl LitParser<'_> {
    fn skip_ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.s.get(self.i).copied()
    }

    fn value(&mut self) -> Result<Lit, String> {
        match self.peek() {
            Some(b'{') => {
                self.i += 1;
                let mut entries = Vec::new();
                loop {
                    if self.peek() == Some(b'}') {
                        self.i += 1;
                        return Ok(Lit::Dict(entries));
                    }
                    let k = self.value()?;
                    if self.peek() != Some(b':') {
                        return Err(format!("':' at header offset {}", self.i));
                    }
                    self.i += 1;
                    let v = self.value()?;
                    entries.push((k, v));
                    self.separator(b'}')?;
                }
            }
            Some(open @ (b'(' | b'[')) => {
                self.i += 1;
                let close = if open == b'(' { b')' } else { b']' };
                let mut items = Vec::new();
                loop {
                    if self.peek() == Some(close) {
                        self.i += 1;
                        return Ok(if open == b'(' {
                            Lit::Tuple(items)
                        } else {
                            Lit::List(items)
                        });
                    }
                    items.push(self.value()?);
                    self.separator(close)?;
                }
            }
            Some(q @ (b'\'' | b'"')) => {
                self.i += 1;
                let start = self.i;
                while self.i < self.s.len() && self.s[self.i] != q {
                    self.i += 1;
                }
                if self.i >= self.s.len() {
                    return Err("closing quote".into());
                }
                let text = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
                self.i += 1;
                Ok(Lit::Str(text))
            }
            Some(c) if c.is_ascii_digit() => {
                let start = self.i;
                while self.i < self.s.len() && self.s[self.i].is_ascii_digit() {
                    self.i += 1;
                }
                let digits = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
                // Python 2 era NumPy wrote long integers with an `L` suffix.
                if self.s.get(self.i) == Some(&b'L') {
                    self.i += 1;
                }
                digits
                    .parse()
                    .map(Lit::Int)
                    .map_err(|_| format!("integer, got {digits}"))
            }
            Some(_) => {
                for (word, lit) in [("True", true), ("False", false)] {
                    if self.s[self.i..].starts_with(word.as_bytes()) {
                        self.i += word.len();
                        return Ok(Lit::Bool(lit));
                    }
                }
                Err(format!("a literal at header offset {}", self.i))
            }
            None => Err("a literal before the end of the header".into()),
        }
    }

    fn separator(&mut self, close: u8) -> Result<(), String> {
        match self.peek() {
            Some(b',') => {
                self.i += 1;
                Ok(())
            }
            Some(c) if c == close => Ok(()),
            _ => Err(format!(
                "',' or '{}' at header offset {}",
                close as char, self.i
            )),
        }
    }
}

/// A dataset from a feature array and optional label array in `.npy` files.
pub fn load_npy(
    x_path: &Path,
    y_path: Option<&Path>,
    layout: ImageLayout,
) -> Result<Dataset, DataError> {
    let x = read_npy(x_path)?;
    let y = match y_path {
        Some(p) => Some((read_npy(p)?, p.to_path_buf())),
        None => None,
    };
    dataset_from_arrays(x, x_path, y, layout)
}

/// A dataset from the `keys.x` and `keys.y` members of an `.npz` archive (stored or
/// deflate-compressed, as `np.savez` and `np.savez_compressed` write them).
pub fn load_npz(path: &Path, keys: &NpzKeys, layout: ImageLayout) -> Result<Dataset, DataError> {
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut archive = zip::ZipArchive::new(file)
        .map_err(|e| DataError::format(path, "archive", "a zip (.npz) file", e.to_string()))?;
    let x_member = npz_member(&keys.x);
    let x = read_npz_member(&mut archive, path, &x_member)?;
    let y = match &keys.y {
        Some(key) => {
            let member = npz_member(key);
            Some((
                read_npz_member(&mut archive, path, &member)?,
                path.join(member),
            ))
        }
        None => None,
    };
    dataset_from_arrays(x, &path.join(x_member), y, layout)
}

fn npz_member(key: &str) -> String {
    if key.ends_with(".npy") {
        key.to_string()
    } else {
        format!("{key}.npy")
    }
}

fn read_npz_member(
    archive: &mut zip::ZipArchive<File>,
    path: &Path,
    member: &str,
) -> Result<NpyArray, DataError> {
    let member_path = path.join(member);
    let names: Vec<String> = archive.file_names().map(String::from).collect();
    let mut entry = archive.by_name(member).map_err(|_| {
        let mut names = names;
        names.sort();
        DataError::MissingFiles {
            dir: path.to_path_buf(),
            missing: vec![member.to_string()],
            expected: format!(
                "an archive member {member}; the archive holds: {}",
                names.join(", ")
            ),
        }
    })?;
    let mut bytes = Vec::new();
    // The declared size is only a hint: it comes from the file, so it is capped.
    bytes
        .try_reserve_exact((entry.size() as usize).min(1 << 30))
        .map_err(|_| {
            DataError::format(
                &member_path,
                "size",
                "an allocatable size",
                entry.size().to_string(),
            )
        })?;
    entry
        .read_to_end(&mut bytes)
        .map_err(|e| DataError::io(&member_path, e))?;
    parse_npy(&bytes, &member_path)
}

/// Builds a dataset: 3-D u8 arrays become one-channel images, 4-D u8 arrays become images
/// (see [`ImageLayout`]), everything else becomes dense `f32` features flattened per sample
/// (so float images lose their image shape, and image augmentations do not apply to them).
pub fn dataset_from_arrays(
    x: NpyArray,
    x_path: &Path,
    y: Option<(NpyArray, PathBuf)>,
    layout: ImageLayout,
) -> Result<Dataset, DataError> {
    let Some(&n) = x.shape.first() else {
        return Err(DataError::format(
            x_path,
            "feature array shape",
            "at least one dimension (samples first)",
            "a scalar",
        ));
    };
    // Checked: with a zero first dimension the whole shape's product is 0 even when the
    // rest of it overflows.
    let Some(per_sample) = x.shape[1..]
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
    else {
        return Err(DataError::format(
            x_path,
            "feature array shape",
            "a size that fits in memory",
            format!("{:?}", x.shape),
        ));
    };
    if per_sample == 0 {
        return Err(DataError::format(
            x_path,
            "feature array shape",
            "at least one feature per sample",
            format!("{:?}", x.shape),
        ));
    }
    if n.checked_mul(per_sample) != Some(x.data.len()) {
        return Err(DataError::InvalidArgument(format!(
            "{}: array holds {} values but its shape {:?} needs {}",
            x_path.display(),
            x.data.len(),
            x.shape,
            n.saturating_mul(per_sample)
        )));
    }
    // Non-finite values, and float64 values beyond the float32 range (which would become
    // inf), make every later estimate NaN: refuse them here, with their place.
    let limit = f64::from(f32::MAX);
    let bad = match &x.data {
        NpyData::F32(v) => v
            .iter()
            .position(|v| !v.is_finite())
            .map(|i| (i, f64::from(v[i]))),
        NpyData::F64(v) => v
            .iter()
            .position(|v| !v.is_finite() || v.abs() > limit)
            .map(|i| (i, v[i])),
        _ => None,
    };
    if let Some((i, v)) = bad {
        return Err(DataError::format(
            x_path,
            format!("sample {}, feature {}", i / per_sample, i % per_sample),
            "a finite number within the float32 range (|x| <= 3.4e38)",
            v.to_string(),
        ));
    }
    let ndim = x.shape.len();
    let features = match x.data {
        NpyData::U8(data) if ndim == 3 => Features::Images {
            data,
            height: x.shape[1],
            width: x.shape[2],
            channels: 1,
        },
        NpyData::U8(data) if ndim == 4 => image_features(data, &x.shape, layout, x_path)?,
        other => Features::Dense {
            data: other.into_f32(),
            dim: per_sample,
        },
    };
    let (labels, num_classes) = match y {
        Some((y, y_path)) => {
            let labels = labels_from(&y, &y_path)?;
            if labels.len() != n {
                return Err(DataError::CountMismatch {
                    images_path: x_path.to_path_buf(),
                    images: n,
                    labels_path: y_path,
                    labels: labels.len(),
                });
            }
            let k = labels.iter().max().map(|&m| m as usize + 1);
            (labels, k)
        }
        None => (Vec::new(), None),
    };
    Dataset::new(features, labels, num_classes)
}

fn image_features(
    data: Vec<u8>,
    shape: &[usize],
    layout: ImageLayout,
    path: &Path,
) -> Result<Features, DataError> {
    let is_channels = |d: usize| matches!(d, 1 | 3 | 4);
    let nhwc =
        match layout {
            ImageLayout::Nchw => false,
            ImageLayout::Nhwc => true,
            ImageLayout::Auto => match (is_channels(shape[1]), is_channels(shape[3])) {
                (true, false) => false,
                (false, true) => true,
                _ => return Err(DataError::format(
                    path,
                    "image layout",
                    "a shape whose channel axis (1 for NCHW, 3 for NHWC) is unambiguous, or an \
                     explicit layout",
                    format!("{shape:?}"),
                )),
            },
        };
    if !nhwc {
        return Ok(Features::Images {
            data,
            channels: shape[1],
            height: shape[2],
            width: shape[3],
        });
    }
    let (h, w, c) = (shape[1], shape[2], shape[3]);
    let per = h * w * c;
    let mut out = vec![0u8; data.len()];
    for (src, dst) in data.chunks_exact(per).zip(out.chunks_exact_mut(per)) {
        for (p, px) in src.chunks_exact(c).enumerate() {
            for (ch, &v) in px.iter().enumerate() {
                dst[ch * h * w + p] = v;
            }
        }
    }
    Ok(Features::Images {
        data: out,
        channels: c,
        height: h,
        width: w,
    })
}

fn labels_from(y: &NpyArray, path: &Path) -> Result<Vec<u32>, DataError> {
    if !matches!(y.shape.as_slice(), [_] | [_, 1]) {
        return Err(DataError::format(
            path,
            "label array shape",
            "(N,) or (N, 1)",
            format!("{:?}", y.shape),
        ));
    }
    let out_of_range = |index: usize, label: i64| DataError::LabelOutOfRange {
        path: path.to_path_buf(),
        index,
        label,
        limit: u64::from(u32::MAX),
    };
    let from_int = |v: &mut dyn Iterator<Item = i64>| -> Result<Vec<u32>, DataError> {
        v.enumerate()
            .map(|(i, l)| u32::try_from(l).map_err(|_| out_of_range(i, l)))
            .collect()
    };
    let from_float = |v: &mut dyn Iterator<Item = f64>| -> Result<Vec<u32>, DataError> {
        v.enumerate()
            .map(|(i, l)| {
                if l.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&l) {
                    Ok(l as u32)
                } else {
                    Err(DataError::format(
                        path,
                        format!("label {i}"),
                        "a non-negative whole number",
                        l.to_string(),
                    ))
                }
            })
            .collect()
    };
    match &y.data {
        NpyData::U8(v) => Ok(v.iter().map(|&l| u32::from(l)).collect()),
        NpyData::I32(v) => from_int(&mut v.iter().map(|&l| i64::from(l))),
        NpyData::I64(v) => from_int(&mut v.iter().copied()),
        NpyData::F32(v) => from_float(&mut v.iter().map(|&l| f64::from(l))),
        NpyData::F64(v) => from_float(&mut v.iter().copied()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Writes an `.npy` exactly as NumPy lays it out (header padded to 64 bytes).
    fn npy_bytes(version: u8, descr: &str, fortran: bool, shape: &[usize], data: &[u8]) -> Vec<u8> {
        let shape_txt = match shape {
            [d] => format!("({d},)"),
            _ => format!(
                "({})",
                shape
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let fo = if fortran { "True" } else { "False" };
        let mut header =
            format!("{{'descr': '{descr}', 'fortran_order': {fo}, 'shape': {shape_txt}, }}");
        let prefix = if version == 1 { 10 } else { 12 };
        while (prefix + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut b = MAGIC.to_vec();
        b.extend([version, 0]);
        if version == 1 {
            b.extend((header.len() as u16).to_le_bytes());
        } else {
            b.extend((header.len() as u32).to_le_bytes());
        }
        b.extend(header.as_bytes());
        b.extend_from_slice(data);
        b
    }

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn reads_each_dtype_and_version() {
        let p = Path::new("mem.npy");
        let u8s: Vec<u8> = (0..24).collect();
        let a = parse_npy(&npy_bytes(1, "|u1", false, &[2, 3, 4], &u8s), p).unwrap();
        assert_eq!(a.shape, vec![2, 3, 4]);
        assert_eq!(a.data, NpyData::U8(u8s.clone()));

        let f: Vec<f32> = vec![1.5, -2.25, f32::MAX, 0.0, 1e-30, 7.0];
        let a = parse_npy(&npy_bytes(2, "<f4", false, &[3, 2], &f32_bytes(&f)), p).unwrap();
        assert_eq!(a.data, NpyData::F32(f));

        let d: Vec<f64> = vec![std::f64::consts::PI, -1e300];
        let bytes: Vec<u8> = d.iter().flat_map(|x| x.to_le_bytes()).collect();
        let a = parse_npy(&npy_bytes(3, "<f8", false, &[2], &bytes), p).unwrap();
        assert_eq!(a.data, NpyData::F64(d));

        let i: Vec<i64> = vec![-5, 1 << 40];
        let bytes: Vec<u8> = i.iter().flat_map(|x| x.to_le_bytes()).collect();
        let a = parse_npy(&npy_bytes(1, "<i8", false, &[2, 1], &bytes), p).unwrap();
        assert_eq!(a.data, NpyData::I64(i));

        let i: Vec<i32> = vec![3, -7];
        let bytes: Vec<u8> = i.iter().flat_map(|x| x.to_le_bytes()).collect();
        let a = parse_npy(&npy_bytes(1, "<i4", false, &[2], &bytes), p).unwrap();
        assert_eq!(a.data, NpyData::I32(i));

        // Header variants NumPy has written over the years.
        let h = parse_header("{\"shape\": (3L, 4L), \"fortran_order\": False, \"descr\": \"<f4\"}")
            .unwrap();
        assert_eq!(h.shape, vec![3, 4]);
        assert_eq!(
            parse_header("{'descr': '<f4', 'fortran_order': False, 'shape': (), }")
                .unwrap()
                .shape,
            Vec::<usize>::new()
        );
    }

    #[test]
    fn bad_inputs_name_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("feat.npy");
        let check = |bytes: Vec<u8>, want: &str| {
            fs::write(&path, bytes).unwrap();
            let err = read_npy(&path).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains("feat.npy") && msg.contains(want), "{msg}");
            err
        };
        let err = check(npy_bytes(1, "<f4", true, &[2, 2], &[0; 16]), "Fortran");
        assert!(matches!(err, DataError::Unsupported { .. }));
        let err = check(b"PK\x03\x04 not an npy at all".to_vec(), "NUMPY");
        assert!(matches!(err, DataError::BadMagic { .. }));
        let err = check(npy_bytes(1, "<f4", false, &[2, 2], &[0; 15]), "16");
        assert!(matches!(
            err,
            DataError::Truncated {
                expected: 16,
                found: 15,
                ..
            }
        ));
        check(npy_bytes(1, ">f4", false, &[1], &[0; 4]), "big-endian");
        check(npy_bytes(1, "<c16", false, &[1], &[0; 16]), "<c16");
        check(npy_bytes(1, "<f4", false, &[1], &[0; 8]), "data length");
        let mut cut = npy_bytes(1, "<f4", false, &[1], &[0; 4]);
        cut.truncate(30);
        check(cut, "header");
        let mut v9 = npy_bytes(1, "<f4", false, &[1], &[0; 4]);
        v9[6] = 9;
        check(v9, "format version");
        check(
            npy_bytes(1, "<f4", false, &[1usize << 40, 1 << 40], &[]),
            "shape",
        );
    }

    #[test]
    fn npy_pair_to_dataset() {
        let tmp = tempfile::tempdir().unwrap();
        let xp = tmp.path().join("x.npy");
        let yp = tmp.path().join("y.npy");
        // NHWC 2x2x2x3 images; pixel value encodes (sample, y, x, channel).
        let mut px = Vec::new();
        for n in 0..2u8 {
            for y in 0..2u8 {
                for x in 0..2u8 {
                    for c in 0..3u8 {
                        px.push(n * 100 + y * 20 + x * 10 + c);
                    }
                }
            }
        }
        fs::write(&xp, npy_bytes(1, "|u1", false, &[2, 2, 2, 3], &px)).unwrap();
        let labels: Vec<u8> = [4i64, 1].iter().flat_map(|x| x.to_le_bytes()).collect();
        fs::write(&yp, npy_bytes(1, "<i8", false, &[2], &labels)).unwrap();
        let ds = load_npy(&xp, Some(&yp), ImageLayout::Auto).unwrap();
        assert_eq!(ds.labels, vec![4, 1]);
        assert_eq!(ds.num_classes, Some(5));
        let Features::Images {
            data,
            channels: 3,
            height: 2,
            width: 2,
        } = &ds.features
        else {
            panic!("expected 3x2x2 images, got {:?}", ds.sample_shape())
        };
        // Sample 1, channel 2, y 1, x 0.
        assert_eq!(data[12 + 2 * 4 + 2], 100 + 20 + 2);

        // Dense f32 + labels with a count mismatch.
        let f: Vec<f32> = (0..6).map(|v| v as f32).collect();
        fs::write(&xp, npy_bytes(1, "<f4", false, &[3, 2], &f32_bytes(&f))).unwrap();
        let err = load_npy(&xp, Some(&yp), ImageLayout::Auto).unwrap_err();
        assert!(matches!(
            err,
            DataError::CountMismatch {
                images: 3,
                labels: 2,
                ..
            }
        ));
        let ds = load_npy(&xp, None, ImageLayout::Auto).unwrap();
        assert_eq!(ds.features, Features::Dense { data: f, dim: 2 });

        // Negative labels are out of range.
        let neg: Vec<u8> = [1i32, -1, 0].iter().flat_map(|x| x.to_le_bytes()).collect();
        fs::write(&yp, npy_bytes(1, "<i4", false, &[3], &neg)).unwrap();
        let err = load_npy(&xp, Some(&yp), ImageLayout::Auto).unwrap_err();
        assert!(matches!(
            err,
            DataError::LabelOutOfRange {
                index: 1,
                label: -1,
                ..
            }
        ));
        assert!(err.to_string().contains("y.npy"));
        // Float labels must be whole.
        fs::write(
            &yp,
            npy_bytes(1, "<f4", false, &[3], &f32_bytes(&[0.0, 1.5, 2.0])),
        )
        .unwrap();
        assert!(load_npy(&xp, Some(&yp), ImageLayout::Auto).is_err());
        fs::write(
            &yp,
            npy_bytes(1, "<f4", false, &[3, 1], &f32_bytes(&[0.0, 1.0, 2.0])),
        )
        .unwrap();
        assert_eq!(
            load_npy(&xp, Some(&yp), ImageLayout::Auto).unwrap().labels,
            vec![0, 1, 2]
        );

        // Ambiguous layout.
        fs::write(&xp, npy_bytes(1, "|u1", false, &[1, 3, 2, 3], &[0; 18])).unwrap();
        assert!(load_npy(&xp, None, ImageLayout::Auto).is_err());
        let ds = load_npy(&xp, None, ImageLayout::Nchw).unwrap();
        assert_eq!(ds.sample_shape().numel(), 18);
    }

    #[test]
    fn non_finite_features_are_refused_with_sample_and_feature() {
        // NaN/inf passed `load` and made every later estimate NaN; float64 beyond the float32
        // range became inf silently.
        let dir = tempfile::tempdir().unwrap();
        let x_path = dir.path().join("x.npy");
        let f64_bytes = |v: &[f64]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        for (bytes, shown) in [
            (
                npy_bytes(
                    1,
                    "<f4",
                    false,
                    &[2, 2],
                    &f32_bytes(&[1.0, 2.0, 3.0, f32::NAN]),
                ),
                "NaN",
            ),
            (
                npy_bytes(
                    1,
                    "<f4",
                    false,
                    &[2, 2],
                    &f32_bytes(&[1.0, 2.0, 3.0, f32::INFINITY]),
                ),
                "inf",
            ),
            (
                npy_bytes(1, "<f8", false, &[2, 2], &f64_bytes(&[1.0, 2.0, 3.0, 1e39])),
                "1000000000000000000000000000000000000000",
            ),
        ] {
            fs::write(&x_path, bytes).unwrap();
            let err = load_npy(&x_path, None, ImageLayout::Auto)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("x.npy") && err.contains("sample 1, feature 1") && err.contains(shown),
                "{err}"
            );
        }
    }

    #[test]
    fn a_zero_sample_array_with_an_overflowing_sample_shape_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let x_path = dir.path().join("x.npy");
        let huge = 1usize << 40;
        fs::write(&x_path, npy_bytes(1, "<f4", false, &[0, huge, huge], &[])).unwrap();
        let err = load_npy(&x_path, None, ImageLayout::Auto)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("x.npy") && err.contains("fits in memory"),
            "{err}"
        );
    }

    #[test]
    fn npz_members() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("data.npz");
        let f: Vec<f32> = (0..8).map(|v| v as f32 * 0.5).collect();
        let x = npy_bytes(1, "<f4", false, &[4, 2], &f32_bytes(&f));
        let y = npy_bytes(1, "|u1", false, &[4], &[0, 1, 1, 2]);
        {
            let mut w = zip::ZipWriter::new(File::create(&path).unwrap());
            let stored = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Stored);
            let deflated = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated);
            w.start_file("features.npy", deflated).unwrap();
            w.write_all(&x).unwrap();
            w.start_file("y.npy", stored).unwrap();
            w.write_all(&y).unwrap();
            w.finish().unwrap();
        }
        let keys = NpzKeys {
            x: "features".into(),
            y: Some("y".into()),
        };
        let ds = load_npz(&path, &keys, ImageLayout::Auto).unwrap();
        assert_eq!(ds.labels, vec![0, 1, 1, 2]);
        assert_eq!(ds.features, Features::Dense { data: f, dim: 2 });

        let err = load_npz(&path, &NpzKeys::default(), ImageLayout::Auto).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("data.npz") && msg.contains("x.npy") && msg.contains("features.npy"),
            "{msg}"
        );

        fs::write(&path, b"not a zip").unwrap();
        let err = load_npz(&path, &keys, ImageLayout::Auto).unwrap_err();
        assert!(err.to_string().contains("data.npz"));
    }
}
