//! The metric catalogue the report and `declab compare` read: [`crate::metrics::REGISTRY`], in
//! its order. Each metric's name, level, family, direction, unit and needs live with its
//! computation in its file under [`crate::metrics`]; nothing here lists them again.

use crate::metrics;
pub use crate::metrics::{Family, Level, Metric};

/// Every metric, in registry order.
pub fn all() -> impl Iterator<Item = &'static Metric> {
    metrics::REGISTRY.iter()
}

/// The metrics of one level, in registry order.
pub fn of_level(level: Level) -> impl Iterator<Item = &'static Metric> {
    metrics::of_level(level)
}

pub fn find(name: &str) -> Option<&'static Metric> {
    metrics::find(name)
}
