//! The results folder (`results/<name>/`, or a shard's `shards/K-of-N/`) as stored data: its
//! file names, its schema ([`Manifest`], sample records in `samples.jsonl`), its lock
//! ([`DirLock`]), and its I/O: durable JSONL appends, reading records back (a torn last line
//! dropped), atomic replacement (temp file, fsync, rename) of files rewritten as a whole, the
//! config hash, and the folder's preparation and resume check at the start of `declab run`.
//!
//! Data flows one way: config -> grid -> runner -> store -> analysis -> report. The runner writes
//! through the store; the command layer reads a folder through it and hands the records to
//! analysis. The store computes no statistics and renders nothing (CSV, plots and `report.md`
//! belong to `report`, which writes its files with [`write_atomic`]); it imports nothing from
//! the runner, analysis or report.

mod jsonl;
mod lock;
mod manifest;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::grid::Shard;
use crate::record::SampleRecord;

pub use jsonl::{jsonl_bytes, read_samples, JsonlAppender, ReadRecords};
pub use lock::DirLock;
pub use manifest::{config_hash, git_commit, host_cpu, host_name, now, Manifest, ModelInfo};

/// The sample records, one JSON object a line.
pub const SAMPLES_JSONL: &str = "samples.jsonl";
/// The [`Manifest`], pretty-printed JSON.
pub const MANIFEST_JSON: &str = "manifest.json";

/// Write `bytes` to `path` atomically: a temp file in the same folder, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("out")
    ));
    let res = (|| -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res.with_context(|| format!("cannot write {}", path.display()))
}

/// Replace `dir`'s `samples.jsonl` with `records` (atomically).
pub fn write_samples(dir: &Path, records: &[SampleRecord]) -> Result<()> {
    write_atomic(&dir.join(SAMPLES_JSONL), &jsonl_bytes(records)?)
}

/// Replace `dir`'s `manifest.json` (atomically).
pub fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<()> {
    write_atomic(
        &dir.join(MANIFEST_JSON),
        &serde_json::to_vec_pretty(manifest)?,
    )
}

/// The manifest of a finished results folder (for `declab report` and `declab compare`).
pub fn read_manifest(dir: &Path) -> Result<Manifest> {
    let manifest_path = dir.join(MANIFEST_JSON);
    let bytes = std::fs::read(&manifest_path).with_context(|| {
        format!(
            "cannot read {}; is {} a declab results folder (results/<name>)?",
            manifest_path.display(),
            dir.display()
        )
    })?;
    serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not a declab manifest", manifest_path.display()))
}

/// Create the output folder, first moving an existing one aside when `fresh`.
pub fn prepare_out_dir(dir: &Path, fresh: bool) -> Result<()> {
    let manifest_path = dir.join(MANIFEST_JSON);
    let samples_path = dir.join(SAMPLES_JSONL);
    if dir.exists() && fresh && (manifest_path.exists() || samples_path.exists()) {
        // never move a folder another process is writing: take its lock first
        let mut lock = DirLock::acquire(dir)?;
        let aside = PathBuf::from(format!(
            "{}.old-{}",
            dir.display(),
            chrono::Utc::now().format("%Y%m%dT%H%M%S")
        ));
        std::fs::rename(dir, &aside)
            .with_context(|| format!("cannot move {} aside", dir.display()))?;
        lock.moved_to(&aside);
        drop(lock);
        eprintln!("declab: moved the previous results to {}", aside.display());
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create results folder {}", dir.display()))?;
    Ok(())
}

/// What a resumed run must share with the run that wrote the folder's samples: the declab
/// version and commit, and per model the sha256 of its GGUF and tokenizer.
pub struct Engine<'a> {
    pub version: &'a str,
    pub commit: Option<&'a str>,
    /// (model id, GGUF sha256, tokenizer sha256) of the models that have samples in the folder.
    pub models: Vec<(String, String, String)>,
    /// This run's class of arithmetic ([`crate::engine::Numerics`]), host name and CPU.
    pub numerics: &'a str,
    pub host: &'a str,
    pub host_cpu: &'a str,
}

/// Refuse to add samples to `records` (the folder's, written under manifest `prev`) with an
/// engine that could make different ones: another declab version or commit, another class of
/// arithmetic (a host whose CPU or device computes other bits), or a model whose GGUF or
/// tokenizer bytes changed (a replaced file behind the same path).
pub fn check_same_engine(dir: &Path, prev: &Manifest, now: &Engine) -> Result<()> {
    let mut problems = Vec::new();
    if prev.declab_version != now.version {
        problems.push(format!(
            "they were written by declab {}, this is declab {}",
            prev.declab_version, now.version
        ));
    } else if let (Some(a), Some(b)) = (prev.git_commit.as_deref(), now.commit) {
        if a != b {
            problems.push(format!(
                "they were written by declab built from commit {}, this one is built from {}",
                &a[..a.len().min(12)],
                &b[..b.len().min(12)]
            ));
        }
    }
    if !prev.numerics.is_empty() && prev.numerics != now.numerics {
        problems.push(format!(
            "they were computed on {} ({}) with {} arithmetic; this host, {} ({}), computes with {} arithmetic, which can give other samples",
            prev.host,
            prev.host_cpu,
            prev.numerics,
            now.host,
            now.host_cpu,
            now.numerics
        ));
    }
    let short = |h: &str| h[..h.len().min(12)].to_string();
    for (id, gguf, tok) in &now.models {
        let Some(old) = prev.models.iter().find(|m| &m.id == id) else {
            continue;
        };
        if &old.weights_sha256 != gguf {
            problems.push(format!(
                "model {id:?}: {} has changed (sha256 {} when the samples were written, {} now)",
                old.weights,
                short(&old.weights_sha256),
                short(gguf)
            ));
        } else if &old.tokenizer_sha256 != tok {
            problems.push(format!(
                "model {id:?}: its tokenizer {} has changed (sha256 {} when the samples were written, {} now)",
                old.tokenizer,
                short(&old.tokenizer_sha256),
                short(tok)
            ));
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    bail!(
        "{} holds samples that this run could not reproduce, so it will not add to them:\n  {}\n\
         Re-run with --fresh to move the old results aside and start over, or choose another --out.",
        dir.display(),
        problems.join("\n  ")
    )
}

/// Under the lock: refuse a folder written by another configuration (`hash`, see
/// [`config_hash`]) or another shard of experiment `experiment`, and return its records, a torn
/// last line dropped from the file.
pub fn load_existing(
    dir: &Path,
    shard: Option<Shard>,
    hash: &str,
    experiment: &str,
) -> Result<Vec<SampleRecord>> {
    let manifest_path = dir.join(MANIFEST_JSON);
    let samples_path = dir.join(SAMPLES_JSONL);
    if manifest_path.exists() {
        let m: Manifest =
            serde_json::from_slice(&std::fs::read(&manifest_path)?).with_context(|| {
                format!(
                    "{} is not a declab manifest; use --fresh to start over",
                    manifest_path.display()
                )
            })?;
        if m.shard != shard {
            let show = |s: Option<Shard>| {
                s.map(|s| format!("shard {}/{}", s.index, s.count))
                    .unwrap_or_else(|| "a whole run".into())
            };
            bail!(
                "{} holds {}, not {}; use the folder of that shard or another --out",
                dir.display(),
                show(m.shard),
                show(shard)
            );
        }
        if m.config_sha256 != hash {
            bail!(
                "{} was written by a different configuration of {:?} (config hash {} != {}).\n\
                 Re-run with --fresh to move the old results aside and start over, or choose another --out.",
                dir.display(),
                experiment,
                &m.config_sha256[..12.min(m.config_sha256.len())],
                &hash[..12]
            );
        }
    }
    if samples_path.exists() {
        let read = read_samples(&samples_path)?;
        if read.dropped_torn_line {
            eprintln!(
                "declab: dropped a torn last line in {} (an interrupted write)",
                samples_path.display()
            );
            write_atomic(&samples_path, &jsonl_bytes(&read.records)?)?;
        }
        return Ok(read.records);
    }
    Ok(Vec::new())
}
