//! `samples.jsonl`: one [`SampleRecord`] per line, appended durably while a run goes on and
//! rewritten as a whole (canonical order) at its end; read back with a torn last line dropped.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use anyhow::{Context, Result};

use crate::record::SampleRecord;

/// Append-only JSONL writer; `sync` flushes and fsyncs (called after each cell).
pub struct JsonlAppender {
    file: File,
    path: std::path::PathBuf,
}

impl JsonlAppender {
    pub fn open(path: &Path) -> Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {} for writing", path.display()))?;
        Ok(JsonlAppender {
            file,
            path: path.to_path_buf(),
        })
    }

    pub fn append(&mut self, rec: &SampleRecord) -> Result<()> {
        let mut line = serde_json::to_vec(rec)?;
        line.push(b'\n');
        // one write call per record: a crash leaves at most one torn last line
        self.file
            .write_all(&line)
            .with_context(|| format!("cannot append to {}", self.path.display()))?;
        self.file.flush()?;
        Ok(())
    }

    pub fn sync(&mut self) -> Result<()> {
        self.file
            .sync_data()
            .with_context(|| format!("cannot sync {}", self.path.display()))
    }
}

/// Read sample records; a torn (unparseable, unterminated) last line is dropped and reported.
pub struct ReadRecords {
    pub records: Vec<SampleRecord>,
    pub dropped_torn_line: bool,
}

pub fn read_samples(path: &Path) -> Result<ReadRecords> {
    let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut records = Vec::new();
    let mut lines: Vec<(String, bool)> = Vec::new();
    let mut reader = BufReader::new(f);
    loop {
        let mut buf = String::new();
        let n = reader
            .read_line(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        let terminated = buf.ends_with('\n');
        lines.push((buf, terminated));
    }
    let mut dropped = false;
    let count = lines.len();
    for (i, (line, terminated)) in lines.into_iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<SampleRecord>(line.trim_end()) {
            Ok(r) if terminated || i + 1 < count => records.push(r),
            Ok(_) | Err(_) if i + 1 == count => dropped = true,
            Err(e) => anyhow::bail!(
                "{}:{}: corrupt sample record ({e}); move the file aside or use --fresh",
                path.display(),
                i + 1
            ),
            Ok(_) => unreachable!(),
        }
    }
    Ok(ReadRecords {
        records,
        dropped_torn_line: dropped,
    })
}

/// Serialise records as JSONL bytes.
pub fn jsonl_bytes(records: &[SampleRecord]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for r in records {
        serde_json::to_writer(&mut out, r)?;
        out.push(b'\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torn_last_line_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.jsonl");
        let rec = crate::record::SampleRecord {
            model: "m".into(),
            prompt_id: "p".into(),
            strategy: "greedy".into(),
            kind: "greedy".into(),
            params: serde_json::json!({}),
            sample_index: 0,
            seed: 1,
            status: "ok".into(),
            error: None,
            prompt: "x".into(),
            chat_prompt: None,
            text: "y".into(),
            prompt_tokens: 1,
            token_ids: vec![1],
            text_ends: Vec::new(),
            stop_reason: "eos".into(),
            trace: Default::default(),
            timing: Default::default(),
            reference: None,
        };
        let mut bytes = jsonl_bytes(&[rec.clone(), rec.clone()]).unwrap();
        bytes.extend_from_slice(b"{\"model\": \"m\", \"prom");
        std::fs::write(&p, &bytes).unwrap();
        let r = read_samples(&p).unwrap();
        assert_eq!(r.records.len(), 2);
        assert!(r.dropped_torn_line);
        // a corrupt line in the middle is an error, not silently skipped
        let mut bad = b"garbage\n".to_vec();
        bad.extend(jsonl_bytes(&[rec]).unwrap());
        std::fs::write(&p, &bad).unwrap();
        assert!(read_samples(&p).is_err());
    }
}
