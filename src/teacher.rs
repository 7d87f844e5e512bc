//! Teacher forcing: what a model's unmodified next-token distributions say about token sequences
//! that were given, not drawn (texts made by another system, or declab's own samples scored
//! again). It owns the model side of `declab select` and `declab metrics --scorer`: one prefill
//! of the prompt, then the continuations decoded together as a batch, each row fed its own
//! tokens, with [`strategy::forced_step`] read at every step. It does no I/O and chooses nothing.
//!
//! The path is the one [`crate::runner::generate_batch`] takes (the prompt's logits from
//! [`LoadedModel::encode`] and one prefill, a batch made from the prefilled state after the
//! first token, rows dropped with `retain` as they end), and a row's logits do not depend on the
//! batch, so the fields are bit-identical to the trace a run recorded for the same tokens.

use anyhow::{anyhow, bail, Context, Result};

use crate::engine::{BatchDecoder, LanguageModel, LoadedModel};
use crate::record::{RefScore, Trace};
use crate::strategy::{self, ForcedStep};

/// Continuations of one prompt teacher-forced together at most (as `run --batch`'s default).
pub const BATCH: usize = crate::runner::DEFAULT_BATCH as usize;

/// A prompt's ids as `run` feeds them (`LoadedModel::encode`, special tokens included).
pub fn prompt_ids(model: &LoadedModel, prompt: &str) -> Result<Vec<u32>> {
    let ids = model.encode(prompt)?;
    if ids.is_empty() {
        bail!("the prompt encodes to no token (and the tokenizer adds no BOS): nothing to condition on");
    }
    Ok(ids)
}

/// A text's ids as a continuation: tokenized on its own, without special tokens.
pub fn text_ids(model: &LoadedModel, text: &str) -> Result<Vec<u32>> {
    Ok(model
        .tokenizer
        .encode(text, false)
        .map_err(|e| anyhow!("tokenizing the text failed: {e}"))?
        .get_ids()
        .to_vec())
}

/// The reference scores of `texts` (continuations of one prompt, whichever model wrote them)
/// under `model`, the experiment's scorer, named `model_id`: each text re-tokenized by
/// [`text_ids`] and forced after `prompt_ids` (the prompt as the scorer encodes it) in one
/// [`force`]. A text the scorer cannot take ([`check_fits`]) gets its reason and no values.
pub fn reference_scores(
    model: &LoadedModel,
    model_id: &str,
    prompt_ids: &[u32],
    texts: &[&str],
) -> Result<Vec<RefScore>> {
    let mut ids = Vec::with_capacity(texts.len());
    let mut out: Vec<RefScore> = Vec::with_capacity(texts.len());
    for t in texts {
        let mut tokens = text_ids(model, t)?;
        let error = check_fits(model, prompt_ids.len(), &tokens);
        if error.is_some() {
            tokens.clear();
        }
        ids.push(tokens);
        out.push(RefScore {
            model: model_id.to_string(),
            error,
            ..RefScore::default()
        });
    }
    let refs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
    for (score, steps) in out.iter_mut().zip(force(model, prompt_ids, &refs)?) {
        score.entropy = steps.iter().map(|s| s.entropy_nats as f32).collect();
        score.logprob = steps.iter().map(|s| s.logprob as f32).collect();
    }
    Ok(out)
}

/// Why `tokens` cannot be forced after a prompt of `prompt_len` tokens: an id outside the
/// vocabulary, or more positions than the model's context.
pub fn check_fits(model: &LoadedModel, prompt_len: usize, tokens: &[u32]) -> Option<String> {
    if let Some(bad) = tokens.iter().find(|&&t| t as usize >= model.vocab_size) {
        return Some(format!(
            "token id {bad} is outside the scorer's vocabulary of {}",
            model.vocab_size
        ));
    }
    if prompt_len + tokens.len() > model.context_length {
        return Some(format!(
            "the prompt ({prompt_len} tokens) and the text ({} tokens) exceed the scorer's context of {} tokens",
            tokens.len(),
            model.context_length
        ));
    }
    None
}

/// The forced steps of every continuation in `texts` after `prompt_ids` (one prefill, then
/// batches of at most [`BATCH`] rows), in input order; an empty continuation has no step.
/// Every sequence must pass [`check_fits`].
pub fn force(
    model: &LoadedModel,
    prompt_ids: &[u32],
    texts: &[&[u32]],
) -> Result<Vec<Vec<ForcedStep>>> {
    let mut prefilled = model.model.fork();
    let first = prefilled
        .forward(prompt_ids, 0)
        .context("prefill of the prompt")?;
    let mut out = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(BATCH) {
        out.extend(force_batch(
            prefilled.as_ref(),
            &first,
            prompt_ids.len(),
            chunk,
        )?);
    }
    Ok(out)
}

/// One batch of [`force`] from the prefilled state and its logits.
fn force_batch(
    prefilled: &dyn LanguageModel,
    first: &[f32],
    prompt_len: usize,
    texts: &[&[u32]],
) -> Result<Vec<Vec<ForcedStep>>> {
    let vocab = first.len();
    let longest = texts.iter().map(|t| t.len()).max().unwrap_or(0);
    let mut out: Vec<Vec<ForcedStep>> = texts.iter().map(|t| Vec::with_capacity(t.len())).collect();
    // live[r]: the text decoded in row r
    let mut live: Vec<usize> = (0..texts.len()).filter(|&j| !texts[j].is_empty()).collect();
    let mut decoder: Option<Box<dyn BatchDecoder>> = None;
    let mut logits: Vec<f32> = Vec::new();
    for i in 0..longest {
        let rows = &logits;
        let stepped: Vec<Result<ForcedStep>> = crate::pool::map(live.len(), |r| {
            let row = if i == 0 {
                first
            } else {
                &rows[r * vocab..(r + 1) * vocab]
            };
            let j = live[r];
            strategy::forced_step(row, texts[j][i])
                .map_err(|e| anyhow!("text {j}, token {i}: invalid logits: {e}"))
        });
        for (&j, s) in live.iter().zip(stepped) {
            out[j].push(s?);
        }
        // the rows that go on feed their token i; the others end here (as a sample ends after
        // its last token, which is never fed)
        let keep: Vec<usize> = (0..live.len())
            .filter(|&r| texts[live[r]].len() > i + 1)
            .collect();
        if keep.is_empty() {
            break;
        }
        let dec = match decoder.as_mut() {
            None => decoder.insert(prefilled.batch(keep.len(), prompt_len + longest)?),
            Some(d) => {
                if keep.len() < live.len() {
                    d.retain(&keep)?;
                }
                d
            }
        };
        live = keep.iter().map(|&r| live[r]).collect();
        let tokens: Vec<u32> = live.iter().map(|&j| texts[j][i]).collect();
        drop(std::mem::take(&mut logits));
        logits = dec.step(&tokens, prompt_len + i)?;
    }
    Ok(out)
}

/// The trace fields a forced text has (entropy, varentropy, logprob, self-certainty,
/// confidence), stored as a run stores them (f32); the sampler's own fields stay empty.
pub fn trace_of(steps: &[ForcedStep]) -> Trace {
    Trace {
        entropy: steps.iter().map(|s| s.entropy_nats as f32).collect(),
        varentropy: steps.iter().map(|s| s.varentropy_nats2 as f32).collect(),
        logprob: steps.iter().map(|s| s.logprob as f32).collect(),
        self_certainty: steps.iter().map(|s| s.conf.self_certainty as f32).collect(),
        confidence: steps.iter().map(|s| s.conf.confidence as f32).collect(),
        ..Trace::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::{generate_batch, GenerateArgs, Job};
    use std::sync::atomic::AtomicBool;

    /// Forcing a run's own samples gives back their traces bit for bit, whatever the batch.
    #[test]
    fn forcing_generated_samples_reproduces_their_traces() {
        let dir = tempfile::tempdir().unwrap();
        let tiny = crate::engine::tiny::write(dir.path(), 7).unwrap();
        let spec = crate::config::ModelSpec {
            id: "tiny".into(),
            weights: crate::config::Weights::Gguf(tiny.gguf),
            tokenizer: Some(tiny.tokenizer),
            eos_tokens: vec![],
            chat: false,
        };
        let model = crate::engine::load(&spec, &candle_core::Device::Cpu).unwrap();
        let prompt = prompt_ids(&model, "the cat sat on the").unwrap();
        let mut prefilled = model.model.fork();
        let first = prefilled.forward(&prompt, 0).unwrap();
        let block: serde_yaml::Value =
            serde_yaml::from_str("{kind: temperature, temperature: 1.5}").unwrap();
        let strat =
            crate::config::strategy::parse_single(block.as_mapping().unwrap(), "s").unwrap();
        let stop = AtomicBool::new(false);
        let args = GenerateArgs {
            model: &model,
            prefilled: prefilled.as_ref(),
            first_logits: &first,
            prompt_ids: &prompt,
            max_new_tokens: 10,
            stop: &[],
            stop_flag: &stop,
        };
        let jobs: Vec<Job> = (0..4)
            .map(|seed| Job {
                strategy: &strat,
                seed,
            })
            .collect();
        let mut made = vec![None; jobs.len()];
        generate_batch(&args, &jobs, |j, g| {
            made[j] = Some((g.token_ids, g.trace));
            Ok(())
        })
        .unwrap();
        let made: Vec<(Vec<u32>, Trace)> = made.into_iter().map(Option::unwrap).collect();
        // a shorter text too (rows end at different steps), and an empty one
        let longest = made.iter().max_by_key(|m| m.0.len()).unwrap();
        let cut = (longest.0.len() / 2).max(1);
        assert!(
            cut >= 2,
            "the tiny model should give a sample of 4 tokens or more"
        );
        let mut texts: Vec<&[u32]> = made.iter().map(|m| m.0.as_slice()).collect();
        texts.push(&longest.0[..cut]);
        texts.push(&[]);
        let forced = force(&model, &prompt, &texts).unwrap();
        for (k, (ids, tr)) in made.iter().enumerate() {
            let got = trace_of(&forced[k]);
            assert_eq!(got.entropy.len(), ids.len());
            assert_eq!(got.entropy, tr.entropy, "sample {k}");
            assert_eq!(got.varentropy, tr.varentropy, "sample {k}");
            assert_eq!(got.logprob, tr.logprob, "sample {k}");
            assert_eq!(got.self_certainty, tr.self_certainty, "sample {k}");
            assert_eq!(got.confidence, tr.confidence, "sample {k}");
        }
        assert_eq!(
            trace_of(&forced[4]).logprob,
            longest.1.logprob[..cut].to_vec()
        );
        assert!(forced[5].is_empty());
        assert!(check_fits(&model, prompt.len(), &[model.vocab_size as u32]).is_some());
        assert!(check_fits(&model, model.context_length, &[1]).is_some());
        assert!(check_fits(&model, prompt.len(), &made[0].0).is_none());
    }
}
