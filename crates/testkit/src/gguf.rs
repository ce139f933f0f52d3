//! GGUF v3 bytes written field by field, for the reader's tests and the fuzzer's seed: the
//! header, metadata entries (key, type id, value bytes), the tensor directory (name, dims
//! innermost first, type id, offset) and the data, each tensor 32-byte aligned as llama.cpp
//! writes it.

/// A GGUF file under construction.
#[derive(Debug, Default, Clone)]
pub struct GgufWriter {
    meta: Vec<u8>,
    entries: u64,
    tensors: Vec<(String, Vec<u64>, u32, Vec<u8>)>,
}

/// A GGUF string: its length (u64) and bytes.
pub fn gguf_string(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

impl GgufWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// A metadata entry whose value is already encoded as `type_id` lays it out.
    pub fn meta(mut self, key: &str, type_id: u32, value: &[u8]) -> Self {
        gguf_string(&mut self.meta, key);
        self.meta.extend(type_id.to_le_bytes());
        self.meta.extend(value);
        self.entries += 1;
        self
    }

    /// A tensor: `dims` innermost first, `data` already in `type_id`'s layout.
    pub fn tensor(mut self, name: &str, dims: &[u64], type_id: u32, data: Vec<u8>) -> Self {
        self.tensors
            .push((name.to_string(), dims.to_vec(), type_id, data));
        self
    }

    /// The file's bytes.
    pub fn bytes(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(3u32.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend(self.entries.to_le_bytes());
        out.extend(&self.meta);
        let mut offset = 0u64;
        for (name, dims, type_id, data) in &self.tensors {
            gguf_string(&mut out, name);
            out.extend((dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend(d.to_le_bytes());
            }
            out.extend(type_id.to_le_bytes());
            out.extend(offset.to_le_bytes());
            offset += (data.len() as u64).div_ceil(32) * 32;
        }
        for (_, _, _, data) in &self.tensors {
            while !out.len().is_multiple_of(32) {
                out.push(0);
            }
            out.extend(data);
        }
        while !out.len().is_multiple_of(32) {
            out.push(0);
        }
        out
    }
}
