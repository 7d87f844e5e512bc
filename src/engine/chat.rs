//! Chat templates: how an instruction-tuned model's prompts reach it. A model with `chat: true`
//! renders every prompt (a `messages` list, or a `text` taken as one user message) with its own
//! template, with `add_generation_prompt`, as Hugging Face transformers' `apply_chat_template`
//! does, and the rendered string is tokenized without adding special tokens (the template
//! writes them).
//!
//! * **Where the template comes from**: `tokenizer_config.json` beside the model's tokenizer
//!   (`chat_template`, a string or a list of named templates whose `default` is taken; its
//!   `bos_token`/`eos_token`), else the GGUF's `tokenizer.chat_template` with the bos/eos token
//!   strings of the GGUF's own vocabulary.
//! * **The engine**: minijinja (as text-generation-inference and mistral.rs use), set up as
//!   transformers sets up jinja2 (`chat_template_utils._compile_jinja_template`): `trim_blocks`,
//!   `lstrip_blocks`, loop controls, `raise_exception(message)`, `strftime_now(format)`, a
//!   `tojson` filter, and Python's string and list methods (minijinja-contrib's `pycompat`).
//!   `tests/chat.rs` checks the rendered strings against transformers' on committed fixtures
//!   (`scripts/chat-reference.py`).
//! * **Where generation stops**: the end-of-turn token the template writes after an assistant
//!   message ([`ChatTemplate::end_of_turn`]; `<end_of_turn>` for Gemma 3, `<|im_end|>` for
//!   SmolLM2) joins the model's end-of-generation tokens.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

use crate::config::{Message, ModelSpec, Prompt};

/// A model's chat template and the special-token strings it may use.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    /// Where it was read, for messages.
    pub source: String,
    template: String,
    bos: String,
    eos: String,
}

#[derive(Serialize)]
struct Msg<'a> {
    role: &'a str,
    content: &'a str,
}

impl ChatTemplate {
    pub fn new(source: String, template: String, bos: String, eos: String) -> ChatTemplate {
        ChatTemplate {
            source,
            template,
            bos,
            eos,
        }
    }

    /// The template `spec` would render with: `tokenizer_config.json` beside its tokenizer (a
    /// `tokenizer:` file, or the `path:` folder), else the GGUF's own. An error says where it
    /// looked.
    pub fn for_model(spec: &ModelSpec) -> Result<ChatTemplate> {
        let config = spec
            .tokenizer
            .as_ref()
            .and_then(|t| t.parent())
            .map(|d| d.join("tokenizer_config.json"))
            .filter(|p| p.is_file());
        if let Some(path) = &config {
            if let Some(t) = from_tokenizer_config(path)? {
                return Ok(t);
            }
        }
        if let Some(t) = spec.weights.gguf().map(from_gguf).transpose()?.flatten() {
            return Ok(t);
        }
        let looked = match (&config, &spec.tokenizer) {
            (Some(p), _) => format!("{} has no `chat_template`", p.display()),
            (None, Some(t)) => format!("there is no tokenizer_config.json beside {}", t.display()),
            (None, None) => "the model has no tokenizer.json folder".into(),
        };
        match spec.weights.gguf() {
            Some(g) => bail!(
                "no chat template: {looked}, and {} has no `tokenizer.chat_template`; give the model a tokenizer whose folder holds the tokenizer_config.json it was trained with, or leave out `chat: true`",
                g.display()
            ),
            None => bail!(
                "no chat template: {looked}; give the model a tokenizer whose folder holds the tokenizer_config.json (or chat_template.jinja) it was trained with, or leave out `chat: true`"
            ),
        }
    }

    /// The template rendered for `messages`, with `add_generation_prompt`.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let mut env = minijinja::Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        env.add_function("strftime_now", |fmt: String| {
            chrono::Local::now().format(&fmt).to_string()
        });
        env.add_template("chat", &self.template).map_err(|e| {
            anyhow!(
                "the chat template of {} does not parse: {}",
                self.source,
                describe(&e)
            )
        })?;
        let msgs: Vec<Msg> = messages
            .iter()
            .map(|m| Msg {
                role: &m.role,
                content: &m.content,
            })
            .collect();
        let ctx = minijinja::context! {
            messages => msgs,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos,
            eos_token => self.eos,
        };
        env.get_template("chat")
            .and_then(|t| t.render(ctx))
            .map_err(|e| anyhow!("{}", describe(&e)))
    }

    /// The text the template writes right after an assistant message's content, up to the end
    /// of the turn: render a conversation whose reply is a marker and read what follows it.
    pub fn end_of_turn(&self) -> Result<String> {
        const MARK: &str = "\u{1}declab-reply\u{1}";
        let conv = [
            Message {
                role: "user".into(),
                content: "hi".into(),
            },
            Message {
                role: "assistant".into(),
                content: MARK.into(),
            },
        ];
        let text = self.render(&conv, false)?;
        let at = text.find(MARK).ok_or_else(|| {
            anyhow!(
                "the chat template of {} drops an assistant reply",
                self.source
            )
        })?;
        Ok(text[at + MARK.len()..].to_string())
    }
}

/// A minijinja error as transformers' users read jinja2's: the message (a template's own
/// `raise_exception` text as it is), then where.
fn describe(e: &minijinja::Error) -> String {
    let msg = e
        .detail()
        .map(str::to_string)
        .unwrap_or_else(|| e.to_string());
    match e.line() {
        Some(line) if e.kind() != minijinja::ErrorKind::InvalidOperation => {
            format!("{msg} (template line {line})")
        }
        _ => msg,
    }
}

fn from_tokenizer_config(path: &Path) -> Result<Option<ChatTemplate>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    // transformers 4.43 and later save the template beside it as chat_template.jinja
    let jinja = path.with_file_name("chat_template.jinja");
    let template = match v.get("chat_template") {
        None | Some(serde_json::Value::Null) if jinja.is_file() => std::fs::read_to_string(&jinja)
            .with_context(|| format!("cannot read {}", jinja.display()))?,
        None | Some(serde_json::Value::Null) => return Ok(None),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Array(list)) => list
            .iter()
            .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
            .and_then(|t| t.get("template"))
            .and_then(|t| t.as_str())
            .ok_or_else(|| {
                anyhow!(
                    "{}: `chat_template` is a list without a template named \"default\"",
                    path.display()
                )
            })?
            .to_string(),
        Some(_) => bail!("{}: `chat_template` is not a string", path.display()),
    };
    // a special token is a string, or an object whose `content` is the string
    let token = |key: &str| -> String {
        match v.get(key) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(o) => o
                .get("content")
                .and_then(|c| c.as_str())
                .unwrap_or_default()
                .to_string(),
            None => String::new(),
        }
    };
    Ok(Some(ChatTemplate::new(
        path.display().to_string(),
        template,
        token("bos_token"),
        token("eos_token"),
    )))
}

fn from_gguf(path: &Path) -> Result<Option<ChatTemplate>> {
    let (_, ct, _) = super::read_header(path, true)?;
    let md = &ct.metadata;
    let Some(t) = md.get("tokenizer.chat_template") else {
        return Ok(None);
    };
    let template = t
        .to_string()
        .map_err(|_| {
            anyhow!(
                "{}: `tokenizer.chat_template` is not a string",
                path.display()
            )
        })?
        .clone();
    let tokens = md
        .get("tokenizer.ggml.tokens")
        .and_then(|v| v.to_vec().ok())
        .cloned()
        .unwrap_or_default();
    let token = |key: &str| -> String {
        md.get(key)
            .and_then(|v| v.to_u32().ok())
            .and_then(|id| tokens.get(id as usize))
            .and_then(|t| t.to_string().ok())
            .cloned()
            .unwrap_or_default()
    };
    Ok(Some(ChatTemplate::new(
        format!("{} (tokenizer.chat_template)", path.display()),
        template,
        token("tokenizer.ggml.bos_token_id"),
        token("tokenizer.ggml.eos_token_id"),
    )))
}

/// What the model is given for `prompt`: with a template, the rendered conversation (a `text`
/// prompt is one user message) and `false` (add no special tokens: the template wrote them);
/// without, the prompt's text and `true`.
pub fn model_input(template: Option<&ChatTemplate>, prompt: &Prompt) -> Result<(String, bool)> {
    match template {
        None => Ok((prompt.text.clone(), true)),
        Some(t) => {
            let single;
            let messages = match &prompt.messages {
                Some(m) => m.as_slice(),
                None => {
                    single = [Message {
                        role: "user".into(),
                        content: prompt.text.clone(),
                    }];
                    &single
                }
            };
            Ok((t.render(messages, true)?, false))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: &str, content: &str) -> Message {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }

    #[test]
    fn renders_like_jinja2_in_transformers_setup() {
        // trim_blocks and lstrip_blocks: the newline after a block tag and the indentation before
        // it go; Python string methods work; raise_exception stops with its message
        let t = ChatTemplate::new(
            "test".into(),
            "{{ bos_token }}\n{% for m in messages %}\n  {% if m.role == 'system' %}\n{{ m.content.strip() | upper }}|\n  {% else %}\n[{{ m['role'] }}] {{ m.content }}\n  {% endif %}\n{% endfor %}\n{% if add_generation_prompt %}>{% endif %}".into(),
            "<s>".into(),
            "</s>".into(),
        );
        let out = t
            .render(&[msg("system", " be brief "), msg("user", "hi")], true)
            .unwrap();
        // (jinja2 3.1.6 under transformers 4.57.1 renders the same string)
        assert_eq!(out, "<s>\nBE BRIEF|\n[user] hi\n>");
        let bad = ChatTemplate::new(
            "test".into(),
            "{% if messages|length > 1 %}{{ raise_exception('one message only') }}{% endif %}ok"
                .into(),
            String::new(),
            String::new(),
        );
        assert_eq!(bad.render(&[msg("user", "a")], true).unwrap(), "ok");
        let e = bad
            .render(&[msg("user", "a"), msg("user", "b")], true)
            .unwrap_err();
        assert_eq!(e.to_string(), "one message only");
    }

    #[test]
    fn the_end_of_turn_is_what_follows_a_reply() {
        let t = ChatTemplate::new(
            "test".into(),
            "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
                .into(),
            String::new(),
            String::new(),
        );
        assert_eq!(t.end_of_turn().unwrap(), "<|im_end|>\n");
    }
}
