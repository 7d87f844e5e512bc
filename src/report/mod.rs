//! Renderers: the bytes of CSV tables, SVG plots and `report.md`, from what analysis produced
//! and from the stored records. Reading and writing the results folder's own data (records,
//! manifest, atomic writes) is [`crate::store`]'s.

pub mod csv_out;
pub mod markdown;
pub mod plots;
pub mod summary;
