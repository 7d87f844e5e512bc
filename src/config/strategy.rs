//! Strategy blocks: grid expansion, stable ids and the composites (`chain`, `entropy_switch`).
//!
//! A block is a YAML mapping with a `kind` and parameters. Any scalar parameter given as a list
//! is a grid axis; the block expands to the cartesian product of its axes, in the order the keys
//! are written, the last key varying fastest. Nested structures (`chain`, the branches of
//! `entropy_switch`) are never expanded. Each expanded block is then parsed by its unit (see
//! [`crate::strategy::registry`]): a one-parameter processor's flat block here, a block kind by
//! its own file, with `deny_unknown_fields`, so a misspelt parameter is an error for every kind.

use serde::Deserialize;
use serde_yaml::{Mapping, Value};

use crate::strategy::entropy_switch::SwitchSpec;
use crate::strategy::greedy::Greedy;
use crate::strategy::registry::{self, SIMPLE};
use crate::strategy::unit::{self, Checks, Range, Simple, Unit};
use crate::strategy::{ProcSpec, QuantileParam, StrategySpec};

pub use crate::strategy::PathError;

const CHAIN: &str = "chain";
const SWITCH: &str = "entropy_switch";
const CHAIN_EXAMPLE: &str =
    "{kind: chain, chain: [{top_k: 40}, {top_p: 0.95}, {min_p: 0.05}, {temperature: 0.8}]}";
const SWITCH_EXAMPLE: &str = "{kind: entropy_switch, entropy_low: 1.0, entropy_high: 3.0, low: {kind: greedy}, mid: {kind: top_p, top_p: 0.9, temperature: 0.8}, high: {kind: min_p, min_p: 0.1, temperature: 1.2}}";

/// Every strategy kind declab knows, in the order messages and the bench list them: `greedy`
/// (the latency reference), the one-parameter kinds, the composites, the other block kinds.
pub fn kinds() -> Vec<&'static str> {
    let (first, rest) = registry::KINDS.split_at(1);
    first
        .iter()
        .map(|k| k.name)
        .chain(SIMPLE.iter().filter(|s| s.kind).map(|s| s.param.key))
        .chain([CHAIN, SWITCH])
        .chain(rest.iter().map(|k| k.name))
        .collect()
}

/// One typical block of every kind, in [`kinds`] order: the bench runs them, and tests check
/// every kind with them.
pub fn examples() -> Vec<String> {
    kinds()
        .into_iter()
        .flat_map(|k| -> Vec<String> {
            if let Some(kind) = registry::kind(k) {
                kind.examples.iter().map(|e| e.to_string()).collect()
            } else if let Some(s) = registry::simple(k) {
                s.examples.iter().map(|e| e.to_string()).collect()
            } else if k == CHAIN {
                vec![CHAIN_EXAMPLE.to_string()]
            } else {
                vec![SWITCH_EXAMPLE.to_string()]
            }
        })
        .collect()
}

/// Most strategies one block may expand to (its grid lists multiplied); checked before
/// expanding, so a block with huge lists fails at once instead of filling memory.
pub const MAX_BLOCK_GRID: u64 = 10_000;

/// Keys whose values are structures, never grid axes.
const NESTED_KEYS: &[&str] = &["chain", "low", "mid", "high"];

fn err(path: &str, message: impl Into<String>) -> PathError {
    PathError::new(path, message)
}

/// Expand one strategy block into its grid of validated strategies.
pub fn expand_block(block: &Value, path: &str) -> Result<Vec<StrategySpec>, Vec<PathError>> {
    let map = block.as_mapping().ok_or_else(|| {
        vec![err(
            path,
            "a strategy must be a mapping with a `kind`, e.g. {kind: top_p, top_p: 0.9}",
        )]
    })?;
    kind_of(map, path).map_err(|e| vec![e])?;
    let points = map
        .iter()
        .filter(|(k, _)| !NESTED_KEYS.contains(&k.as_str().unwrap_or_default()))
        .filter_map(|(_, v)| v.as_sequence().map(|items| items.len() as u64))
        .try_fold(1u64, |acc, n| acc.checked_mul(n));
    match points {
        Some(n) if n <= MAX_BLOCK_GRID => {}
        _ => {
            let shown = points.map_or_else(|| "more than 2^64".to_string(), |n| n.to_string());
            return Err(vec![err(
                path,
                format!("its grid lists expand to {shown} strategies, above declab's limit of {MAX_BLOCK_GRID} per block; give fewer values or split the block"),
            )]);
        }
    }
    let mut combos: Vec<Mapping> = vec![Mapping::new()];
    for (k, v) in map {
        let key = k.as_str().unwrap_or_default();
        match v {
            Value::Sequence(items) if !NESTED_KEYS.contains(&key) => {
                if items.is_empty() {
                    return Err(vec![err(&format!("{path}.{key}"), "an empty list expands the grid to zero strategies; give at least one value")]);
                }
                let mut next = Vec::with_capacity(combos.len() * items.len());
                for c in &combos {
                    for item in items {
                        let mut m = c.clone();
                        m.insert(k.clone(), item.clone());
                        next.push(m);
                    }
                }
                combos = next;
            }
            _ => {
                for c in &mut combos {
                    c.insert(k.clone(), v.clone());
                }
            }
        }
    }
    let mut out = Vec::new();
    for (i, m) in combos.iter().enumerate() {
        let p = if combos.len() > 1 {
            format!("{path} (grid point {i})")
        } else {
            path.to_string()
        };
        // the same mistake would repeat for every grid point: report the first
        out.push(parse_single(m, &p)?);
    }
    Ok(out)
}

fn kind_of(map: &Mapping, path: &str) -> Result<String, PathError> {
    let all = kinds();
    match map.get("kind") {
        None => Err(err(
            path,
            format!("missing `kind`; one of: {}", all.join(", ")),
        )),
        Some(Value::String(k)) if all.contains(&k.as_str()) => Ok(k.clone()),
        Some(Value::String(k)) => Err(err(
            &format!("{path}.kind"),
            format!("unknown strategy kind `{k}`; one of: {}", all.join(", ")),
        )),
        Some(_) => Err(err(&format!("{path}.kind"), "`kind` must be a string")),
    }
}

/// Parse one block with scalar parameters (no grid lists) into a strategy.
pub fn parse_single(map: &Mapping, path: &str) -> Result<StrategySpec, Vec<PathError>> {
    let kind = kind_of(map, path).map_err(|e| vec![e])?;
    let name = match map.get("name") {
        None => None,
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
        Some(_) => {
            return Err(vec![err(
                &format!("{path}.name"),
                "`name` must be a non-empty string",
            )])
        }
    };
    let (placeheld, quantiles) = quantile_placeholders(&kind, map, path)?;
    let processors = processors_for(&kind, &placeheld, path)?;
    // the id and the record keep the quantiles as written: one id across models
    let id = name.unwrap_or_else(|| strategy_id(&kind, map));
    let params = serde_json::to_value(map).unwrap_or(serde_json::Value::Null);
    Ok(StrategySpec {
        id,
        kind,
        processors,
        params,
        quantiles,
    })
}

/// The block keys that may be a quantile of the model's own entropy distribution, per kind:
/// the entropy thresholds of `entropy_switch` and the target of `target_entropy`.
pub const QUANTILE_KEYS: &[(&str, &[&str])] = &[
    (SWITCH, &["entropy_low", "entropy_high"]),
    ("target_entropy", &["target"]),
];

/// The `{quantile: q}` value of a key, if it is one: `Ok(None)` for any other value.
fn quantile_of(v: &Value, path: &str) -> Result<Option<f64>, PathError> {
    let Value::Mapping(m) = v else {
        return Ok(None);
    };
    if m.len() != 1 || !m.contains_key("quantile") {
        return Err(err(path, "expected a number (nats, or bits with `unit: bits`) or {quantile: q}, a quantile of the model's own entropy distribution with 0 < q < 1"));
    }
    match m.get("quantile").and_then(Value::as_f64) {
        Some(q) if q > 0.0 && q < 1.0 => Ok(Some(q)),
        _ => Err(err(
            &format!("{path}.quantile"),
            format!(
                "{} is out of range; allowed: 0 < quantile < 1 (e.g. {{quantile: 0.25}})",
                short(m.get("quantile").unwrap_or(&Value::Null))
            ),
        )),
    }
}

/// The block with each `{quantile: q}` replaced by `q` for validation (the quantile function is
/// increasing, so `q` keeps the order checks of the thresholds it stands for), and the
/// quantile keys. A quantile where the kind takes none, or a switch with one threshold a
/// quantile and the other a number, is an error.
fn quantile_placeholders(
    kind: &str,
    map: &Mapping,
    path: &str,
) -> Result<(Mapping, Vec<QuantileParam>), Vec<PathError>> {
    let allowed: &[&str] = QUANTILE_KEYS
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, keys)| *keys)
        .unwrap_or(&[]);
    let mut out = map.clone();
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for (k, v) in map {
        let key = k.as_str().unwrap_or_default();
        if !allowed.contains(&key) {
            let is_quantile = matches!(v, Value::Mapping(m) if m.contains_key("quantile"));
            if is_quantile {
                errors.push(err(
                    &format!("{path}.{key}"),
                    format!(
                        "a quantile threshold is allowed only for {}",
                        QUANTILE_KEYS
                            .iter()
                            .flat_map(|(k, keys)| keys
                                .iter()
                                .map(move |x| format!("`{k}`'s `{x}`")))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
            continue;
        }
        match quantile_of(v, &format!("{path}.{key}")) {
            Ok(Some(q)) => {
                out.insert(k.clone(), Value::from(q));
                found.push(QuantileParam {
                    key: key.to_string(),
                    q,
                });
            }
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
    }
    if kind == SWITCH
        && found.len() == 1
        && map.contains_key("entropy_low")
        && map.contains_key("entropy_high")
    {
        errors.push(err(
            path,
            "give both entropy thresholds as quantiles ({quantile: q}) or both as numbers: a quantile and a fixed value cannot be checked for order before the model is calibrated",
        ));
    }
    if errors.is_empty() {
        Ok((out, found))
    } else {
        Err(errors)
    }
}

/// The values a strategy's quantile thresholds resolved to: (block key, nats).
pub type Resolved = Vec<(String, f64)>;

/// `spec` with its quantile thresholds replaced by one model's values: `nats_at(q)` is the
/// model's `q`-quantile of entropy in nats, written into the block in the block's `unit` and
/// parsed again. The id, kind and written block stay; `None` for a strategy without
/// quantiles. Returns the resolved values in nats by key.
pub fn resolve_quantiles(
    spec: &StrategySpec,
    mut nats_at: impl FnMut(f64) -> f64,
) -> Result<(StrategySpec, Resolved), Vec<PathError>> {
    if spec.quantiles.is_empty() {
        return Ok((spec.clone(), Vec::new()));
    }
    let path = format!("strategy {:?}", spec.id);
    let map: Mapping = serde_yaml::to_value(&spec.params)
        .ok()
        .and_then(|v| v.as_mapping().cloned())
        .ok_or_else(|| vec![err(&path, "the stored block is not a mapping")])?;
    let bits = map.get("unit").and_then(Value::as_str) == Some("bits");
    let mut resolved = map.clone();
    let mut values = Vec::new();
    for qp in &spec.quantiles {
        let h = nats_at(qp.q);
        let written = if bits { h / std::f64::consts::LN_2 } else { h };
        resolved.insert(Value::from(qp.key.as_str()), Value::from(written));
        values.push((qp.key.clone(), h));
    }
    let processors = processors_for(&spec.kind, &resolved, &path)?;
    Ok((
        StrategySpec {
            processors,
            quantiles: Vec::new(),
            ..spec.clone()
        },
        values,
    ))
}

/// The processor chain for one expanded block.
fn processors_for(kind: &str, map: &Mapping, path: &str) -> Result<Vec<ProcSpec>, Vec<PathError>> {
    if let Some(k) = registry::kind(kind) {
        return (k.parse)(map, path);
    }
    match kind {
        CHAIN => chain(map, path),
        SWITCH => switch(map, path),
        _ => flat(kind, map, path),
    }
}

/// A one-parameter kind's block: any one-parameter processors as keys, applied in
/// [`registry::SIMPLE`] order, or with the temperature last (`temperature_last: true`).
fn flat(kind: &str, map: &Mapping, path: &str) -> Result<Vec<ProcSpec>, Vec<PathError>> {
    let own = registry::simple(kind)
        .ok_or_else(|| vec![err(path, format!("unknown strategy kind `{kind}`"))])?;
    let mut c = Checks::new(path);
    let mut temperature_last = false;
    let mut given: Vec<(&Simple, f64)> = Vec::new();
    for (k, v) in map {
        let key = k.as_str().unwrap_or_default();
        match key {
            "kind" | "name" => {}
            "temperature_last" => match v {
                Value::Bool(b) => temperature_last = *b,
                other => c.fail(key, format!("expected true or false, got {}", short(other))),
            },
            _ => match registry::simple(key) {
                Some(s) => match number(v, &c.at(key)) {
                    Ok(x) => given.push((s, x)),
                    Err(e) => c.extend(vec![e]),
                },
                None => {
                    let mut expected: Vec<&str> = SIMPLE.iter().map(|s| s.param.key).collect();
                    expected.push("temperature_last");
                    c.fail(
                        "",
                        format!(
                            "unknown field `{key}`, expected one of {}",
                            expected
                                .iter()
                                .map(|e| format!("`{e}`"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    );
                }
            },
        }
    }
    if !given.iter().any(|(s, _)| s.param.key == own.param.key) && c.is_clean() {
        return Err(vec![err(
            path,
            format!(
                "kind `{kind}` needs its parameter `{kind}` (e.g. {kind}: {})",
                own.param.example
            ),
        )]);
    }
    let is_temperature = |s: &Simple| s.param.key == crate::strategy::temperature::PARAM.key;
    let mut order: Vec<&Simple> = SIMPLE.iter().collect();
    if temperature_last {
        order.sort_by_key(|s| is_temperature(s));
    }
    let mut v = Vec::new();
    for s in order {
        if let Some(&(_, x)) = given.iter().find(|(g, _)| g.param.key == s.param.key) {
            c.param(&s.param, Some(x));
            v.push((s.make)(x));
        }
    }
    c.done(v)
}

/// A YAML number, or an error at `path`.
fn number(v: &Value, path: &str) -> Result<f64, PathError> {
    v.as_f64().ok_or_else(|| {
        let hint = if matches!(v, Value::Sequence(_)) {
            " (grid lists are only expanded at the top level of a strategy block)"
        } else {
            ""
        };
        err(path, format!("expected a number, got {}{hint}", short(v)))
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChainBlock {
    chain: Vec<Value>,
}

fn chain(map: &Mapping, path: &str) -> Result<Vec<ProcSpec>, Vec<PathError>> {
    let b: ChainBlock = unit::block(map, path)?;
    if b.chain.is_empty() {
        return Err(vec![err(&format!("{path}.chain"), "an empty chain; list processors such as [{top_k: 40}, {top_p: 0.9}, {temperature: 0.8}]")]);
    }
    let mut v = Vec::new();
    let mut errors = Vec::new();
    for (i, item) in b.chain.iter().enumerate() {
        match chain_item(item, &format!("{path}.chain[{i}]")) {
            Ok(p) => v.extend(p),
            Err(e) => errors.extend(e),
        }
    }
    if errors.is_empty() {
        Ok(v)
    } else {
        Err(errors)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SwitchBlock {
    #[serde(default)]
    unit: Unit,
    entropy_low: f64,
    entropy_high: f64,
    varentropy_low: Option<f64>,
    varentropy_high: Option<f64>,
    low: Value,
    mid: Value,
    high: Value,
}

fn switch(map: &Mapping, path: &str) -> Result<Vec<ProcSpec>, Vec<PathError>> {
    let b: SwitchBlock = unit::block(map, path)?;
    let mut c = Checks::new(path);
    c.range("entropy_low", Range::NonNegative, Some(b.entropy_low));
    c.range("entropy_high", Range::NonNegative, Some(b.entropy_high));
    c.range("varentropy_low", Range::NonNegative, b.varentropy_low);
    c.range("varentropy_high", Range::NonNegative, b.varentropy_high);
    c.require(
        b.entropy_low <= b.entropy_high,
        "entropy_low",
        format!(
            "entropy_low ({}) is above entropy_high ({}); thresholds must be ordered low <= high",
            b.entropy_low, b.entropy_high
        ),
    );
    let mut branch = |key: &str, v: &Value| match nested_block(v, &format!("{path}.{key}")) {
        Ok(s) => s.processors,
        Err(e) => {
            c.extend(e);
            vec![]
        }
    };
    let low = branch("low", &b.low);
    let mid = branch("mid", &b.mid);
    let high = branch("high", &b.high);
    let u = b.unit;
    c.done(vec![ProcSpec::new(SwitchSpec {
        entropy_low_nats: u.to_nats(b.entropy_low),
        entropy_high_nats: u.to_nats(b.entropy_high),
        varentropy_low_nats2: b.varentropy_low.map(|v| u.to_nats2(v)),
        varentropy_high_nats2: b.varentropy_high.map(|v| u.to_nats2(v)),
        low,
        mid,
        high,
    })])
}

/// A nested strategy block (a branch or a chain item with `kind`): no grid lists allowed.
fn nested_block(v: &Value, path: &str) -> Result<StrategySpec, Vec<PathError>> {
    let map = v.as_mapping().ok_or_else(|| {
        vec![err(
            path,
            "expected a strategy block such as {kind: greedy}",
        )]
    })?;
    let kind = kind_of(map, path).map_err(|e| vec![e])?;
    if kind == SWITCH {
        return Err(vec![err(
            path,
            "entropy_switch cannot be nested inside another strategy",
        )]);
    }
    for (k, val) in map {
        if matches!(val, Value::Sequence(_))
            && !NESTED_KEYS.contains(&k.as_str().unwrap_or_default())
        {
            return Err(vec![err(
                &format!("{path}.{}", k.as_str().unwrap_or("?")),
                "grid lists are only expanded at the top level of a strategy block",
            )]);
        }
    }
    let spec = parse_single(map, path)?;
    if let Some(q) = spec.quantiles.first() {
        return Err(vec![err(
            &format!("{path}.{}", q.key),
            "a quantile threshold ({quantile: q}) is allowed only at the top level of a strategy block, not inside a branch or a chain; give a number here",
        )]);
    }
    Ok(spec)
}

/// One chain element: `{top_k: 40}`-style one-parameter processor, `greedy`, or a nested block.
fn chain_item(item: &Value, path: &str) -> Result<Vec<ProcSpec>, Vec<PathError>> {
    if let Value::String(s) = item {
        if s == "greedy" {
            return Ok(vec![ProcSpec::new(Greedy)]);
        }
    }
    let map = item.as_mapping().ok_or_else(|| {
        vec![err(
            path,
            "expected {processor: value}, e.g. {top_p: 0.9}, or a block with `kind`",
        )]
    })?;
    if map.contains_key("kind") {
        return Ok(nested_block(item, path)?.processors);
    }
    if map.len() != 1 {
        return Err(vec![err(path, "each chain element holds one processor, e.g. {top_k: 40}; use one element per processor")]);
    }
    let (k, v) = map.iter().next().expect("one entry");
    let key = k.as_str().unwrap_or_default();
    if key == "greedy" {
        return Ok(vec![ProcSpec::new(Greedy)]);
    }
    let Some(s) = registry::simple(key) else {
        let mut known = vec!["greedy"];
        known.extend(SIMPLE.iter().map(|s| s.param.key));
        return Err(vec![err(
            path,
            format!(
                "unknown chain processor `{key}`; one of: {}, or a block with `kind`",
                known.join(", ")
            ),
        )]);
    };
    let x = number(v, &format!("{path}.{key}")).map_err(|e| vec![e])?;
    let mut c = Checks::new(path);
    c.param(&s.param, Some(x));
    c.done(vec![(s.make)(x)])
}

fn short(v: &Value) -> String {
    serde_yaml::to_string(v)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// Short name of a YAML key in ids, from the unit that owns the key.
fn abbrev<'a>(kind: &str, key: &'a str) -> &'a str {
    if let Some(s) = registry::simple(key) {
        return s.param.abbrev;
    }
    if let Some(&(_, a)) =
        registry::kind(kind).and_then(|k| k.abbrevs.iter().find(|(k, _)| *k == key))
    {
        return a;
    }
    match key {
        "entropy_low" => "low",
        "entropy_high" => "high",
        "varentropy_low" => "vlow",
        "varentropy_high" => "vhigh",
        "temperature_last" => "tlast",
        "low" => "L",
        "mid" => "M",
        "high" => "H",
        other => other,
    }
}

/// Keys written first in a switch's id, in reading order.
const SWITCH_ID_FIRST: &[&str] = &[
    "entropy_low",
    "entropy_high",
    "varentropy_low",
    "varentropy_high",
    "low",
    "mid",
    "high",
];

fn is_integer_key(kind: &str, key: &str) -> bool {
    registry::simple(key).is_some_and(|s| s.param.is_integer())
        || registry::kind(kind).is_some_and(|k| k.integer_keys.contains(&key))
}

fn fmt_value(kind: &str, key: &str, v: &Value) -> String {
    match v {
        Value::Number(n) if !is_integer_key(kind, key) => n
            .as_f64()
            .map(|f| format!("{f:?}"))
            .unwrap_or_else(|| n.to_string()),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        // a quantile threshold: `q0.25`
        Value::Mapping(m) if m.len() == 1 && m.contains_key("quantile") => {
            format!("q{}", fmt_value(kind, "quantile", &m["quantile"]))
        }
        Value::Mapping(m) => match m.get("name").and_then(Value::as_str) {
            Some(name) => name.to_string(),
            None => strategy_id(m.get("kind").and_then(Value::as_str).unwrap_or("?"), m),
        },
        Value::Sequence(items) => items
            .iter()
            .map(chain_item_id)
            .collect::<Vec<_>>()
            .join(">"),
        _ => short(v),
    }
}

fn chain_item_id(item: &Value) -> String {
    match item {
        Value::Mapping(m) if m.contains_key("kind") => fmt_value("", "", item),
        Value::Mapping(m) => m
            .iter()
            .map(|(k, v)| {
                let key = k.as_str().unwrap_or("?");
                format!("{}={}", abbrev("", key), fmt_value("", key, v))
            })
            .collect::<Vec<_>>()
            .join(","),
        other => short(other),
    }
}

/// Stable, readable id: `kind(param=value,...)`. The kind's own parameter comes first, then the
/// keys its unit lists first (`target`; a switch's thresholds and branches), then the others in
/// alphabetical order of their YAML keys, so reordering keys never changes an id (and
/// therefore never changes a seed).
pub fn strategy_id(kind: &str, map: &Mapping) -> String {
    if kind == CHAIN {
        return format!(
            "chain({})",
            map.get("chain")
                .map(|v| fmt_value(kind, "chain", v))
                .unwrap_or_default()
        );
    }
    let first: &[&str] = match registry::kind(kind) {
        Some(k) => k.id_first,
        None if kind == SWITCH => SWITCH_ID_FIRST,
        None => &[],
    };
    let mut keys: Vec<&str> = map
        .keys()
        .filter_map(Value::as_str)
        .filter(|k| *k != "kind" && *k != "name")
        .collect();
    keys.sort_by_key(|k| {
        let rank = if *k == kind {
            0
        } else {
            first
                .iter()
                .position(|o| o == k)
                .map_or(first.len() + 1, |p| p + 1)
        };
        (rank, k.to_string())
    });
    if keys.is_empty() {
        return kind.to_string();
    }
    let parts: Vec<String> = keys
        .iter()
        .map(|k| {
            format!(
                "{}={}",
                abbrev(kind, k),
                fmt_value(kind, k, map.get(*k).expect("key from map"))
            )
        })
        .collect();
    format!("{kind}({})", parts.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::min_p::MinP;
    use crate::strategy::temperature::Temperature;
    use crate::strategy::top_k::TopK;
    use crate::strategy::top_p::TopP;

    fn block(yaml: &str) -> Value {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn ids(yaml: &str) -> Vec<String> {
        expand_block(&block(yaml), "strategies[0]")
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect()
    }

    fn error(yaml: &str) -> String {
        expand_block(&block(yaml), "strategies[0]")
            .unwrap_err()
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn grid_expands_in_key_order_last_fastest() {
        assert_eq!(
            ids("{kind: top_p, top_p: [0.9, 0.95], temperature: [0.7, 1.0]}"),
            vec![
                "top_p(p=0.9,t=0.7)",
                "top_p(p=0.9,t=1.0)",
                "top_p(p=0.95,t=0.7)",
                "top_p(p=0.95,t=1.0)"
            ]
        );
    }

    #[test]
    fn ids_are_stable_under_key_order_and_int_floats() {
        assert_eq!(
            ids("{temperature: 1, top_p: 0.9, kind: top_p}"),
            vec!["top_p(p=0.9,t=1.0)"]
        );
        assert_eq!(ids("{kind: greedy}"), vec!["greedy"]);
        assert_eq!(ids("{kind: top_k, top_k: 40}"), vec!["top_k(k=40)"]);
        assert_eq!(
            ids("{kind: top_p, top_p: 0.9, name: nucleus}"),
            vec!["nucleus"]
        );
        assert_eq!(
            ids("{kind: chain, chain: [{top_k: 40}, {top_p: 0.9}, {temperature: 0.8}]}"),
            vec!["chain(k=40>p=0.9>t=0.8)"]
        );
    }

    #[test]
    fn flat_params_follow_hf_order_or_temperature_last() {
        let s = &expand_block(
            &block("{kind: top_p, top_p: 0.9, temperature: 0.7, top_k: 40}"),
            "s",
        )
        .unwrap()[0];
        assert_eq!(
            s.processors,
            vec![
                ProcSpec::new(Temperature { temperature: 0.7 }),
                ProcSpec::new(TopK { top_k: 40 }),
                ProcSpec::new(TopP { top_p: 0.9 })
            ]
        );
        let s = &expand_block(
            &block("{kind: min_p, min_p: 0.1, temperature: 1.5, temperature_last: true}"),
            "s",
        )
        .unwrap()[0];
        assert_eq!(
            s.processors,
            vec![
                ProcSpec::new(MinP { min_p: 0.1 }),
                ProcSpec::new(Temperature { temperature: 1.5 })
            ]
        );
    }

    #[test]
    fn unknown_keys_are_rejected_for_every_kind() {
        // every registered kind has an example, and the examples cover every kind
        let examples = examples();
        for k in kinds() {
            assert!(
                examples
                    .iter()
                    .any(|e| e.contains(&format!("kind: {k},"))
                        || e.contains(&format!("kind: {k}}}"))),
                "kind {k} has no example"
            );
        }
        let minimal = [
            "{kind: greedy}",
            "{kind: temperature, temperature: 0.7}",
            "{kind: top_k, top_k: 40}",
            "{kind: top_p, top_p: 0.9}",
            "{kind: min_p, min_p: 0.1}",
            "{kind: typical_p, typical_p: 0.9}",
            "{kind: epsilon_cutoff, epsilon_cutoff: 0.001}",
            "{kind: eta_cutoff, eta_cutoff: 0.001}",
            "{kind: top_n_sigma, top_n_sigma: 1.0}",
            "{kind: chain, chain: [{top_p: 0.9}]}",
            "{kind: entropy_switch, entropy_low: 1, entropy_high: 3, low: {kind: greedy}, mid: {kind: temperature, temperature: 0.8}, high: {kind: top_p, top_p: 0.9}}",
            "{kind: target_entropy, target: 2.0}",
            "{kind: mirostat}",
            "{kind: dynatemp, dynatemp_range: 0.5}",
            "{kind: edt, edt_theta: 0.5}",
        ];
        for m in minimal
            .into_iter()
            .chain(examples.iter().map(String::as_str))
        {
            assert!(expand_block(&block(m), "s").is_ok(), "{m} should parse");
            let bad = m.replacen('{', "{bogus_key: 1, ", 1);
            let e = error(&bad);
            assert!(e.contains("bogus_key"), "{bad}: {e}");
        }
    }

    /// Every registered one-parameter processor works as a chain element and as a parameter of
    /// a flat kind, and its range rule names the path (so a new unit is covered when registered).
    #[test]
    fn every_simple_processor_parses_everywhere_and_checks_its_range() {
        for s in SIMPLE {
            let (key, ex) = (s.param.key, s.param.example);
            let chain = format!("{{kind: chain, chain: [{{{key}: {ex}}}]}}");
            assert!(expand_block(&block(&chain), "s").is_ok(), "{chain}");
            let host = if key == "temperature" {
                "kind: top_k, top_k: 40"
            } else {
                "kind: temperature, temperature: 0.9"
            };
            let flat = format!("{{{host}, {key}: {ex}}}");
            let spec = &expand_block(&block(&flat), "s").unwrap()[0];
            assert!(
                spec.processors.iter().any(|p| p.op() == key),
                "{flat}: {spec:?}"
            );
            let bad = format!("{{{host}, {key}: -3}}");
            assert!(
                error(&bad).contains(&format!(
                    "strategies[0].{key}: -3 is out of range; allowed: {}",
                    s.param.range.allowed()
                )),
                "{bad}: {}",
                error(&bad)
            );
        }
    }

    #[test]
    fn out_of_range_values_name_the_path() {
        assert!(error("{kind: top_p, top_p: 1.5}")
            .contains("strategies[0].top_p: 1.5 is out of range; allowed: 0 < value <= 1"));
        assert!(error("{kind: temperature, temperature: -1}").contains("strategies[0].temperature"));
        assert!(error("{kind: top_p, top_p: [0.9, 0]}").contains("grid point 1"));
        let e = error("{kind: entropy_switch, entropy_low: 3, entropy_high: 1, low: {kind: greedy}, mid: {kind: greedy}, high: {kind: greedy}}");
        assert!(e.contains("thresholds must be ordered"), "{e}");
        assert!(error("{kind: mirostat, version: 3}").contains("allowed: 1 or 2"));
        assert!(error("{kind: top_p}").contains("needs its parameter `top_p`"));
        assert!(error("{kind: nucleus}").contains("unknown strategy kind `nucleus`"));
        assert!(error("{kind: top_p, top_p: []}").contains("empty list"));
        assert!(error("{kind: target_entropy, target: 2, kp: 1}")
            .contains("only applies to `mode: feedback`"));
        let e = error("{kind: entropy_switch, entropy_low: 1, entropy_high: 2, low: {kind: greedy, oops: 1}, mid: {kind: greedy}, high: {kind: greedy}}");
        assert!(e.contains("strategies[0].low") && e.contains("oops"), "{e}");
        assert!(error("{kind: chain, chain: [{top_q: 0.9}]}").contains("strategies[0].chain[0]"));
    }

    #[test]
    fn units_convert_to_nats() {
        let s = &expand_block(
            &block("{kind: target_entropy, target: 1.0, unit: bits}"),
            "s",
        )
        .unwrap()[0];
        let target_nats = s.target_nats().unwrap();
        assert!((target_nats - std::f64::consts::LN_2).abs() < 1e-12);
    }
}
