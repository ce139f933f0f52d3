//! The mutator: turns a corpus entry into a new input with one to four stacked edits.
//!
//! Without coverage instrumentation (cargo-fuzz needs nightly), the edits are chosen to reach
//! the places where parsers of these formats break: counts and lengths in binary headers
//! (GGUF, safetensors) replaced by boundary values, numbers in text formats replaced by
//! extreme ones, structure duplicated, cut or spliced from another input. Every edit is a
//! plain byte operation, so any input the mutator makes is a file a user could have written.

use rand::Rng;
use rand::rngs::StdRng;

/// Integers that sit on the boundaries parsers get wrong: zero, one, signed and unsigned
/// limits, and sizes just past the usual buffer sizes.
const INTERESTING_U64: [u64; 14] = [
    0,
    1,
    2,
    0x7f,
    0xff,
    0x7fff,
    0xffff,
    0x7fff_ffff,
    0xffff_ffff,
    0x1_0000_0000,
    0x7fff_ffff_ffff_ffff,
    0xffff_ffff_ffff_ffff,
    1 << 40,
    4096,
];

/// Number spellings for text formats (JSON, TOML, JSONL): out of range for every integer type,
/// negative where a count is expected, not finite, and not numbers at all.
const INTERESTING_NUMBERS: [&str; 16] = [
    "0",
    "-1",
    "1",
    "255",
    "4294967296",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775809",
    "1e308",
    "1e309",
    "-0.0",
    "NaN",
    "nan",
    "inf",
    "0.5",
    "\"1\"",
];

/// Fragments that change structure in text formats.
const INTERESTING_TEXT: [&str; 16] = [
    "\"", "\\", "{", "}", "[", "]", "[[", ",", ":", "=", "\n", "null", "true", "\u{feff}", "\u{0}",
    "\u{fffd}",
];

/// One mutated copy of `input`; `other` (another corpus entry of the same file) is the source
/// of splices. Text (UTF-8) inputs get mostly edits that keep them text, so that they reach
/// past the UTF-8 and syntax checks; binary inputs get mostly integer and byte edits, half of
/// them in the first 4 KiB where the headers are.
pub fn mutate(rng: &mut StdRng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    let text = std::str::from_utf8(input).is_ok();
    // One edit half of the time, two a quarter, ...: most inputs stay close to a real one.
    let mut edits = 1;
    while edits < 6 && rng.random_bool(0.5) {
        edits += 1;
    }
    for _ in 0..edits {
        if out.is_empty() {
            let n = 1 + rng.random_range(0..8);
            out.extend(random_bytes(rng, n));
        } else if text && rng.random_bool(0.8) {
            text_edit(rng, &mut out, other);
        } else {
            byte_edit(rng, &mut out, other);
        }
    }
    out
}

fn byte_edit(rng: &mut StdRng, data: &mut Vec<u8>, other: &[u8]) {
    match rng.random_range(0..10) {
        0 => flip_bit(rng, data),
        1 => set_byte(rng, data),
        2 | 3 => overwrite_integer(rng, data),
        4 => add_to_integer(rng, data),
        5 => insert_bytes(rng, data),
        6 => delete_range(rng, data),
        7 => duplicate_range(rng, data),
        8 => splice(rng, data, other),
        _ => replace_number(rng, data),
    }
}

fn text_edit(rng: &mut StdRng, data: &mut Vec<u8>, other: &[u8]) {
    match rng.random_range(0..9) {
        0 | 1 => replace_number(rng, data),
        2 => insert_text(rng, data),
        3 => duplicate_line(rng, data),
        4 => delete_line(rng, data),
        5 | 6 => replace_word(rng, data, other),
        7 => truncate(rng, data),
        _ => delete_range(rng, data),
    }
}

fn random_bytes(rng: &mut StdRng, n: usize) -> Vec<u8> {
    (0..n).map(|_| rng.random()).collect()
}

/// A position, biased towards the start, where headers (and most parser decisions) are.
fn position(rng: &mut StdRng, len: usize) -> usize {
    if rng.random_bool(0.5) {
        rng.random_range(0..len.min(4096))
    } else {
        rng.random_range(0..len)
    }
}

fn flip_bit(rng: &mut StdRng, data: &mut [u8]) {
    let at = position(rng, data.len());
    data[at] ^= 1 << rng.random_range(0..8);
}

fn set_byte(rng: &mut StdRng, data: &mut [u8]) {
    let at = position(rng, data.len());
    data[at] = *[0u8, 1, 0x7f, 0x80, 0xff, rng.random()]
        .get(rng.random_range(0..6))
        .unwrap_or(&0);
}

/// A little-endian integer of 1, 2, 4 or 8 bytes overwritten by a boundary value: how a
/// count, length, offset or type id in a binary header goes wrong.
fn overwrite_integer(rng: &mut StdRng, data: &mut [u8]) {
    let width = [1usize, 2, 4, 8][rng.random_range(0..4)];
    if data.len() < width {
        return;
    }
    let at = position(rng, data.len() - width + 1);
    let value = INTERESTING_U64[rng.random_range(0..INTERESTING_U64.len())];
    data[at..at + width].copy_from_slice(&value.to_le_bytes()[..width]);
}

fn add_to_integer(rng: &mut StdRng, data: &mut [u8]) {
    let width = [1usize, 2, 4, 8][rng.random_range(0..4)];
    if data.len() < width {
        return;
    }
    let at = position(rng, data.len() - width + 1);
    let mut bytes = [0u8; 8];
    bytes[..width].copy_from_slice(&data[at..at + width]);
    let delta = rng.random_range(1..=16u64);
    let value = if rng.random_bool(0.5) {
        u64::from_le_bytes(bytes).wrapping_add(delta)
    } else {
        u64::from_le_bytes(bytes).wrapping_sub(delta)
    };
    data[at..at + width].copy_from_slice(&value.to_le_bytes()[..width]);
}

fn insert_bytes(rng: &mut StdRng, data: &mut Vec<u8>) {
    let at = position(rng, data.len() + 1).min(data.len());
    let n = 1 + rng.random_range(0..16);
    let bytes = random_bytes(rng, n);
    data.splice(at..at, bytes);
}

fn range(rng: &mut StdRng, len: usize) -> (usize, usize) {
    let start = position(rng, len);
    let max = (len - start).min(256);
    let end = start + 1 + rng.random_range(0..max.max(1));
    (start, end.min(len))
}

fn delete_range(rng: &mut StdRng, data: &mut Vec<u8>) {
    let (start, end) = range(rng, data.len());
    data.drain(start..end);
}

fn duplicate_range(rng: &mut StdRng, data: &mut Vec<u8>) {
    let (start, end) = range(rng, data.len());
    let copy = data[start..end].to_vec();
    let at = rng.random_range(0..=data.len());
    data.splice(at..at, copy);
}

fn truncate(rng: &mut StdRng, data: &mut Vec<u8>) {
    let at = rng.random_range(0..data.len());
    data.truncate(at);
}

/// A range of another input pasted over a range of this one.
fn splice(rng: &mut StdRng, data: &mut Vec<u8>, other: &[u8]) {
    if other.is_empty() {
        return;
    }
    let (from, to) = range(rng, other.len());
    let (start, end) = range(rng, data.len());
    data.splice(start..end, other[from..to].iter().copied());
}

/// A run of ASCII digits (a number in JSON or TOML) replaced by an extreme spelling.
fn replace_number(rng: &mut StdRng, data: &mut Vec<u8>) {
    let starts: Vec<usize> = (0..data.len())
        .filter(|&i| data[i].is_ascii_digit() && (i == 0 || !data[i - 1].is_ascii_digit()))
        .collect();
    if starts.is_empty() {
        return insert_text(rng, data);
    }
    let start = starts[rng.random_range(0..starts.len())];
    let mut end = start;
    while end < data.len() && (data[end].is_ascii_digit() || b".eE+-".contains(&data[end])) {
        end += 1;
    }
    let number = INTERESTING_NUMBERS[rng.random_range(0..INTERESTING_NUMBERS.len())];
    data.splice(start..end, number.bytes());
}

fn insert_text(rng: &mut StdRng, data: &mut Vec<u8>) {
    let text = INTERESTING_TEXT[rng.random_range(0..INTERESTING_TEXT.len())];
    let at = rng.random_range(0..=data.len());
    data.splice(at..at, text.bytes());
}

/// Runs of word characters (letters, digits, `_`): keys, values, identifiers.
fn words(data: &[u8]) -> Vec<(usize, usize)> {
    let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut out = Vec::new();
    let mut i = 0;
    while i < data.len() {
        if is_word(data[i]) {
            let start = i;
            while i < data.len() && is_word(data[i]) {
                i += 1;
            }
            out.push((start, i));
        } else {
            i += 1;
        }
    }
    out
}

/// A word replaced by a word of this input or of `other`: a key renamed to another key, a
/// value to another value.
fn replace_word(rng: &mut StdRng, data: &mut Vec<u8>, other: &[u8]) {
    let here = words(data);
    if here.is_empty() {
        return insert_text(rng, data);
    }
    let (start, end) = here[rng.random_range(0..here.len())];
    let source: &[u8] = if rng.random_bool(0.5) && !other.is_empty() {
        other
    } else {
        data
    };
    let candidates = words(source);
    if candidates.is_empty() {
        return;
    }
    let (from, to) = candidates[rng.random_range(0..candidates.len())];
    let word = source[from..to].to_vec();
    data.splice(start..end, word);
}

fn line_bounds(data: &[u8]) -> Vec<(usize, usize)> {
    let mut lines = Vec::new();
    let mut start = 0;
    for (i, &b) in data.iter().enumerate() {
        if b == b'\n' {
            lines.push((start, i + 1));
            start = i + 1;
        }
    }
    if start < data.len() {
        lines.push((start, data.len()));
    }
    lines
}

fn duplicate_line(rng: &mut StdRng, data: &mut Vec<u8>) {
    let lines = line_bounds(data);
    let (start, end) = lines[rng.random_range(0..lines.len())];
    let copy = data[start..end].to_vec();
    let (at, _) = lines[rng.random_range(0..lines.len())];
    data.splice(at..at, copy);
}

fn delete_line(rng: &mut StdRng, data: &mut Vec<u8>) {
    let lines = line_bounds(data);
    let (start, end) = lines[rng.random_range(0..lines.len())];
    data.drain(start..end);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn mutations_change_the_input_and_never_panic_on_tiny_inputs() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut changed = 0;
        for n in 0..2000 {
            let input: Vec<u8> = (0..(n % 5) as u8).collect();
            let out = mutate(&mut rng, &input, b"{\"a\": 12}\n[x]\n");
            changed += usize::from(out != input);
        }
        assert!(
            changed > 1800,
            "only {changed} of 2000 mutations changed the input"
        );
    }
}
