//! Named f32 tensors and the checkpoint file format used for parameters and optimizer state.
//!
//! Format (all integers little-endian), chosen to be trivially readable from NumPy:
//!
//! ```text
//! magic    8 bytes  "CBNDCKPT"
//! version  u32      = 1
//! step     u64      optimizer steps taken
//! count    u32      number of tensors
//! per tensor:
//!   name_len u32, name (UTF-8)
//!   rank     u32, dims u64 x rank
//!   data     f32 x prod(dims)
//! ```
//!
//! Writes go to a temporary sibling file that is renamed into place, so a crash never leaves a
//! truncated checkpoint under the final name.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

pub const MAGIC: &[u8; 8] = b"CBNDCKPT";
pub const VERSION: u32 = 1;

/// A named f32 tensor in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl NamedTensor {
    pub fn new(name: impl Into<String>, shape: Vec<usize>, data: Vec<f32>) -> Self {
        NamedTensor {
            name: name.into(),
            shape,
            data,
        }
    }

    pub fn zeros(name: impl Into<String>, shape: Vec<usize>) -> Self {
        let n = shape.iter().product();
        NamedTensor::new(name, shape, vec![0.0; n])
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Everything needed to resume training: the step count, parameters and optimizer state.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    pub step: u64,
    pub tensors: Vec<NamedTensor>,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot {action} checkpoint `{path}`: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{path}` is not a cbound checkpoint (bad magic bytes)")]
    BadMagic { path: PathBuf },
    #[error("checkpoint `{path}` has format version {found}; this build reads version {VERSION}")]
    Version { path: PathBuf, found: u32 },
    #[error("checkpoint `{path}` is corrupt: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error("tensor `{name}` has shape {shape:?} but {len} values")]
    Inconsistent {
        name: String,
        shape: Vec<usize>,
        len: usize,
    },
}

impl Checkpoint {
    /// Serialises to bytes (see the module docs for the layout).
    pub fn to_bytes(&self) -> Result<Vec<u8>, CheckpointError> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&self.step.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u32).to_le_bytes());
        for t in &self.tensors {
            if t.numel() != t.data.len() {
                return Err(CheckpointError::Inconsistent {
                    name: t.name.clone(),
                    shape: t.shape.clone(),
                    len: t.data.len(),
                });
            }
            out.extend_from_slice(&(t.name.len() as u32).to_le_bytes());
            out.extend_from_slice(t.name.as_bytes());
            out.extend_from_slice(&(t.shape.len() as u32).to_le_bytes());
            for &d in &t.shape {
                out.extend_from_slice(&(d as u64).to_le_bytes());
            }
            out.reserve(t.data.len() * 4);
            for &x in &t.data {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
        Ok(out)
    }

    /// Parses bytes produced by [`Checkpoint::to_bytes`]; `path` is only used in messages.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Checkpoint, CheckpointError> {
        let corrupt = |detail: &str| CheckpointError::Corrupt {
            path: path.to_path_buf(),
            detail: detail.to_string(),
        };
        let mut r = Reader { bytes, pos: 0 };
        if r.take(8)
            .ok_or_else(|| corrupt("shorter than the header"))?
            != MAGIC
        {
            return Err(CheckpointError::BadMagic {
                path: path.to_path_buf(),
            });
        }
        let version = r.u32().ok_or_else(|| corrupt("truncated header"))?;
        if version != VERSION {
            return Err(CheckpointError::Version {
                path: path.to_path_buf(),
                found: version,
            });
        }
        let step = r.u64().ok_or_else(|| corrupt("truncated header"))?;
        let count = r.u32().ok_or_else(|| corrupt("truncated header"))?;
        let mut tensors = Vec::new();
        for i in 0..count {
            let what = format!("truncated tensor #{i}");
            let name_len = r.u32().ok_or_else(|| corrupt(&what))? as usize;
            let name = std::str::from_utf8(r.take(name_len).ok_or_else(|| corrupt(&what))?)
                .map_err(|_| corrupt("tensor name is not UTF-8"))?
                .to_string();
            let rank = r.u32().ok_or_else(|| corrupt(&what))? as usize;
            if rank > 16 {
                return Err(corrupt(&format!("tensor `{name}` has rank {rank}")));
            }
            let mut shape = Vec::with_capacity(rank);
            for _ in 0..rank {
                let d = r.u64().ok_or_else(|| corrupt(&what))?;
                shape.push(usize::try_from(d).map_err(|_| corrupt("dimension overflows usize"))?);
            }
            let numel = shape
                .iter()
                .try_fold(1usize, |acc, &d| acc.checked_mul(d))
                .ok_or_else(|| corrupt(&format!("tensor `{name}` is too large")))?;
            let nbytes = numel
                .checked_mul(4)
                .ok_or_else(|| corrupt("tensor too large"))?;
            let raw = r
                .take(nbytes)
                .ok_or_else(|| corrupt(&format!("data of `{name}` is truncated")))?;
            let data = raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            tensors.push(NamedTensor { name, shape, data });
        }
        if r.pos != bytes.len() {
            return Err(corrupt("trailing bytes after the last tensor"));
        }
        Ok(Checkpoint { step, tensors })
    }

    /// Writes atomically (temporary file + rename).
    pub fn save(&self, path: &Path) -> Result<(), CheckpointError> {
        let io = |action, source| CheckpointError::Io {
            action,
            path: path.to_path_buf(),
            source,
        };
        let bytes = self.to_bytes()?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut f = std::fs::File::create(&tmp).map_err(|e| io("create", e))?;
        f.write_all(&bytes).map_err(|e| io("write", e))?;
        f.sync_all().map_err(|e| io("sync", e))?;
        std::fs::rename(&tmp, path).map_err(|e| io("rename", e))?;
        Ok(())
    }

    pub fn load(path: &Path) -> Result<Checkpoint, CheckpointError> {
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(|source| CheckpointError::Io {
                action: "read",
                path: path.to_path_buf(),
                source,
            })?;
        Checkpoint::from_bytes(&bytes, path)
    }

    pub fn get(&self, name: &str) -> Option<&NamedTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Option<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Some(u64::from_le_bytes(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() -> Result<(), CheckpointError> {
        let ck = Checkpoint {
            step: 7,
            tensors: vec![
                NamedTensor::new(
                    "enc.0.weight",
                    vec![2, 3],
                    vec![1.0, -2.0, 3.5, 0.0, f32::MIN_POSITIVE, 6.0],
                ),
                NamedTensor::new("scalar", vec![], vec![4.25]),
            ],
        };
        let dir = tempfile::tempdir().map_err(|e| CheckpointError::Io {
            action: "create",
            path: PathBuf::from("tempdir"),
            source: e,
        })?;
        let path = dir.path().join("a.ckpt");
        ck.save(&path)?;
        assert_eq!(Checkpoint::load(&path)?, ck);

        let bytes = ck.to_bytes()?;
        assert!(matches!(
            Checkpoint::from_bytes(&bytes[..bytes.len() - 1], &path),
            Err(CheckpointError::Corrupt { .. })
        ));
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert!(matches!(
            Checkpoint::from_bytes(&bad, &path),
            Err(CheckpointError::BadMagic { .. })
        ));
        let mut v2 = bytes;
        v2[8] = 2;
        assert!(matches!(
            Checkpoint::from_bytes(&v2, &path),
            Err(CheckpointError::Version { found: 2, .. })
        ));
        Ok(())
    }
}
