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

/// Continuations teacher-forced together at most (as `run --batch`'s default), of one prompt
/// or of several ([`force_groups`]).
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
    model
        .tokenizer
        .encode(text, false)
        .map_err(|e| anyhow!("tokenizing the text failed: {e}"))
}

/// The reference scores of texts under `model`, the experiment's scorer, named `model_id`:
/// `groups[g] = (prompt ids, texts)`, the texts continuations of that prompt (whichever model
/// wrote them) and the prompt as the scorer encodes it. Each text is re-tokenized by
/// [`text_ids`] and forced after its prompt; all groups go through one [`force_groups`], so the
/// prompts' texts share batches and each score is the one its prompt alone would get, bit for
/// bit. A text the scorer cannot take ([`check_fits`]) gets its reason and no values.
pub fn reference_scores_groups(
    model: &LoadedModel,
    model_id: &str,
    groups: &[(&[u32], Vec<&str>)],
) -> Result<Vec<Vec<RefScore>>> {
    let mut ids: Vec<Vec<Vec<u32>>> = Vec::with_capacity(groups.len());
    let mut out: Vec<Vec<RefScore>> = Vec::with_capacity(groups.len());
    for (prompt_ids, texts) in groups {
        let (mut gi, mut go) = (Vec::with_capacity(texts.len()), Vec::new());
        for t in texts {
            let mut tokens = text_ids(model, t)?;
            let error = check_fits(model, prompt_ids.len(), &tokens);
            if error.is_some() {
                tokens.clear();
            }
            gi.push(tokens);
            go.push(RefScore {
                model: model_id.to_string(),
                error,
                ..RefScore::default()
            });
        }
        ids.push(gi);
        out.push(go);
    }
    let forced: Vec<(&[u32], Vec<&[u32]>)> = groups
        .iter()
        .zip(&ids)
        .map(|((p, _), gi)| (*p, gi.iter().map(Vec::as_slice).collect()))
        .collect();
    for (go, steps) in out.iter_mut().zip(force_groups(model, &forced)?) {
        for (score, steps) in go.iter_mut().zip(steps) {
            score.entropy = steps.iter().map(|s| s.entropy_nats as f32).collect();
            score.logprob = steps.iter().map(|s| s.logprob as f32).collect();
        }
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
    let mut out = force_groups(model, &[(prompt_ids, texts.to_vec())])?;
    Ok(out.pop().unwrap_or_default())
}

/// [`force`] for several prompts at once: `groups[g] = (prompt ids, continuations)`. The
/// groups' continuations share batches of at most [`BATCH`] rows as `declab run`'s samples do
/// ([`crate::runner::plan_batches`]: consecutive prompts together while they fit, each at its
/// own position), so many prompts with a few candidates each decode in full batches. The steps
/// per group, in input order.
pub fn force_groups(
    model: &LoadedModel,
    groups: &[(&[u32], Vec<&[u32]>)],
) -> Result<Vec<Vec<Vec<ForcedStep>>>> {
    let counts: Vec<usize> = groups.iter().map(|g| g.1.len()).collect();
    let mut out: Vec<Vec<Vec<ForcedStep>>> =
        counts.iter().map(|&n| Vec::with_capacity(n)).collect();
    // a group split over several batches is prefilled once, carried to its next batch
    let mut carried: Option<(usize, Prefilled)> = None;
    for batch in crate::runner::plan_batches(&counts, BATCH) {
        let mut prefilled = Vec::with_capacity(batch.len());
        for (g, _) in &batch {
            match carried.take() {
                Some((cg, pre)) if cg == *g => prefilled.push(pre),
                _ => {
                    let mut p = model.model.fork();
                    let first = p
                        .forward(groups[*g].0, 0)
                        .with_context(|| format!("prefill of the prompt of group {}", g + 1))?;
                    prefilled.push((p, first));
                }
            }
        }
        let parts: Vec<Part> = batch
            .iter()
            .zip(&prefilled)
            .map(|((g, range), (p, first))| Part {
                group: *g,
                offset: range.start,
                prefilled: p.as_ref(),
                first,
                prompt_len: groups[*g].0.len(),
                texts: &groups[*g].1[range.clone()],
            })
            .collect();
        for ((g, _), steps) in batch.iter().zip(force_parts(&parts)?) {
            out[*g].extend(steps);
        }
        drop(parts);
        if let [(g, range)] = batch.as_slice() {
            if range.end < counts[*g] {
                carried = prefilled.pop().map(|pre| (*g, pre));
            }
        }
    }
    Ok(out)
}

/// A prompt's state after its prefill, and the logits of its first forced token.
type Prefilled = (Box<dyn LanguageModel>, Vec<f32>);

/// A prompt's continuations inside one batch of [`force_parts`].
struct Part<'a> {
    /// the group (input order) and the index of `texts[0]` in it, for errors
    group: usize,
    offset: usize,
    prefilled: &'a dyn LanguageModel,
    first: &'a [f32],
    prompt_len: usize,
    texts: &'a [&'a [u32]],
}

/// One batch of [`force_groups`]: every part's continuations as rows of one (ragged) batch.
// `i` is a step, indexing each live text (`texts[p][j][i]`), not one slice to iterate
#[allow(clippy::needless_range_loop)]
fn force_parts(parts: &[Part]) -> Result<Vec<Vec<Vec<ForcedStep>>>> {
    // (part, text) per row, part after part: the batch's row order
    let rows: Vec<(usize, usize)> = parts
        .iter()
        .enumerate()
        .flat_map(|(p, part)| (0..part.texts.len()).map(move |j| (p, j)))
        .collect();
    let text = |k: usize| parts[rows[k].0].texts[rows[k].1];
    let Some(vocab) = parts.first().map(|p| p.first.len()) else {
        return Ok(Vec::new());
    };
    let longest = (0..rows.len()).map(|k| text(k).len()).max().unwrap_or(0);
    let longest_prompt = parts.iter().map(|p| p.prompt_len).max().unwrap_or(0);
    let mut out: Vec<Vec<Vec<ForcedStep>>> = parts
        .iter()
        .map(|p| {
            p.texts
                .iter()
                .map(|t| Vec::with_capacity(t.len()))
                .collect()
        })
        .collect();
    // live[r]: the row (index into `rows`) decoded in batch row r
    let mut live: Vec<usize> = (0..rows.len()).filter(|&k| !text(k).is_empty()).collect();
    let mut decoder: Option<Box<dyn BatchDecoder>> = None;
    let mut logits: Vec<f32> = Vec::new();
    // what the rows' steps read (the parts themselves hold models, which stay on this thread)
    let firsts: Vec<&[f32]> = parts.iter().map(|p| p.first).collect();
    let texts: Vec<&[&[u32]]> = parts.iter().map(|p| p.texts).collect();
    let names: Vec<(usize, usize)> = parts.iter().map(|p| (p.group + 1, p.offset)).collect();
    for i in 0..longest {
        let ready = &logits;
        let stepped: Vec<Result<ForcedStep>> = crate::pool::map(live.len(), |r| {
            let (p, j) = rows[live[r]];
            let row = if i == 0 {
                firsts[p]
            } else {
                &ready[r * vocab..(r + 1) * vocab]
            };
            strategy::forced_step(row, texts[p][j][i]).map_err(|e| {
                anyhow!(
                    "group {}, text {}, token {i}: invalid logits: {e}",
                    names[p].0,
                    names[p].1 + j
                )
            })
        });
        for (&k, s) in live.iter().zip(stepped) {
            let (p, j) = rows[k];
            out[p][j].push(s?);
        }
        // the rows that go on feed their token i; the others end here (as a sample ends after
        // its last token, which is never fed)
        let keep: Vec<usize> = (0..live.len())
            .filter(|&r| text(live[r]).len() > i + 1)
            .collect();
        if keep.is_empty() {
            break;
        }
        let dec = match decoder.as_mut() {
            None => {
                // each row a copy of its part's prefilled state
                let models: Vec<&dyn LanguageModel> = parts.iter().map(|p| p.prefilled).collect();
                let row_parts = keep.iter().map(|&r| rows[live[r]].0);
                decoder.insert(crate::engine::batch_of_rows(
                    &models,
                    row_parts,
                    longest_prompt + longest,
                )?)
            }
            Some(d) => {
                if keep.len() < live.len() {
                    d.retain(&keep)?;
                }
                d
            }
        };
        live = keep.iter().map(|&r| live[r]).collect();
        let tokens: Vec<u32> = live.iter().map(|&k| text(k)[i]).collect();
        let positions: Vec<usize> = live
            .iter()
            .map(|&k| parts[rows[k].0].prompt_len + i)
            .collect();
        drop(std::mem::take(&mut logits));
        logits = dec.step_rows(&tokens, &positions)?;
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

    /// The tiny test model (its folder kept alive with it).
    fn tiny_model() -> (tempfile::TempDir, LoadedModel) {
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
        (dir, model)
    }

    /// Forcing a run's own samples gives back their traces bit for bit, whatever the batch.
    #[test]
    fn forcing_generated_samples_reproduces_their_traces() {
        let (_dir, model) = tiny_model();
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

    /// Several prompts' continuations in shared (ragged) batches give every text the steps it
    /// gets forced alone: prompts of different lengths, texts of different lengths (one empty),
    /// a prompt with no continuation, and one with more than [`BATCH`] (split in two batches).
    #[test]
    fn groups_forced_together_equal_each_text_forced_alone() {
        let (_dir, model) = tiny_model();
        let prompts: Vec<Vec<u32>> = ["the cat sat on the", "once", "a king", "there lived a"]
            .iter()
            .map(|p| prompt_ids(&model, p).unwrap())
            .collect();
        assert!(prompts[0].len() != prompts[1].len());
        let text = |k: usize| -> Vec<u32> {
            (0..3 + k % 9)
                .map(|i| 4 + ((k * 17 + i * 5) % 60) as u32)
                .collect()
        };
        let sets: Vec<Vec<Vec<u32>>> = vec![
            (0..3).map(text).collect(),
            vec![text(3), vec![], text(4)],
            vec![],
            (5..5 + BATCH + 3).map(text).collect(),
        ];
        let groups: Vec<(&[u32], Vec<&[u32]>)> = prompts
            .iter()
            .zip(&sets)
            .map(|(p, ts)| (p.as_slice(), ts.iter().map(Vec::as_slice).collect()))
            .collect();
        let together = force_groups(&model, &groups).unwrap();
        assert_eq!(together.len(), groups.len());
        for (g, (p, ts)) in groups.iter().enumerate() {
            assert_eq!(together[g].len(), ts.len(), "group {g}");
            for (j, t) in ts.iter().enumerate() {
                let alone = force(&model, p, &[t]).unwrap().pop().unwrap();
                let (a, b) = (trace_of(&together[g][j]), trace_of(&alone));
                assert_eq!(a.entropy.len(), t.len(), "group {g}, text {j}");
                assert_eq!(a.entropy, b.entropy, "group {g}, text {j}");
                assert_eq!(a.logprob, b.logprob, "group {g}, text {j}");
                assert_eq!(a.varentropy, b.varentropy, "group {g}, text {j}");
                assert_eq!(a.confidence, b.confidence, "group {g}, text {j}");
            }
        }
    }

    /// The reference scores of several prompts' texts in one pass equal each prompt's texts
    /// scored alone, bit for bit (an empty text among them).
    #[test]
    fn reference_scores_of_groups_equal_each_group_alone() {
        let (_dir, model) = tiny_model();
        let prompts: Vec<Vec<u32>> = ["the cat sat on the", "once"]
            .iter()
            .map(|p| prompt_ids(&model, p).unwrap())
            .collect();
        let texts: Vec<Vec<&str>> = vec![
            vec!["the dog ran", "a cat", ""],
            vec!["there lived a king and a queen", "sat"],
        ];
        let groups: Vec<(&[u32], Vec<&str>)> = prompts
            .iter()
            .zip(&texts)
            .map(|(p, t)| (p.as_slice(), t.clone()))
            .collect();
        let together = reference_scores_groups(&model, "tiny", &groups).unwrap();
        for (g, group) in groups.iter().enumerate() {
            let alone =
                reference_scores_groups(&model, "tiny", std::slice::from_ref(group)).unwrap();
            assert_eq!(together[g].len(), group.1.len());
            for (a, b) in together[g].iter().zip(&alone[0]) {
                assert_eq!(a.logprob, b.logprob, "group {g}");
                assert_eq!(a.entropy, b.entropy, "group {g}");
                assert_eq!((a.error.is_none(), a.model.as_str()), (true, "tiny"));
            }
        }
        assert!(together[0][0].logprob.len() > 1);
        assert!(
            together[0][2].logprob.is_empty(),
            "an empty text has no step"
        );
    }
}
