//! `declab merge results/<name>`: join the shards written by `declab run --shard K/N` into one
//! run. Refuses (naming exactly what is wrong) shards that are missing, from another config,
//! model file or declab version, or incomplete; the merged samples are the single-process
//! run's samples (seeds never depend on the shard). Writes the merged `samples.jsonl` and
//! `manifest.json` through the store; `samples.csv` and the report are the command layer's.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::grid::{GridIds, SampleKey, Shard};
use crate::record::SampleRecord;
use crate::store::{self, Manifest};

pub struct MergeSummary {
    pub shards: usize,
    pub samples: usize,
    /// The merged records, in canonical order.
    pub records: Vec<SampleRecord>,
}

pub fn merge(dir: &Path) -> Result<MergeSummary> {
    let shards_dir = dir.join("shards");
    let entries = std::fs::read_dir(&shards_dir).with_context(|| {
        format!(
            "cannot read {} (run the shards with --shard K/N first)",
            shards_dir.display()
        )
    })?;
    let mut shards: BTreeMap<usize, (Shard, std::path::PathBuf)> = BTreeMap::new();
    let mut counts = HashSet::new();
    for e in entries.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().to_string();
        if let Some(s) = Shard::from_dir_name(&name) {
            counts.insert(s.count);
            shards.insert(s.index, (s, e.path()));
        }
    }
    if shards.is_empty() {
        bail!("{} holds no K-of-N shard folders", shards_dir.display());
    }
    if counts.len() > 1 {
        bail!(
            "{} mixes shard counts {:?}; keep the folders of one `--shard K/N` split only",
            shards_dir.display(),
            counts
        );
    }
    let n = *counts.iter().next().expect("one count");
    let missing: Vec<String> = (0..n)
        .filter(|k| !shards.contains_key(k))
        .map(|k| format!("{k}-of-{n}"))
        .collect();
    if !missing.is_empty() {
        bail!(
            "missing shard folders in {}: {}",
            shards_dir.display(),
            missing.join(", ")
        );
    }

    let mut manifests: Vec<(Shard, Manifest)> = Vec::new();
    let mut all: Vec<SampleRecord> = Vec::new();
    let mut problems = Vec::new();
    let mut grid: Option<GridIds> = None;
    // a shard still being written is not read: hold each shard's lock while merging
    let mut locks = Vec::with_capacity(shards.len());
    for (s, path) in shards.values() {
        locks.push(
            store::DirLock::acquire(path)
                .with_context(|| format!("shard {} is still running", s.dir_name()))?,
        );
    }
    for (s, path) in shards.values() {
        let mpath = path.join(store::MANIFEST_JSON);
        let m: Manifest = serde_json::from_slice(
            &std::fs::read(&mpath).with_context(|| format!("cannot read {}", mpath.display()))?,
        )
        .with_context(|| format!("{} is not a declab manifest", mpath.display()))?;
        if m.shard != Some(*s) {
            problems.push(format!(
                "{}: the manifest says {:?}, the folder name says {}",
                path.display(),
                m.shard,
                s.dir_name()
            ));
        }
        let g = GridIds::from_resolved(&m.resolved_config)?;
        let records = store::read_samples(&path.join(store::SAMPLES_JSONL))?.records;
        let expected = g.expected_keys(Some(*s));
        let have: HashSet<SampleKey> = records.iter().map(|r| r.key()).collect();
        let mut lacking: Vec<&SampleKey> = expected.difference(&have).collect();
        if !lacking.is_empty() {
            lacking.sort();
            let cells: std::collections::BTreeSet<String> = lacking
                .iter()
                .map(|k| format!("{}/{}/{}", k.0, k.1, k.2))
                .collect();
            problems.push(format!(
                "shard {} is incomplete: {} samples missing in {} cells: {} (resume it with the same `declab run ... --shard {}/{}` command)",
                s.dir_name(),
                lacking.len(),
                cells.len(),
                cells.into_iter().collect::<Vec<_>>().join(", "),
                s.index,
                s.count
            ));
        }
        if let Some(extra) = have.difference(&expected).next() {
            problems.push(format!(
                "shard {} holds a sample of another shard: {:?}",
                s.dir_name(),
                extra
            ));
        }
        grid.get_or_insert(g);
        all.extend(records);
        manifests.push((*s, m));
    }
    let (s0, m0) = &manifests[0];
    for (s, m) in &manifests[1..] {
        if m.config_sha256 != m0.config_sha256 {
            problems.push(format!(
                "shard {} was run with another configuration (config hash {} vs {} in shard {})",
                s.dir_name(),
                short(&m.config_sha256),
                short(&m0.config_sha256),
                s0.dir_name()
            ));
        }
        if m.declab_version != m0.declab_version {
            problems.push(format!(
                "shard {} was run by declab {} but shard {} by {}",
                s.dir_name(),
                m.declab_version,
                s0.dir_name(),
                m0.declab_version
            ));
        }
        if let (Some(a), Some(b)) = (&m.git_commit, &m0.git_commit) {
            if a != b && m.declab_version == m0.declab_version {
                problems.push(format!(
                    "shard {} was run by declab built from commit {} but shard {} from {}",
                    s.dir_name(),
                    short(a),
                    s0.dir_name(),
                    short(b)
                ));
            }
        }
        if !m.numerics.is_empty() && !m0.numerics.is_empty() && m.numerics != m0.numerics {
            problems.push(format!(
                "shard {} was computed on {} ({}) with {} arithmetic but shard {} on {} ({}) with {}: their samples can differ",
                s.dir_name(),
                m.host,
                m.host_cpu,
                m.numerics,
                s0.dir_name(),
                m0.host,
                m0.host_cpu,
                m0.numerics
            ));
        }
        let hashes = |m: &Manifest| {
            m.models
                .iter()
                .map(|x| {
                    (
                        x.id.clone(),
                        x.weights_sha256.clone(),
                        x.tokenizer_sha256.clone(),
                    )
                })
                .collect::<Vec<_>>()
        };
        if hashes(m) != hashes(m0) {
            problems.push(format!(
                "shard {} used different model files (sha256) than shard {}",
                s.dir_name(),
                s0.dir_name()
            ));
        }
    }
    if !problems.is_empty() {
        bail!(
            "cannot merge {}:\n  {}",
            dir.display(),
            problems.join("\n  ")
        );
    }

    let grid = grid.expect("at least one shard");
    grid.sort_canonical(&mut all);
    let samples = all.len();
    store::write_samples(dir, &all)?;
    let mut merged = Manifest {
        shard: None,
        samples_total: grid.expected_keys(None).len(),
        samples_done: samples,
        samples_failed: all.iter().filter(|r| !r.ok()).count(),
        status: "complete".into(),
        started_at: manifests
            .iter()
            .map(|(_, m)| m.started_at.clone())
            .min()
            .unwrap_or_default(),
        finished_at: manifests
            .iter()
            .filter_map(|(_, m)| m.finished_at.clone())
            .max(),
        ..serde_json::from_value(serde_json::to_value(m0)?)?
    };
    merged.models = m0.models.clone();
    // a shard calibrates only the models it runs; each calibration is deterministic
    merged.calibration.clear();
    for (_, m) in &manifests {
        for c in &m.calibration {
            if !merged.calibration.iter().any(|x| x.model == c.model) {
                merged.calibration.push(c.clone());
            }
        }
    }
    store::write_manifest(dir, &merged)?;
    Ok(MergeSummary {
        shards: n,
        samples,
        records: all,
    })
}

fn short(h: &str) -> &str {
    &h[..12.min(h.len())]
}
