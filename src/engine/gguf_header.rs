//! A GGUF header reader that can pass over metadata it does not need.
//!
//! candle's `gguf_file::Content::read` materialises every metadata value. For Gemma 3 that is
//! 262,144 token strings, scores and types under `tokenizer.ggml.*` (about 80 ms of a load),
//! which the weights never read: declab's tokenizer for Gemma comes from its tokenizer.json, and
//! a tokenizer built from the GGUF reads the full header itself. [`read`] follows candle 0.11.1's
//! reader step by step (the same format versions, value types, limits and checks against the
//! file's size, the same `Content`), and reads the values of the keys `skip` names only as far
//! as needed to step over them. Tests compare it with candle's reader on the real files and the
//! tiny model.

use std::collections::HashMap;
use std::io::{BufRead, Read, Seek};

use anyhow::{bail, ensure, Result};
use candle_core::quantized::gguf_file::{Content, TensorInfo, Value, VersionedMagic};
use candle_core::quantized::GgmlDType;

// candle's (and llama.cpp's) caps
const MAX_STRING_LENGTH: u64 = 1 << 30;
const MAX_ARRAY_ELEMENTS: u64 = 1 << 30;
const MAX_TENSOR_DIMS: u32 = 4;
const MAX_VALUE_DEPTH: usize = 64;
const DEFAULT_ALIGNMENT: u64 = 32;

/// The metadata the weights never read: the tokenizer's vocabulary arrays.
pub fn tokenizer_arrays(key: &str) -> bool {
    matches!(
        key,
        "tokenizer.ggml.tokens"
            | "tokenizer.ggml.scores"
            | "tokenizer.ggml.token_type"
            | "tokenizer.ggml.merges"
    )
}

struct Header<'a, R> {
    r: &'a mut R,
    v1: bool,
    pos: u64,
    size: u64,
}

impl<R: BufRead + Seek> Header<'_, R> {
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut b = [0u8; N];
        self.r.read_exact(&mut b)?;
        self.pos += N as u64;
        Ok(b)
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }
    /// A length or count: 32 bits in version 1, 64 after.
    fn len(&mut self) -> Result<u64> {
        if self.v1 {
            Ok(self.u32()? as u64)
        } else {
            self.u64()
        }
    }
    fn remaining(&self) -> u64 {
        self.size.saturating_sub(self.pos)
    }
    fn string_len(&mut self) -> Result<u64> {
        let len = self.len()?;
        ensure!(
            len <= MAX_STRING_LENGTH,
            "gguf: string length {len} exceeds max {MAX_STRING_LENGTH}"
        );
        let remaining = self.remaining();
        ensure!(
            len <= remaining,
            "gguf: string length {len} exceeds remaining file bytes {remaining}"
        );
        Ok(len)
    }
    fn string(&mut self) -> Result<String> {
        let len = self.string_len()?;
        let mut v = vec![0u8; len as usize];
        self.r.read_exact(&mut v)?;
        self.pos += len;
        // as candle: trailing NULs dropped, invalid UTF-8 replaced
        while v.last() == Some(&0) {
            v.pop();
        }
        Ok(String::from_utf8_lossy(&v).into_owned())
    }
    /// Steps over `n` bytes through the buffer (no system call per step).
    fn skip(&mut self, n: u64) -> Result<()> {
        let got = std::io::copy(&mut self.r.by_ref().take(n), &mut std::io::sink())?;
        ensure!(got == n, "gguf: file ends inside the header");
        self.pos += n;
        Ok(())
    }
    fn value_type(&mut self) -> Result<u32> {
        let t = self.u32()?;
        ensure!(t <= 12, "unknown value type {t}");
        Ok(t)
    }
    /// Fewest bytes a value of type `t` takes on disk (candle's `min_disk_size`).
    fn min_size(&self, t: u32) -> u64 {
        let prefix = if self.v1 { 4 } else { 8 };
        match t {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            10..=12 => 8,
            8 => prefix,
            _ => 4 + prefix, // an array: its type and its length
        }
    }
    fn array_head(&mut self) -> Result<(u32, u64)> {
        let t = self.value_type()?;
        let len = self.len()?;
        ensure!(
            len <= MAX_ARRAY_ELEMENTS,
            "gguf: array length {len} exceeds max {MAX_ARRAY_ELEMENTS}"
        );
        let needed = len.saturating_mul(self.min_size(t));
        let remaining = self.remaining();
        ensure!(
            needed <= remaining,
            "gguf: array of {len} elements needs at least {needed} bytes, only {remaining} remaining"
        );
        Ok((t, len))
    }
    fn value(&mut self, t: u32, depth: usize) -> Result<Value> {
        ensure!(
            depth <= MAX_VALUE_DEPTH,
            "gguf: value nesting depth exceeds max {MAX_VALUE_DEPTH}"
        );
        Ok(match t {
            0 => Value::U8(u8::from_le_bytes(self.bytes()?)),
            1 => Value::I8(i8::from_le_bytes(self.bytes()?)),
            2 => Value::U16(u16::from_le_bytes(self.bytes()?)),
            3 => Value::I16(i16::from_le_bytes(self.bytes()?)),
            4 => Value::U32(self.u32()?),
            5 => Value::I32(i32::from_le_bytes(self.bytes()?)),
            6 => Value::F32(f32::from_le_bytes(self.bytes()?)),
            7 => match self.bytes::<1>()?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => bail!("unexpected bool value {b}"),
            },
            8 => Value::String(self.string()?),
            9 => {
                let (t, len) = self.array_head()?;
                let mut vs = Vec::new();
                for _ in 0..len {
                    vs.push(self.value(t, depth + 1)?);
                }
                Value::Array(vs)
            }
            10 => Value::U64(self.u64()?),
            11 => Value::I64(i64::from_le_bytes(self.bytes()?)),
            _ => Value::F64(f64::from_le_bytes(self.bytes()?)),
        })
    }
    /// Steps over a value of type `t`, with the same checks as reading it.
    fn skip_value(&mut self, t: u32, depth: usize) -> Result<()> {
        ensure!(
            depth <= MAX_VALUE_DEPTH,
            "gguf: value nesting depth exceeds max {MAX_VALUE_DEPTH}"
        );
        match t {
            7 => {
                let b = self.bytes::<1>()?[0];
                ensure!(b <= 1, "unexpected bool value {b}");
            }
            8 => {
                let len = self.string_len()?;
                self.skip(len)?;
            }
            9 => {
                let (t, len) = self.array_head()?;
                match t {
                    7..=9 => {
                        for _ in 0..len {
                            self.skip_value(t, depth + 1)?;
                        }
                    }
                    _ => self.skip(len * self.min_size(t))?,
                }
            }
            _ => self.skip(self.min_size(t))?,
        }
        Ok(())
    }
}

fn dtype(u: u32) -> Result<GgmlDType> {
    Ok(match u {
        0 => GgmlDType::F32,
        1 => GgmlDType::F16,
        2 => GgmlDType::Q4_0,
        3 => GgmlDType::Q4_1,
        6 => GgmlDType::Q5_0,
        7 => GgmlDType::Q5_1,
        8 => GgmlDType::Q8_0,
        9 => GgmlDType::Q8_1,
        10 => GgmlDType::Q2K,
        11 => GgmlDType::Q3K,
        12 => GgmlDType::Q4K,
        13 => GgmlDType::Q5K,
        14 => GgmlDType::Q6K,
        15 => GgmlDType::Q8K,
        30 => GgmlDType::BF16,
        _ => bail!("unknown dtype for tensor {u}"),
    })
}

/// The header of the GGUF `r` reads from its start, as candle's `Content::read` gives it, less
/// the metadata keys `skip` names (stepped over, with the same checks). `r` is left at the end
/// of the tensor infos.
pub fn read<R: BufRead + Seek>(r: &mut R, skip: impl Fn(&str) -> bool) -> Result<Content> {
    let start = r.stream_position()?;
    let size = r.seek(std::io::SeekFrom::End(0))?;
    r.seek(std::io::SeekFrom::Start(start))?;
    let mut h = Header {
        r,
        v1: false,
        pos: start,
        size,
    };
    let magic = h.u32()?;
    ensure!(
        magic == 0x46554747 || magic == 0x47475546,
        "unknown magic 0x{magic:08x}"
    );
    let magic = match h.u32()? {
        1 => VersionedMagic::GgufV1,
        2 => VersionedMagic::GgufV2,
        3 => VersionedMagic::GgufV3,
        v => bail!("gguf: unsupported magic/version Gguf/{v}"),
    };
    h.v1 = magic == VersionedMagic::GgufV1;
    let tensor_count = h.len()?;
    let kv_count = h.len()?;
    ensure!(
        tensor_count <= MAX_ARRAY_ELEMENTS && kv_count <= MAX_ARRAY_ELEMENTS,
        "gguf: {tensor_count} tensors or {kv_count} metadata entries exceed max {MAX_ARRAY_ELEMENTS}"
    );
    let prefix = if h.v1 { 4 } else { 8 };
    let needed = kv_count
        .saturating_mul(prefix + 4 + 1)
        .saturating_add(tensor_count.saturating_mul(prefix + 4 + 4 + 8));
    let remaining = h.remaining();
    ensure!(
        needed <= remaining,
        "gguf: header declares {tensor_count} tensors and {kv_count} metadata entries, needs at least {needed} bytes, only {remaining} remaining"
    );
    let mut metadata = HashMap::new();
    for _ in 0..kv_count {
        let key = h.string()?;
        let t = h.value_type()?;
        if skip(&key) {
            h.skip_value(t, 0)?;
        } else {
            let v = h.value(t, 0)?;
            metadata.insert(key, v);
        }
    }
    let mut tensor_infos = HashMap::new();
    for _ in 0..tensor_count {
        let name = h.string()?;
        let dims = h.u32()?;
        ensure!(
            dims <= MAX_TENSOR_DIMS,
            "gguf: tensor '{name}' has {dims} dimensions, max is {MAX_TENSOR_DIMS}"
        );
        let mut shape = Vec::with_capacity(dims as usize);
        for _ in 0..dims {
            shape.push(h.len()? as usize);
        }
        shape.reverse();
        let ggml_dtype = dtype(h.u32()?)?;
        let offset = h.u64()?;
        tensor_infos.insert(
            name,
            TensorInfo {
                shape: candle_core::Shape::from(shape),
                offset,
                ggml_dtype,
            },
        );
    }
    let alignment = match metadata.get("general.alignment") {
        Some(Value::U8(v)) => *v as u64,
        Some(Value::U16(v)) => *v as u64,
        Some(Value::U32(v)) => *v as u64,
        Some(Value::I8(v)) if *v >= 0 => *v as u64,
        Some(Value::I16(v)) if *v >= 0 => *v as u64,
        Some(Value::I32(v)) if *v >= 0 => *v as u64,
        _ => DEFAULT_ALIGNMENT,
    };
    ensure!(alignment > 0, "gguf: alignment 0");
    let tensor_data_offset = h.pos.div_ceil(alignment) * alignment;
    Ok(Content {
        magic,
        metadata,
        tensor_infos,
        tensor_data_offset,
    })
}

/// A header as comparable parts (candle's types have no `PartialEq`): the metadata as
/// `key = value` lines and the tensor infos as lines, each sorted, and the data offset. For
/// tests comparing this reader with candle's.
pub fn describe(c: &Content) -> (Vec<String>, Vec<String>, u64) {
    let mut md: Vec<String> = c
        .metadata
        .iter()
        .map(|(k, v)| format!("{k} = {v:?}"))
        .collect();
    md.sort();
    let mut ti: Vec<String> = c
        .tensor_infos
        .iter()
        .map(|(k, t)| format!("{k}: {:?} {:?} {}", t.ggml_dtype, t.shape, t.offset))
        .collect();
    ti.sort();
    (md, ti, c.tensor_data_offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_tiny_models_header_as_candle_does() {
        let dir = tempfile::tempdir().unwrap();
        let tiny = crate::engine::tiny::write(dir.path(), 1).unwrap();
        let gguf = &tiny.gguf;
        let (mut f, _) = crate::engine::open_gguf(gguf).unwrap();
        let ours = read(&mut f, |_| false).unwrap();
        let mut f = std::io::BufReader::new(std::fs::File::open(gguf).unwrap());
        let theirs = Content::read(&mut f).unwrap();
        assert_eq!(describe(&ours), describe(&theirs));
        // skipped keys (here every other key name by length) are missing, the rest the same
        let some = |k: &str| k.len().is_multiple_of(2);
        let (mut f, _) = crate::engine::open_gguf(gguf).unwrap();
        let skipped = read(&mut f, some).unwrap();
        let (mut md, ti, off) = describe(&theirs);
        md.retain(|l| !some(l.split(" = ").next().unwrap()));
        assert!(md.len() < theirs.metadata.len() && !md.is_empty());
        assert_eq!(describe(&skipped), (md, ti, off));
        // a file cut inside the header is an error, not a short header
        let bytes = std::fs::read(gguf).unwrap();
        let end = theirs.tensor_data_offset as usize - 32;
        for cut in (0..end).step_by(end / 97 + 1) {
            for skip in [false, true] {
                let mut c = std::io::Cursor::new(&bytes[..cut]);
                let r = read(&mut c, |k| skip && some(k));
                assert!(r.is_err(), "cut at {cut} of {end}");
            }
        }
    }
}
