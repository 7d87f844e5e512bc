//! Chat prompts on the real models: declab renders conversations as Hugging Face transformers'
//! `apply_chat_template` does (committed fixtures from `scripts/chat-reference.py`), feeds the
//! rendered text to the model, and stops at the template's end-of-turn token.

mod common;

use std::path::PathBuf;

use common::{declab, read_records, real_models_dir};
use declab::config::{Message, ModelSpec, Prompt};
use declab::engine::chat::ChatTemplate;

fn fixture() -> serde_json::Value {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chat/chat-reference.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn gemma() -> ModelSpec {
    let m = real_models_dir();
    ModelSpec {
        id: "gemma3-270m".into(),
        weights: declab::config::Weights::Gguf(m.join("gemma-3-270m/gemma-3-270m-q4_k_m.gguf")),
        tokenizer: Some(m.join("gemma-3-270m/tokenizer.json")),
        eos_tokens: vec![],
        chat: true,
    }
}

fn smollm2() -> ModelSpec {
    ModelSpec {
        id: "smollm2-135m".into(),
        weights: declab::config::Weights::Gguf(
            real_models_dir().join("smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf"),
        ),
        tokenizer: None,
        eos_tokens: vec![],
        chat: true,
    }
}

fn messages(v: &serde_json::Value) -> Vec<Message> {
    serde_json::from_value(v.clone()).unwrap()
}

#[test]
fn rendered_conversations_equal_transformers_apply_chat_template() {
    let fx = fixture();
    let conversations = fx["conversations"].as_object().unwrap();
    for spec in [gemma(), smollm2()] {
        let t = ChatTemplate::for_model(&spec).unwrap();
        let cases = fx["models"][&spec.id].as_object().unwrap();
        assert_eq!(cases.len(), conversations.len());
        for (name, want) in cases {
            let got = t.render(&messages(&conversations[name]), true);
            match (want.get("text"), want.get("error")) {
                (Some(text), _) => assert_eq!(
                    got.unwrap(),
                    text.as_str().unwrap(),
                    "{} {name} ({})",
                    spec.id,
                    fx["reference"]
                ),
                (_, Some(err)) => {
                    let e = got.expect_err(&format!("{} {name} should fail", spec.id));
                    assert_eq!(e.to_string(), err.as_str().unwrap(), "{} {name}", spec.id);
                }
                _ => panic!("bad fixture entry {name}"),
            }
        }
        // where each template comes from
        let from = if spec.tokenizer.is_some() {
            "tokenizer_config.json"
        } else {
            "(tokenizer.chat_template)"
        };
        assert!(t.source.ends_with(from), "{}", t.source);
    }
}

#[test]
fn a_chat_grid_feeds_the_rendered_prompt_and_stops_at_the_end_of_turn() {
    let dir = tempfile::tempdir().unwrap();
    let fx = fixture();
    let m = real_models_dir();
    let conv = serde_json::to_string(&fx["conversations"]["multi_turn"]).unwrap();
    let user = fx["conversations"]["user"][0]["content"].as_str().unwrap();
    let yaml = format!(
        "name: chat\nseed: 5\nmodels:\n  - {{id: gemma3-270m, gguf: {}, tokenizer: {}, chat: true}}\n  - {{id: smollm2-135m, gguf: {}, chat: true}}\nprompts:\n  - {{id: multi_turn, messages: {conv}}}\n  - {{id: user, text: {user:?}}}\nsamples: 2\nmax_new_tokens: 96\nstrategies:\n  - kind: greedy\n  - {{kind: min_p, min_p: 0.1, temperature: 0.7}}\n",
        m.join("gemma-3-270m/gemma-3-270m-q4_k_m.gguf").display(),
        m.join("gemma-3-270m/tokenizer.json").display(),
        m.join("smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf").display(),
    );
    let cfg = dir.path().join("chat.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    let out = dir.path().join("out");
    declab()
        .args(["run", "--no-progress"])
        .arg(&cfg)
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let recs = read_records(&out.join("samples.jsonl"));
    assert_eq!(recs.len(), 2 * 2 * 2 * 2);
    let mut stopped = 0;
    for r in &recs {
        // what reached the model is transformers' rendering of the prompt (a text prompt is
        // one user message), and `prompt` keeps the last message
        let want = &fx["models"][&r.model][&r.prompt_id]["text"];
        assert_eq!(
            r.chat_prompt.as_deref(),
            want.as_str(),
            "{} {}",
            r.model,
            r.prompt_id
        );
        let last = if r.prompt_id == "user" {
            user
        } else {
            "Tell me a joke about socks."
        };
        assert_eq!(r.prompt, last);
        assert!(r.prompt_tokens > 10);
        for marker in [
            "<end_of_turn>",
            "<|im_end|>",
            "<start_of_turn>",
            "<|im_start|>",
        ] {
            assert!(!r.text.contains(marker), "{}: {:?}", r.model, r.text);
        }
        if r.stop_reason == "eos" {
            stopped += 1;
        }
    }
    // replies end with the turn (a few may run to max_new_tokens)
    assert!(
        stopped >= recs.len() / 2,
        "{stopped} of {} ended their turn",
        recs.len()
    );
    // the manifest records that these models are chat models
    let manifest = std::fs::read_to_string(out.join("manifest.json")).unwrap();
    assert!(manifest.contains("\"chat\": true"), "{manifest}");
}

#[test]
fn bos_is_not_added_twice_and_the_prompt_tokens_are_the_rendered_texts() {
    let model = declab::engine::load(&gemma(), &candle_core::Device::Cpu).unwrap();
    let p = Prompt {
        id: "p".into(),
        text: "Hi!".into(),
        messages: None,
    };
    let (ids, rendered) = model.encode_prompt(&p).unwrap();
    let rendered = rendered.unwrap();
    assert!(
        rendered.starts_with("<bos><start_of_turn>user\nHi!"),
        "{rendered}"
    );
    let bos = model.tokenizer.token_to_id("<bos>").unwrap();
    assert_eq!(ids[0], bos);
    assert_ne!(ids[1], bos, "one <bos>, written by the template");
    let sot = model.tokenizer.token_to_id("<start_of_turn>").unwrap();
    assert_eq!(
        ids[1], sot,
        "special tokens in the rendered text are single tokens"
    );
    let eot = model.tokenizer.token_to_id("<end_of_turn>").unwrap();
    assert!(model.eos_ids.contains(&eot));
}
