//! Renderers: the bytes of the files a researcher reads, from what analysis produced (CSV
//! tables, SVG plots, `report.md`, `report.html`) and from the stored records (`samples.csv`). [`write_folder`]
//! and [`write_samples_csv`] put them into a results folder through the store's atomic writes.
//!
//! A renderer reads; it does not call back into the runner or analyse. Reading and writing the
//! folder's own data (records, manifest) is [`crate::store`]'s.

pub mod checkpoints_md;
pub mod csv_out;
pub mod html;
pub mod markdown;
pub mod models_md;
pub mod plots;
pub mod selection_md;
pub mod summary;

use std::path::Path;

use anyhow::Result;

use crate::analysis::Analysis;
use crate::record::SampleRecord;
use crate::store::{self, Manifest};

/// Write `samples.csv` (one row per stored record) into `out_dir`.
pub fn write_samples_csv(out_dir: &Path, records: &[SampleRecord]) -> Result<()> {
    store::write_atomic(
        &out_dir.join("samples.csv"),
        &csv_out::samples_csv(records)?,
    )
}

/// Write summary.csv, comparisons.csv, latency.csv, metrics_samples.csv, metrics_groups.csv,
/// with selectors selections.csv, selection_comparisons.csv and selection_costs.csv, the SVG
/// plots, report.md and report.html (with the sample viewer over `records`) of analysis `a`
/// into `out_dir`.
pub fn write_folder(
    out_dir: &Path,
    a: &Analysis,
    manifest: &Manifest,
    records: &[SampleRecord],
) -> Result<()> {
    use summary as s;
    store::write_atomic(&out_dir.join("summary.csv"), &s::summary_csv(&a.summary)?)?;
    store::write_atomic(
        &out_dir.join("comparisons.csv"),
        &s::comparisons_csv(&a.comparisons)?,
    )?;
    store::write_atomic(&out_dir.join("latency.csv"), &s::latency_csv(&a.latency)?)?;
    store::write_atomic(
        &out_dir.join("metrics_samples.csv"),
        &s::metrics_samples_csv(&a.samples)?,
    )?;
    store::write_atomic(
        &out_dir.join("metrics_groups.csv"),
        &s::metrics_groups_csv(&a.groups)?,
    )?;
    if a.design.models.len() > 1 {
        store::write_atomic(
            &out_dir.join("model_comparisons.csv"),
            &s::model_comparisons_csv(&a.model_comparisons)?,
        )?;
    }
    if !a.checkpoints.is_empty() {
        store::write_atomic(&out_dir.join("checkpoints.csv"), &s::checkpoints_csv(a)?)?;
    }
    if !a.design.selectors.is_empty() {
        store::write_atomic(
            &out_dir.join("selections.csv"),
            &s::selections_csv(&a.selections)?,
        )?;
        store::write_atomic(
            &out_dir.join("selection_comparisons.csv"),
            &s::selection_comparisons_csv(&a.selection_comparisons)?,
        )?;
        store::write_atomic(
            &out_dir.join("selection_costs.csv"),
            &s::selection_costs_csv(&a.selection_costs)?,
        )?;
    }
    let plots = plots::all_plots(a)?;
    for (name, svg) in &plots {
        store::write_atomic(&out_dir.join(name), svg.as_bytes())?;
    }
    let names: Vec<&str> = plots.iter().map(|(n, _)| n.as_str()).collect();
    let md = markdown::report_md(a, manifest, &names);
    store::write_atomic(&out_dir.join("report.md"), md.as_bytes())?;
    store::write_atomic(
        &out_dir.join("report.html"),
        html::report_html(a, &md, &plots, records).as_bytes(),
    )?;
    Ok(())
}
