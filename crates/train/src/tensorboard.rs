//! TensorBoard event files: `<run>/tensorboard/events.out.tfevents.<seconds>.bapo.<pid>`, one
//! per process that trains the run (a resumed run starts a new one; TensorBoard reads them
//! all and drops the steps a killed run logged past its checkpoint, as it does for TRL).
//!
//! The format is TensorFlow's record file of `Event` protocol buffers. Each record is:
//! - its length (u64, little-endian);
//! - the masked CRC-32C of the length;
//! - the bytes;
//! - their masked CRC-32C.
//!
//! The first event holds the file version. Every later one holds a `Summary` of
//! `simple_value` scalars at a step.
//!
//! Why not a TensorBoard crate: `tboard` needs `protoc` at build time (prost-build) and pins
//! prost 0.12, and `tensorboard-rs` is no longer kept (its repository says so) and pulls in
//! image 0.23 and protobuf 2. The four messages used here are declared with `prost`'s derive
//! (the maintained protobuf crate, already in the build through Burn), and the CRC is the
//! `crc32c` crate's. What is left by hand is the framing above, a few lines. The CI check
//! reads the files back with the Python `tensorboard` package's own reader (`cargo xtask
//! check-exports`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::TrainError;

/// `tensorflow.Event`, with the fields used here.
#[derive(Clone, PartialEq, prost::Message)]
struct Event {
    #[prost(double, tag = "1")]
    wall_time: f64,
    #[prost(int64, tag = "2")]
    step: i64,
    #[prost(oneof = "What", tags = "3, 5")]
    what: Option<What>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum What {
    #[prost(string, tag = "3")]
    FileVersion(String),
    #[prost(message, tag = "5")]
    Summary(Summary),
}

/// `tensorflow.Summary`.
#[derive(Clone, PartialEq, prost::Message)]
struct Summary {
    #[prost(message, repeated, tag = "1")]
    value: Vec<SummaryValue>,
}

/// `tensorflow.Summary.Value` with a scalar. `simple_value` belongs to a oneof upstream: it is
/// optional here so that 0.0 is written (proto3 leaves out a plain field's default value, and
/// the reader would then see no scalar).
#[derive(Clone, PartialEq, prost::Message)]
struct SummaryValue {
    #[prost(string, tag = "1")]
    tag: String,
    #[prost(float, optional, tag = "2")]
    simple_value: Option<f32>,
}

/// TensorFlow's masked CRC-32C of a record's length and of its bytes.
fn masked_crc(bytes: &[u8]) -> u32 {
    let crc = crc32c::crc32c(bytes);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// One event file, appended to and flushed after every event.
pub struct EventWriter {
    path: PathBuf,
    file: std::fs::File,
}

impl EventWriter {
    /// Starts a new event file in `dir` (created if needed).
    pub fn create(dir: &Path) -> Result<Self, TrainError> {
        std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
        let now = wall_time();
        let path = dir.join(format!(
            "events.out.tfevents.{}.bapo.{}",
            now as u64,
            std::process::id()
        ));
        let file = std::fs::File::create(&path).map_err(|e| TrainError::io(&path, e))?;
        let mut writer = EventWriter { path, file };
        writer.write(&Event {
            wall_time: now,
            step: 0,
            what: Some(What::FileVersion("brain.Event:2".into())),
        })?;
        Ok(writer)
    }

    /// Every finite value of `values` as a scalar at `step`, tagged `<prefix>/<name>` (TRL's
    /// tags: `train/loss`, `eval/…`).
    pub fn scalars(
        &mut self,
        prefix: &str,
        step: usize,
        values: &BTreeMap<String, f64>,
    ) -> Result<(), TrainError> {
        let value = values
            .iter()
            .filter(|(_, v)| v.is_finite())
            .map(|(name, v)| SummaryValue {
                tag: format!("{prefix}/{name}"),
                simple_value: Some(*v as f32),
            })
            .collect();
        self.write(&Event {
            wall_time: wall_time(),
            step: step as i64,
            what: Some(What::Summary(Summary { value })),
        })
    }

    fn write(&mut self, event: &Event) -> Result<(), TrainError> {
        let data = prost::Message::encode_to_vec(event);
        let length = (data.len() as u64).to_le_bytes();
        let mut record = Vec::with_capacity(data.len() + 16);
        record.extend(length);
        record.extend(masked_crc(&length).to_le_bytes());
        record.extend(&data);
        record.extend(masked_crc(&data).to_le_bytes());
        self.file
            .write_all(&record)
            .and_then(|()| self.file.flush())
            .map_err(|e| TrainError::io(&self.path, e))
    }
}

/// Seconds since the Unix epoch.
fn wall_time() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    /// CRC-32C (Castagnoli), not the zlib CRC-32: RFC 3720's check value of "123456789". The
    /// masking and the framing are checked by TensorBoard's own reader in CI.
    #[test]
    fn the_crc_is_crc32c() {
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
    }
}
