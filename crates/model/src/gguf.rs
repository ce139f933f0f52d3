//! A reader for GGUF v3 files (llama.cpp's model format): metadata, tensor directory, and
//! tensors dequantised to f32 from F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and the k-quants
//! Q4_K, Q5_K and Q6_K (what Q4_K_M and Q5_K_M files hold). Other tensor types are
//! rejected by name.
//!
//! Layout: `GGUF`, u32 version, u64 tensor count, u64 metadata count; typed metadata
//! key/values; tensor infos (name, u32 n_dims, u64 dims innermost-first, u32 ggml type, u64
//! offset); tensor data from the next multiple of `general.alignment` (default 32).
//! Everything little-endian.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use half::f16;

/// What can go wrong reading a GGUF file. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: not a GGUF file (magic {magic:?}, expected \"GGUF\")")]
    BadMagic { path: PathBuf, magic: [u8; 4] },
    #[error("{path}: GGUF version {version} is not supported (only 3)")]
    UnsupportedVersion { path: PathBuf, version: u32 },
    #[error("{path}: truncated or corrupt at byte {offset}: {what}")]
    Corrupt {
        path: PathBuf,
        offset: usize,
        what: String,
    },
    #[error(
        "{path}: tensor `{tensor}` has type {type_name}, which is not supported (F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K are)"
    )]
    UnsupportedType {
        path: PathBuf,
        tensor: String,
        type_name: String,
    },
    #[error("{path}: no tensor named `{tensor}`")]
    MissingTensor { path: PathBuf, tensor: String },
    #[error("{path}: metadata key `{key}` is missing")]
    MissingKey { path: PathBuf, key: String },
    #[error("{path}: metadata key `{key}` has the wrong type: expected {expected}")]
    WrongKeyType {
        path: PathBuf,
        key: String,
        expected: &'static str,
    },
}

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<MetaValue>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl MetaValue {
    /// The value as an unsigned integer, if it is any non-negative integer type.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetaValue::U8(v) => Some(v.into()),
            MetaValue::U16(v) => Some(v.into()),
            MetaValue::U32(v) => Some(v.into()),
            MetaValue::U64(v) => Some(v),
            MetaValue::I8(v) => u64::try_from(v).ok(),
            MetaValue::I16(v) => u64::try_from(v).ok(),
            MetaValue::I32(v) => u64::try_from(v).ok(),
            MetaValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float, if it is a float type.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F32(v) => Some(v.into()),
            MetaValue::F64(v) => Some(v),
            _ => None,
        }
    }

    /// The value as a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value as an array.
    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            MetaValue::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// ggml tensor types this reader knows by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    /// The k-quants: super-blocks of 256 values in sub-blocks with their own scales.
    Q4K,
    Q5K,
    Q6K,
    /// Any other type id: readable directory entry, rejected on load.
    Other(u32),
}

impl GgmlType {
    fn from_id(id: u32) -> Self {
        match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            6 => GgmlType::Q5_0,
            7 => GgmlType::Q5_1,
            8 => GgmlType::Q8_0,
            12 => GgmlType::Q4K,
            13 => GgmlType::Q5K,
            14 => GgmlType::Q6K,
            other => GgmlType::Other(other),
        }
    }

    /// The ggml id.
    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q5_0 => 6,
            GgmlType::Q5_1 => 7,
            GgmlType::Q8_0 => 8,
            GgmlType::Q4K => 12,
            GgmlType::Q5K => 13,
            GgmlType::Q6K => 14,
            GgmlType::Other(id) => id,
        }
    }

    /// llama.cpp's name for the type.
    pub fn name(self) -> String {
        let known = [
            "F32", "F16", "Q4_0", "Q4_1", "Q4_2", "Q4_3", "Q5_0", "Q5_1", "Q8_0", "Q8_1", "Q2_K",
            "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S",
            "IQ4_NL", "IQ3_S", "IQ2_S", "IQ4_XS", "I8", "I16", "I32", "I64", "F64", "IQ1_M",
            "BF16",
        ];
        let id = self.id() as usize;
        known
            .get(id)
            .map_or_else(|| format!("type {id}"), |n| (*n).to_string())
    }

    /// (values per block, bytes per block) of the supported types.
    fn block(self) -> Option<(usize, usize)> {
        match self {
            GgmlType::F32 => Some((1, 4)),
            GgmlType::F16 => Some((1, 2)),
            GgmlType::Q4_0 => Some((32, 18)),
            GgmlType::Q4_1 => Some((32, 20)),
            GgmlType::Q5_0 => Some((32, 22)),
            GgmlType::Q5_1 => Some((32, 24)),
            GgmlType::Q8_0 => Some((32, 34)),
            GgmlType::Q4K => Some((256, 144)),
            GgmlType::Q5K => Some((256, 176)),
            GgmlType::Q6K => Some((256, 210)),
            GgmlType::Other(_) => None,
        }
    }
}

/// One entry of the tensor directory.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// Dimensions as stored: innermost first (`[576, 1536]` is a row-major 1536 × 576 matrix).
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Offset of the data from the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// Row-major shape (outermost first).
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.dims.iter().product::<u64>() as usize
    }

    /// Whether the tensor has no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A GGUF file in memory.
#[derive(Debug)]
pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    pub metadata: BTreeMap<String, MetaValue>,
    pub tensors: Vec<TensorInfo>,
    bytes: Vec<u8>,
    data_start: usize,
}

/// A little-endian cursor that reports where it ran out.
struct Cursor<'a> {
    path: &'a Path,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], GgufError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        match end {
            Some(end) => {
                let slice = &self.bytes[self.pos..end];
                self.pos = end;
                Ok(slice)
            }
            None => Err(GgufError::Corrupt {
                path: self.path.to_path_buf(),
                offset: self.pos,
                what: format!(
                    "{what}: {n} bytes needed, {} left",
                    self.bytes.len() - self.pos
                ),
            }),
        }
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A u64 length that must fit in the rest of the file (`unit` bytes per element at least).
    fn len(&mut self, what: &str, unit: usize) -> Result<usize, GgufError> {
        let at = self.pos;
        let n = self.u64(what)?;
        let left = (self.bytes.len() - self.pos) as u64;
        if n.saturating_mul(unit as u64) > left {
            return Err(GgufError::Corrupt {
                path: self.path.to_path_buf(),
                offset: at,
                what: format!("{what}: length {n} exceeds the file"),
            });
        }
        Ok(n as usize)
    }

    fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let at = self.pos;
        let n = self.len(what, 1)?;
        let raw = self.take(n, what)?;
        String::from_utf8(raw.to_vec()).map_err(|_| GgufError::Corrupt {
            path: self.path.to_path_buf(),
            offset: at,
            what: format!("{what}: not UTF-8"),
        })
    }

    fn value(&mut self, type_id: u32, what: &str) -> Result<MetaValue, GgufError> {
        Ok(match type_id {
            0 => MetaValue::U8(self.array::<1>(what)?[0]),
            1 => MetaValue::I8(self.array::<1>(what)?[0] as i8),
            2 => MetaValue::U16(u16::from_le_bytes(self.array(what)?)),
            3 => MetaValue::I16(i16::from_le_bytes(self.array(what)?)),
            4 => MetaValue::U32(self.u32(what)?),
            5 => MetaValue::I32(i32::from_le_bytes(self.array(what)?)),
            6 => MetaValue::F32(f32::from_le_bytes(self.array(what)?)),
            7 => MetaValue::Bool(self.array::<1>(what)?[0] != 0),
            8 => MetaValue::String(self.string(what)?),
            9 => {
                let element_type = self.u32(what)?;
                let n = self.len(what, 1)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(element_type, what)?);
                }
                MetaValue::Array(items)
            }
            10 => MetaValue::U64(self.u64(what)?),
            11 => MetaValue::I64(i64::from_le_bytes(self.array(what)?)),
            12 => MetaValue::F64(f64::from_le_bytes(self.array(what)?)),
            other => {
                return Err(GgufError::Corrupt {
                    path: self.path.to_path_buf(),
                    offset: self.pos,
                    what: format!("{what}: unknown metadata type {other}"),
                });
            }
        })
    }

    /// Reads the magic, version, tensor count and metadata count, refusing a file that is not
    /// GGUF v3.
    fn header(&mut self) -> Result<Header, GgufError> {
        let magic = self.array::<4>("magic")?;
        if &magic != b"GGUF" {
            return Err(GgufError::BadMagic {
                path: self.path.to_path_buf(),
                magic,
            });
        }
        let version = self.u32("version")?;
        if version != 3 {
            return Err(GgufError::UnsupportedVersion {
                path: self.path.to_path_buf(),
                version,
            });
        }
        // Each tensor info and key/value takes at least 8 bytes.
        let n_tensors = self.len("tensor count", 8)?;
        let n_metadata = self.len("metadata count", 8)?;
        Ok(Header {
            version,
            n_tensors,
            n_metadata,
        })
    }

    /// Reads `n` typed metadata key/values.
    fn metadata(&mut self, n: usize) -> Result<BTreeMap<String, MetaValue>, GgufError> {
        let mut metadata = BTreeMap::new();
        for _ in 0..n {
            let key = self.string("metadata key")?;
            let type_id = self.u32(&key)?;
            let value = self.value(type_id, &key)?;
            metadata.insert(key, value);
        }
        Ok(metadata)
    }

    /// Reads the `n` entries of the tensor directory.
    fn tensor_infos(&mut self, n: usize) -> Result<Vec<TensorInfo>, GgufError> {
        let mut tensors = Vec::with_capacity(n);
        for _ in 0..n {
            tensors.push(self.tensor_info()?);
        }
        Ok(tensors)
    }

    /// Reads one tensor directory entry, refusing more than 4 dimensions or more values than
    /// can be counted.
    fn tensor_info(&mut self) -> Result<TensorInfo, GgufError> {
        let name = self.string("tensor name")?;
        let n_dims = self.u32(&name)? as usize;
        if n_dims > 4 {
            return Err(GgufError::Corrupt {
                path: self.path.to_path_buf(),
                offset: self.pos,
                what: format!("tensor `{name}` has {n_dims} dimensions (at most 4)"),
            });
        }
        let mut dims = Vec::with_capacity(n_dims);
        for _ in 0..n_dims {
            dims.push(self.u64(&name)?);
        }
        // `TensorInfo::len` multiplies them: refused here when that overflows.
        if dims
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(usize::try_from(d).ok()?))
            .is_none()
        {
            return Err(GgufError::Corrupt {
                path: self.path.to_path_buf(),
                offset: self.pos,
                what: format!(
                    "tensor `{name}` has dimensions {dims:?}, more values than can be counted"
                ),
            });
        }
        let ggml_type = GgmlType::from_id(self.u32(&name)?);
        let offset = self.u64(&name)?;
        Ok(TensorInfo {
            name,
            dims,
            ggml_type,
            offset,
        })
    }
}

/// What a GGUF file's header says: its version and how many entries follow.
struct Header {
    version: u32,
    n_tensors: usize,
    n_metadata: usize,
}

/// Where tensor data starts: `end_of_directory` rounded up to `general.alignment` (32 if
/// unset, 1 if 0).
fn data_start(metadata: &BTreeMap<String, MetaValue>, end_of_directory: usize) -> usize {
    let alignment = metadata
        .get("general.alignment")
        .and_then(MetaValue::as_u64)
        .unwrap_or(32)
        .max(1) as usize;
    end_of_directory.div_ceil(alignment) * alignment
}

impl GgufFile {
    /// Reads a whole GGUF file and parses its header, metadata and tensor directory.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, GgufError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|error| GgufError::Io {
            path: path.to_path_buf(),
            error,
        })?;
        Self::parse(path, bytes)
    }

    /// Parses GGUF bytes; `path` is used in messages.
    pub fn parse(path: &Path, bytes: Vec<u8>) -> Result<Self, GgufError> {
        let mut c = Cursor {
            path,
            bytes: &bytes,
            pos: 0,
        };
        let header = c.header()?;
        let metadata = c.metadata(header.n_metadata)?;
        let tensors = c.tensor_infos(header.n_tensors)?;
        let data_start = data_start(&metadata, c.pos);
        Ok(GgufFile {
            path: path.to_path_buf(),
            version: header.version,
            metadata,
            tensors,
            bytes,
            data_start,
        })
    }

    /// A metadata value.
    pub fn get(&self, key: &str) -> Result<&MetaValue, GgufError> {
        self.metadata.get(key).ok_or_else(|| GgufError::MissingKey {
            path: self.path.clone(),
            key: key.to_string(),
        })
    }

    /// A metadata value that must be a non-negative integer.
    pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> {
        self.get(key)?
            .as_u64()
            .ok_or_else(|| self.wrong_type(key, "an integer"))
    }

    /// A metadata value that must be a float.
    pub fn get_f64(&self, key: &str) -> Result<f64, GgufError> {
        self.get(key)?
            .as_f64()
            .ok_or_else(|| self.wrong_type(key, "a float"))
    }

    /// A metadata value that must be a string.
    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        self.get(key)?
            .as_str()
            .ok_or_else(|| self.wrong_type(key, "a string"))
    }

    fn wrong_type(&self, key: &str, expected: &'static str) -> GgufError {
        GgufError::WrongKeyType {
            path: self.path.clone(),
            key: key.to_string(),
            expected,
        }
    }

    /// The directory entry of a tensor.
    pub fn info(&self, name: &str) -> Result<&TensorInfo, GgufError> {
        self.tensors
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| GgufError::MissingTensor {
                path: self.path.clone(),
                tensor: name.to_string(),
            })
    }

    /// Whether a tensor exists.
    pub fn has_tensor(&self, name: &str) -> bool {
        self.tensors.iter().any(|t| t.name == name)
    }

    /// A tensor's values dequantised to f32, row-major, with its row-major shape.
    pub fn tensor_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), GgufError> {
        let (info, raw) = self.raw_data(name)?;
        Ok((info.shape(), dequantize(info.ggml_type, raw, info.len())))
    }

    /// A 2-D tensor kept in its own blocks (a copy of its bytes), to be dequantised a few rows
    /// at a time ([`BlockRows`]). Its rows must start on block boundaries, which llama.cpp's
    /// files guarantee for the matrices it quantizes.
    pub fn tensor_rows(&self, name: &str) -> Result<BlockRows, GgufError> {
        let (info, raw) = self.raw_data(name)?;
        let shape = info.shape();
        let (block_values, block_bytes) = info
            .ggml_type
            .block()
            .expect("raw_data refuses the types without blocks");
        let [rows, cols] = shape[..] else {
            return Err(self.corrupt_tensor(
                info,
                format!("tensor `{name}`: {} dimensions, expected 2", shape.len()),
            ));
        };
        if cols % block_values != 0 {
            return Err(self.corrupt_tensor(
                info,
                format!(
                    "tensor `{name}`: rows of {cols} values do not start on blocks of {block_values}"
                ),
            ));
        }
        Ok(BlockRows {
            ggml_type: info.ggml_type,
            rows,
            cols,
            row_bytes: cols / block_values * block_bytes,
            raw: raw.to_vec(),
        })
    }

    /// A tensor's directory entry and exactly the bytes of its data, checked to be of a
    /// supported type and inside the file.
    fn raw_data(&self, name: &str) -> Result<(&TensorInfo, &[u8]), GgufError> {
        let info = self.info(name)?;
        let unsupported = || GgufError::UnsupportedType {
            path: self.path.clone(),
            tensor: name.to_string(),
            type_name: info.ggml_type.name(),
        };
        let (block_values, block_bytes) = info.ggml_type.block().ok_or_else(unsupported)?;
        let n = info.len();
        if n % block_values != 0 {
            return Err(self.corrupt_tensor(
                info,
                format!(
                    "tensor `{name}`: {n} values is not a multiple of the block size {block_values}"
                ),
            ));
        }
        let size = (n / block_values).saturating_mul(block_bytes);
        let start = self.data_start.saturating_add(info.offset as usize);
        let raw = start
            .checked_add(size)
            .and_then(|end| self.bytes.get(start..end))
            .ok_or_else(|| {
                self.corrupt_tensor(
                    info,
                    format!("tensor `{name}`: {size} bytes of data run past the end"),
                )
            })?;
        Ok((info, raw))
    }

    /// A [`GgufError::Corrupt`] at the start of `info`'s data.
    fn corrupt_tensor(&self, info: &TensorInfo, what: String) -> GgufError {
        GgufError::Corrupt {
            path: self.path.clone(),
            offset: self.data_start.saturating_add(info.offset as usize),
            what,
        }
    }
}

/// A `[rows, cols]` matrix held in its GGUF blocks and dequantised a few rows at a time — the
/// frozen token embedding and LM head of a quantized base, which then never exist whole in
/// f32 (Qwen2.5-1.5B's two tables: 1.9 GB in f32, 0.3 GB in their Q4_K and Q6_K blocks).
/// The values are exactly [`GgufFile::tensor_f32`]'s, row for row.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockRows {
    ggml_type: GgmlType,
    rows: usize,
    cols: usize,
    /// Bytes of one row (a whole number of blocks).
    row_bytes: usize,
    raw: Vec<u8>,
}

impl BlockRows {
    /// A row-major f32 matrix `shape` held as rows of F32 "blocks" (tests, and tables made in
    /// memory). Panics when `values` does not have `shape`'s length.
    pub fn from_f32(shape: [usize; 2], values: &[f32]) -> Self {
        assert_eq!(values.len(), shape[0] * shape[1], "{shape:?}");
        BlockRows {
            ggml_type: GgmlType::F32,
            rows: shape[0],
            cols: shape[1],
            row_bytes: shape[1] * 4,
            raw: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }

    /// The same rows in another order: row `r` of the result is row `from[r]` of `self`
    /// (whole rows of blocks move, so the values are unchanged). Panics on a row index past
    /// the last row.
    pub fn with_row_order(&self, from: &[usize]) -> BlockRows {
        let mut raw = Vec::with_capacity(from.len() * self.row_bytes);
        for &row in from {
            raw.extend_from_slice(&self.raw[row * self.row_bytes..(row + 1) * self.row_bytes]);
        }
        BlockRows {
            rows: from.len(),
            raw,
            ..self.clone()
        }
    }

    /// `[rows, cols]`.
    pub fn shape(&self) -> [usize; 2] {
        [self.rows, self.cols]
    }

    /// Bytes held.
    pub fn byte_size(&self) -> usize {
        self.raw.len()
    }

    /// Rows `range`, dequantised, row-major. Panics when the range runs past the last row.
    pub fn rows_f32(&self, range: std::ops::Range<usize>) -> Vec<f32> {
        let bytes = &self.raw[range.start * self.row_bytes..range.end * self.row_bytes];
        dequantize(self.ggml_type, bytes, range.len() * self.cols)
    }

    /// The rows `ids`, in that order, dequantised, row-major. Panics on an id past the last
    /// row.
    pub fn gather_f32(&self, ids: &[usize]) -> Vec<f32> {
        let mut out = Vec::with_capacity(ids.len() * self.cols);
        for &id in ids {
            out.extend(self.rows_f32(id..id + 1));
        }
        out
    }
}

fn f16_at(bytes: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([bytes[at], bytes[at + 1]]).to_f32()
}

/// Dequantises `n` values of a supported type; `raw` has exactly the bytes they take.
fn dequantize(ty: GgmlType, raw: &[u8], n: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(n);
    match ty {
        GgmlType::F32 => out.extend(
            raw.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        ),
        GgmlType::F16 => out.extend(raw.chunks_exact(2).map(|b| f16_at(b, 0))),
        // Q4_0: f16 scale d, 16 bytes of nibbles; low nibbles are values 0..16, high 16..32;
        // value = (q − 8)·d.
        GgmlType::Q4_0 => {
            for block in raw.chunks_exact(18) {
                let d = f16_at(block, 0);
                let qs = &block[2..18];
                out.extend(qs.iter().map(|q| (f32::from(q & 15) - 8.0) * d));
                out.extend(qs.iter().map(|q| (f32::from(q >> 4) - 8.0) * d));
            }
        }
        // Q4_1: f16 scale d, f16 minimum m, 16 bytes of nibbles; value = q·d + m.
        GgmlType::Q4_1 => {
            for block in raw.chunks_exact(20) {
                let (d, m) = (f16_at(block, 0), f16_at(block, 2));
                let qs = &block[4..20];
                out.extend(qs.iter().map(|q| f32::from(q & 15) * d + m));
                out.extend(qs.iter().map(|q| f32::from(q >> 4) * d + m));
            }
        }
        // Q5_0 / Q5_1: f16 scale d (and minimum m), 32 high bits, 16 bytes of low nibbles;
        // value j takes low nibble j % 16 (low half for j < 16) and high bit j;
        // Q5_0: (q − 16)·d, Q5_1: q·d + m.
        GgmlType::Q5_0 => {
            for block in raw.chunks_exact(22) {
                let d = f16_at(block, 0);
                out.extend(five_bit_values(&block[2..22]).map(|q| (q - 16.0) * d));
            }
        }
        GgmlType::Q5_1 => {
            for block in raw.chunks_exact(24) {
                let (d, m) = (f16_at(block, 0), f16_at(block, 2));
                out.extend(five_bit_values(&block[4..24]).map(|q| q * d + m));
            }
        }
        // Q8_0: f16 scale d, 32 signed bytes; value = q·d.
        GgmlType::Q8_0 => {
            for block in raw.chunks_exact(34) {
                let d = f16_at(block, 0);
                out.extend(block[2..34].iter().map(|&q| f32::from(q as i8) * d));
            }
        }
        GgmlType::Q4K => raw
            .chunks_exact(144)
            .for_each(|b| dequantize_q4_k(b, &mut out)),
        GgmlType::Q5K => raw
            .chunks_exact(176)
            .for_each(|b| dequantize_q5_k(b, &mut out)),
        GgmlType::Q6K => raw
            .chunks_exact(210)
            .for_each(|b| dequantize_q6_k(b, &mut out)),
        GgmlType::Other(_) => {}
    }
    out
}

/// The 32 five-bit values of a Q5_0/Q5_1 block from its 4 bytes of high bits (a little-endian
/// u32, bit j for value j) and 16 bytes of nibbles (byte j: value j low, value j + 16 high).
fn five_bit_values(bits: &[u8]) -> impl Iterator<Item = f32> + '_ {
    let high = u32::from_le_bytes([bits[0], bits[1], bits[2], bits[3]]);
    let nibbles = &bits[4..20];
    (0..32).map(move |j| {
        let low = if j < 16 {
            nibbles[j] & 15
        } else {
            nibbles[j - 16] >> 4
        };
        let high_bit = ((high >> j) & 1) as u8;
        f32::from(low | (high_bit << 4))
    })
}

/// Scale and minimum (6 bits each) of sub-block `j` of a Q4_K/Q5_K super-block, packed in 12
/// bytes: sub-blocks 0–3 in the low 6 bits of bytes j and j + 4; 4–7 in the nibbles of bytes
/// j + 4 with their top 2 bits in the top bits of bytes j − 4 and j.
fn k_scale_min(packed: &[u8], j: usize) -> (f32, f32) {
    let (scale, min) = if j < 4 {
        (packed[j] & 63, packed[j + 4] & 63)
    } else {
        (
            (packed[j + 4] & 15) | ((packed[j - 4] >> 6) << 4),
            (packed[j + 4] >> 4) | ((packed[j] >> 6) << 4),
        )
    };
    (f32::from(scale), f32::from(min))
}

/// Q4_K: f16 super-scale d and super-minimum dmin, 12 bytes of sub-block scales and minimums,
/// 128 bytes of nibbles. Eight sub-blocks of 32; each 32 bytes of nibbles hold two of them
/// (low nibbles the first). Value = (d·scale)·q − dmin·min.
fn dequantize_q4_k(block: &[u8], out: &mut Vec<f32>) {
    let (d, dmin) = (f16_at(block, 0), f16_at(block, 2));
    let packed = &block[4..16];
    for (pair, nibbles) in block[16..144].chunks_exact(32).enumerate() {
        for (half, shift) in [(0, 0), (1, 4)] {
            let (scale, min) = k_scale_min(packed, 2 * pair + half);
            let (step, offset) = (d * scale, dmin * min);
            out.extend(
                nibbles
                    .iter()
                    .map(|q| step * f32::from((q >> shift) & 15) - offset),
            );
        }
    }
}

/// Q5_K: as Q4_K, with 32 bytes of high bits between the scales and the nibbles: sub-block
/// `s` takes bit `s` of byte `l` as the fifth bit of its value `l`.
fn dequantize_q5_k(block: &[u8], out: &mut Vec<f32>) {
    let (d, dmin) = (f16_at(block, 0), f16_at(block, 2));
    let packed = &block[4..16];
    let high = &block[16..48];
    for (pair, nibbles) in block[48..176].chunks_exact(32).enumerate() {
        for (half, shift) in [(0, 0), (1, 4)] {
            let sub = 2 * pair + half;
            let (scale, min) = k_scale_min(packed, sub);
            let (step, offset) = (d * scale, dmin * min);
            out.extend(nibbles.iter().zip(high).map(|(q, h)| {
                let fifth = ((h >> sub) & 1) << 4;
                step * f32::from(((q >> shift) & 15) | fifth) - offset
            }));
        }
    }
}

/// Q6_K: 128 bytes of low nibbles, 64 bytes of high 2-bit pairs, 16 signed sub-block scales
/// (one per 16 values) and the f16 super-scale d last. Each half of 128 values takes 64 bytes
/// of nibbles (values l and l + 64 from byte l, l + 32 and l + 96 from byte l + 32) and 32
/// bytes of high bits (bits 0–1, 2–3, 4–5, 6–7 of byte l for values l, l + 32, l + 64, l + 96).
/// Value = (d·scale)·(q − 32).
fn dequantize_q6_k(block: &[u8], out: &mut Vec<f32>) {
    let d = f16_at(block, 208);
    let scales = &block[192..208];
    for half in 0..2 {
        let low = &block[64 * half..64 * half + 64];
        let high = &block[128 + 32 * half..128 + 32 * half + 32];
        let scales = &scales[8 * half..8 * half + 8];
        for quarter in 0..4 {
            let (byte_offset, shift) = ([0, 32, 0, 32][quarter], [0, 0, 4, 4][quarter]);
            for l in 0..32 {
                let low_bits = (low[l + byte_offset] >> shift) & 15;
                let high_bits = (high[l] >> (2 * quarter)) & 3;
                let q = i32::from(low_bits | (high_bits << 4)) - 32;
                let scale = f32::from(scales[2 * quarter + l / 16] as i8);
                out.push((d * scale) * q as f32);
            }
        }
    }
}
