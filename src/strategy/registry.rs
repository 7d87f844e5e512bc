//! The one list of strategy units. Adding a strategy is its file plus one line here.
//!
//! * [`SIMPLE`]: one-parameter processors, in the order a flat block applies them (Hugging
//!   Face's: repetition penalty, temperature, top_k, top_p, min_p, typical_p, epsilon, eta, then
//!   top_n_sigma; `temperature_last: true` moves the temperature to the end, llama.cpp's order).
//! * [`KINDS`]: strategies with a block of their own.
//!
//! The composites `chain` and `entropy_switch` hold other blocks and are parsed in
//! `config::strategy`.

use super::unit::{Kind, Simple};
use super::{
    dynatemp, edt, epsilon, greedy, min_p, mirostat, repetition, target_entropy, temperature,
    top_a, top_k, top_n_sigma, top_p, typical,
};

pub const SIMPLE: &[Simple] = &[
    repetition::SIMPLE,
    temperature::SIMPLE,
    top_k::SIMPLE,
    top_p::SIMPLE,
    min_p::SIMPLE,
    typical::SIMPLE,
    epsilon::EPSILON_SIMPLE,
    epsilon::ETA_SIMPLE,
    top_n_sigma::SIMPLE,
    top_a::SIMPLE,
];

pub const KINDS: &[Kind] = &[
    greedy::KIND,
    target_entropy::KIND,
    mirostat::KIND,
    dynatemp::KIND,
    edt::KIND,
];

/// The one-parameter processor with this YAML key.
pub fn simple(key: &str) -> Option<&'static Simple> {
    SIMPLE.iter().find(|s| s.param.key == key)
}

/// The block kind with this name.
pub fn kind(name: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.name == name)
}
