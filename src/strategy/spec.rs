//! Validated strategy specifications (plain data, like candle's `Sampling` enum) and the
//! builder that turns them into processors. Parsing YAML into these lives in `config::strategy`.

use serde::Serialize;

use super::chain::Chain;
use super::dynatemp::DynaTemp;
use super::edt::Edt;
use super::entropy_switch::EntropySwitch;
use super::epsilon::{Epsilon, Eta};
use super::greedy::Greedy;
use super::min_p::MinP;
use super::mirostat::Mirostat;
use super::repetition::RepetitionPenalty;
use super::target_entropy::{Feedback, Signal, Solve};
use super::temperature::Temperature;
use super::top_k::TopK;
use super::top_n_sigma::TopNSigma;
use super::top_p::TopP;
use super::typical::Typical;
use super::Processor;

/// Unit of an entropy threshold or target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    Nats,
    Bits,
}

impl Unit {
    /// Convert an entropy in this unit to nats.
    pub fn to_nats(self, h: f64) -> f64 {
        match self {
            Unit::Nats => h,
            Unit::Bits => h * std::f64::consts::LN_2,
        }
    }

    /// Convert a varentropy (squared unit) to nats².
    pub fn to_nats2(self, v: f64) -> f64 {
        match self {
            Unit::Nats => v,
            Unit::Bits => v * std::f64::consts::LN_2 * std::f64::consts::LN_2,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetSignal {
    Entropy,
    Surprise,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum TargetMode {
    Solve {
        t_min: f64,
        t_max: f64,
    },
    Feedback {
        signal: TargetSignal,
        kp: f64,
        ki: f64,
        t_init: f64,
        t_min: f64,
        t_max: f64,
    },
}

/// One processor of a strategy's chain, with checked parameters. Entropies are in nats.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ProcSpec {
    Greedy,
    Temperature {
        temperature: f64,
    },
    TopK {
        top_k: usize,
    },
    TopP {
        top_p: f64,
    },
    MinP {
        min_p: f64,
    },
    TypicalP {
        typical_p: f64,
    },
    EpsilonCutoff {
        epsilon_cutoff: f64,
    },
    EtaCutoff {
        eta_cutoff: f64,
    },
    TopNSigma {
        top_n_sigma: f64,
    },
    RepetitionPenalty {
        repetition_penalty: f64,
    },
    Dynatemp {
        temperature: f64,
        dynatemp_range: f64,
        dynatemp_exponent: f64,
    },
    Edt {
        temperature: f64,
        edt_theta: f64,
        edt_n: f64,
    },
    TargetEntropy {
        target_nats: f64,
        #[serde(flatten)]
        mode: TargetMode,
    },
    Mirostat {
        version: u8,
        mirostat_tau: f64,
        mirostat_eta: f64,
        temperature: f64,
    },
    EntropySwitch {
        entropy_low_nats: f64,
        entropy_high_nats: f64,
        varentropy_low_nats2: Option<f64>,
        varentropy_high_nats2: Option<f64>,
        low: Vec<ProcSpec>,
        mid: Vec<ProcSpec>,
        high: Vec<ProcSpec>,
    },
}

/// A fully expanded, validated strategy: an id, its kind and its processor chain.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StrategySpec {
    pub id: String,
    pub kind: String,
    pub processors: Vec<ProcSpec>,
    /// The strategy block as written (after grid expansion), for records and reports.
    pub params: serde_json::Value,
}

impl StrategySpec {
    /// True when every step is an argmax (so every sample index gives the same text).
    pub fn is_greedy(&self) -> bool {
        matches!(
            self.processors.as_slice(),
            [ProcSpec::Greedy] | [ProcSpec::Temperature { temperature: 0.0 }]
        )
    }
}

fn build_one(p: &ProcSpec, vocab: usize) -> Box<dyn Processor> {
    match p {
        ProcSpec::Greedy => Box::new(Greedy),
        ProcSpec::Temperature { temperature } => Box::new(Temperature { t: *temperature }),
        ProcSpec::TopK { top_k } => Box::new(TopK { k: *top_k }),
        ProcSpec::TopP { top_p } => Box::new(TopP { p: *top_p }),
        ProcSpec::MinP { min_p } => Box::new(MinP { min_p: *min_p }),
        ProcSpec::TypicalP { typical_p } => Box::new(Typical { mass: *typical_p }),
        ProcSpec::EpsilonCutoff { epsilon_cutoff } => Box::new(Epsilon {
            epsilon: *epsilon_cutoff,
        }),
        ProcSpec::EtaCutoff { eta_cutoff } => Box::new(Eta {
            epsilon: *eta_cutoff,
        }),
        ProcSpec::TopNSigma { top_n_sigma } => Box::new(TopNSigma { n: *top_n_sigma }),
        ProcSpec::RepetitionPenalty { repetition_penalty } => {
            Box::new(RepetitionPenalty::new(*repetition_penalty))
        }
        ProcSpec::Dynatemp {
            temperature,
            dynatemp_range,
            dynatemp_exponent,
        } => Box::new(DynaTemp {
            temperature: *temperature,
            range: *dynatemp_range,
            exponent: *dynatemp_exponent,
        }),
        ProcSpec::Edt {
            temperature,
            edt_theta,
            edt_n,
        } => Box::new(Edt {
            temperature: *temperature,
            theta: *edt_theta,
            n: *edt_n,
        }),
        ProcSpec::TargetEntropy { target_nats, mode } => match *mode {
            TargetMode::Solve { t_min, t_max } => Box::new(Solve {
                target_nats: *target_nats,
                t_min,
                t_max,
            }),
            TargetMode::Feedback {
                signal,
                kp,
                ki,
                t_init,
                t_min,
                t_max,
            } => {
                let signal = match signal {
                    TargetSignal::Entropy => Signal::Entropy,
                    TargetSignal::Surprise => Signal::Surprise,
                };
                Box::new(Feedback::new(
                    *target_nats,
                    signal,
                    kp,
                    ki,
                    t_init,
                    t_min,
                    t_max,
                ))
            }
        },
        ProcSpec::Mirostat {
            version,
            mirostat_tau,
            mirostat_eta,
            temperature,
        } => Box::new(Mirostat::new(
            *version,
            *mirostat_tau,
            *mirostat_eta,
            *temperature,
        )),
        ProcSpec::EntropySwitch {
            entropy_low_nats,
            entropy_high_nats,
            varentropy_low_nats2,
            varentropy_high_nats2,
            low,
            mid,
            high,
        } => Box::new(EntropySwitch {
            entropy_low: *entropy_low_nats,
            entropy_high: *entropy_high_nats,
            varentropy_low: *varentropy_low_nats2,
            varentropy_high: *varentropy_high_nats2,
            low: build(low, vocab),
            mid: build(mid, vocab),
            high: build(high, vocab),
        }),
    }
}

/// Build the processor tree for a chain of specs.
pub fn build(chain: &[ProcSpec], vocab: usize) -> Box<dyn Processor> {
    if chain.len() == 1 {
        return build_one(&chain[0], vocab);
    }
    Box::new(Chain {
        processors: chain.iter().map(|p| build_one(p, vocab)).collect(),
    })
}
