//! declab: an experiment runner for LLM decoding strategies.
//!
//! An experiment file declares models, prompts and a grid of strategies ([`config`]); the
//! [`runner`] generates every (model, prompt, strategy, sample) with candle ([`engine`]) and a
//! per-sample seeded sampler ([`strategy`], [`seed`]), recording per-token traces
//! ([`record`]) into the results folder ([`store`]); [`analysis`] turns the stored records into
//! metrics and statistics, which [`report`] renders; [`commands`] joins them per subcommand.
//! Data flows one way: config -> grid -> runner -> store -> analysis -> report.

pub mod analysis;
pub mod bench;
pub mod calibrate;
pub mod cli;
pub mod commands;
pub mod config;
pub mod embed;
pub mod engine;
pub mod error;
pub mod grid;
pub mod merge;
pub mod metrics;
pub mod pool;
pub mod record;
pub mod reference;
pub mod report;
pub mod runner;
pub mod seed;
pub mod select;
pub mod stats;
pub mod store;
pub mod strategy;
pub mod teacher;
