//! Chat templates and conversations: how `{"messages": [{"role", "content"}...]}` records
//! (and prompt/response records, which are a two-turn conversation) become the text of an
//! `sft` row, and which parts of it the loss counts on.
//!
//! Two ways to render, as the user chooses (`quern tokenize`'s `chat_template` and
//! `jinja_template`):
//!
//! - **plain** (the default): the `{prompt}`/`{response}` template. Every assistant turn is
//!   `prefix` (the template up to `{response}`, with the turns before it, system and user,
//!   joined by a blank line in `{prompt}`) followed by the turn and the template's text after
//!   `{response}`; the tokenizer's end-of-text id follows the last assistant turn.
//! - **Jinja**: a Hugging Face chat template (the model's own, from its `tokenizer_config.json`,
//!   `chat_template.jinja` or quern `model.json`), rendered with minijinja (Python string
//!   methods through `minijinja-contrib`'s pycompat) with the variables `transformers`'
//!   `apply_chat_template` passes: `messages`, `add_generation_prompt`, `bos_token`,
//!   `eos_token`, and a `raise_exception` function. An assistant turn's trained text is
//!   what rendering the conversation up to and including that turn adds to rendering the
//!   turns before it with the generation prompt: the turn's content and its end-of-turn
//!   text (`<|im_end|>\n` in ChatML), never the role header, which the model is given at
//!   inference. A template whose renderings are not prefixes of each other cannot be cut this
//!   way, and the conversation is rejected (`chat_template_not_incremental`).
//!
//! Either way every assistant turn is trained and nothing else: system and user turns, role
//! headers and turns after the last assistant turn (dropped: a causal model's loss on the
//! turns before them does not depend on them) are not. The text is given back as
//! [`Segment`]s, encoded one by one, so the prompt of each turn is tokenized exactly as it is
//! at inference.

use std::path::Path;

use quern_core::error::{IoContext, Place};
use quern_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    /// `system`, `user` or `assistant` (templates may accept others).
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Self {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// ChatML, for models that carry no template of their own.
pub const DEFAULT_TEMPLATE: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// A Jinja chat template, parsed once.
#[derive(Debug)]
pub struct ChatTemplate {
    env: minijinja::Environment<'static>,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    /// Parses `source`; `bos_token` and `eos_token` are the texts the template sees under
    /// those names. A syntax error is a `chat_template` configuration error.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self> {
        let mut env = minijinja::Environment::new();
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
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| {
                Error::bad_config("chat_template", format!("not a valid template: {e}"))
            })?;
        Ok(ChatTemplate {
            env,
            bos_token: bos_token.into(),
            eos_token: eos_token.into(),
        })
    }

    /// Renders `messages`. Errors name the template's problem (a `raise_exception` the
    /// template called, an undefined method...).
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let tmpl = self
            .env
            .get_template("chat")
            .map_err(|e| Error::bug(format!("template just added: {e}")))?;
        tmpl.render(minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
        })
        .map_err(|e| Error::bad_config("chat_template", format!("rendering failed: {e}")))
    }

    /// The conversation as segments (see the module docs), or why it cannot be trained on.
    pub fn segments(&self, messages: &[Message]) -> std::result::Result<Vec<Segment>, Reject> {
        let last = last_assistant(messages)?;
        let mut out = Vec::new();
        let mut done = String::new();
        for i in (0..=last).filter(|&i| messages[i].role == ASSISTANT) {
            let before = self
                .render(&messages[..i], true)
                .map_err(|_| Reject::TemplateFailed)?;
            let with = self
                .render(&messages[..=i], false)
                .map_err(|_| Reject::TemplateFailed)?;
            if !before.starts_with(&done) || !with.starts_with(&before) {
                return Err(Reject::NotIncremental);
            }
            out.push(Segment::new(&before[done.len()..], false));
            out.push(Segment::new(&with[before.len()..], true));
            done = with;
        }
        out.retain(|s| !s.text.is_empty());
        Ok(out)
    }
}

/// Renders `template` over `messages` (parsing it first; see [`ChatTemplate`]).
pub fn render(
    template: &str,
    messages: &[Message],
    add_generation_prompt: bool,
    bos_token: &str,
    eos_token: &str,
) -> Result<String> {
    ChatTemplate::new(template, bos_token, eos_token)?.render(messages, add_generation_prompt)
}

const ASSISTANT: &str = "assistant";

/// A piece of a conversation's text, and whether the loss counts on its tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub text: String,
    pub trained: bool,
}

impl Segment {
    pub fn new(text: &str, trained: bool) -> Self {
        Segment {
            text: text.into(),
            trained,
        }
    }
}

/// Why a conversation cannot become an `sft` row (the `reason` in `rejected/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// No assistant turn: nothing to train on.
    NoAssistantTurn,
    /// The messages are not a list of `{"role", "content"}` strings.
    BadMessages,
    /// The Jinja template failed on this conversation (e.g. its `raise_exception`).
    TemplateFailed,
    /// The template's renderings of the conversation's prefixes are not prefixes of each
    /// other, so the assistant turns cannot be cut out of the text.
    NotIncremental,
}

impl Reject {
    pub fn reason(self) -> &'static str {
        match self {
            Reject::NoAssistantTurn => "no_assistant_turn",
            Reject::BadMessages => "bad_messages",
            Reject::TemplateFailed => "chat_template_failed",
            Reject::NotIncremental => "chat_template_not_incremental",
        }
    }
}

fn last_assistant(messages: &[Message]) -> std::result::Result<usize, Reject> {
    messages
        .iter()
        .rposition(|m| m.role == ASSISTANT)
        .ok_or(Reject::NoAssistantTurn)
}

/// The plain rendering (see the module docs): `prefix` holds `{prompt}`, `suffix` follows
/// each response. The end-of-text id, trained, is the caller's to add after the last segment.
pub fn plain_segments(
    prefix: &str,
    suffix: &str,
    messages: &[Message],
) -> std::result::Result<Vec<Segment>, Reject> {
    let last = last_assistant(messages)?;
    let mut out = Vec::new();
    let mut prompt: Vec<&str> = Vec::new();
    for m in &messages[..=last] {
        if m.role == ASSISTANT {
            out.push(Segment::new(
                &prefix.replace("{prompt}", &prompt.join("\n\n")),
                false,
            ));
            out.push(Segment::new(&format!("{}{suffix}", m.content), true));
            prompt.clear();
        } else {
            prompt.push(&m.content);
        }
    }
    out.retain(|s| !s.text.is_empty());
    Ok(out)
}

/// Parses a `messages` value: a JSON array of objects with string `role` and `content`
/// (other keys, such as `name`, are ignored).
pub fn parse_messages(json: &str) -> std::result::Result<Vec<Message>, Reject> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|_| Reject::BadMessages)?;
    v.as_array()
        .ok_or(Reject::BadMessages)?
        .iter()
        .map(|m| match (m["role"].as_str(), m["content"].as_str()) {
            (Some(r), Some(c)) => Ok(Message::new(r, c)),
            _ => Err(Reject::BadMessages),
        })
        .collect()
}

/// Reads a Jinja chat template from `path`: a quern model directory (`model.json`), a
/// Hugging Face model directory (`chat_template.jinja`, or `tokenizer_config.json`'s
/// `chat_template`), one of those JSON files, or a file holding the template itself.
pub fn load_template(path: &Path) -> Result<String> {
    let file = if path.is_dir() {
        ["chat_template.jinja", "model.json", "tokenizer_config.json"]
            .iter()
            .map(|f| path.join(f))
            .find(|p| p.exists())
            .ok_or_else(|| {
                Error::bad_config(
                    "jinja_template",
                    format!(
                        "{} holds no chat_template.jinja, model.json or tokenizer_config.json",
                        path.display()
                    ),
                )
            })?
    } else {
        path.to_path_buf()
    };
    if file.extension().is_some_and(|e| e == "gguf") {
        return Err(Error::bad_config(
            "jinja_template",
            format!(
                "{} is a GGUF file: `quern import` it first and give the model directory",
                file.display()
            ),
        ));
    }
    let text = std::fs::read_to_string(&file).at(&file)?;
    if file.extension().is_none_or(|e| e != "json") {
        return Ok(text);
    }
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::bad_input(Place::file(&file), format!("not JSON: {e}")))?;
    match v.get("chat_template") {
        Some(serde_json::Value::String(t)) => Ok(t.clone()),
        // Hugging Face's named templates: [{"name": "default", "template": ...}, ...].
        Some(serde_json::Value::Array(named)) => named
            .iter()
            .find(|t| t["name"] == "default")
            .and_then(|t| t["template"].as_str())
            .map(str::to_string)
            .ok_or_else(|| {
                Error::bad_input(
                    Place::file(&file),
                    "`chat_template` lists named templates but none named `default`",
                )
            }),
        _ => Err(Error::bad_input(
            Place::file(&file),
            "has no `chat_template` string: the model carries no chat template; leave \
             jinja_template unset to use the plain chat_template",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(turns: &[(&str, &str)]) -> Vec<Message> {
        turns.iter().map(|(r, c)| Message::new(r, c)).collect()
    }

    fn trained(s: &[Segment]) -> Vec<&str> {
        s.iter()
            .filter(|s| s.trained)
            .map(|s| s.text.as_str())
            .collect()
    }

    #[test]
    fn default_template_is_chatml() {
        let out = render(
            DEFAULT_TEMPLATE,
            &conv(&[("user", "Hi"), ("assistant", "Hello")]),
            true,
            "",
            "",
        )
        .unwrap();
        assert_eq!(
            out,
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn python_methods_and_exceptions_work() {
        let t = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('first must be user') }}{% endif %}{{ bos_token }}{{ messages[0]['content'].strip() | upper }}";
        let out = render(t, &[Message::new("user", "  hi  ")], false, "<s>", "").unwrap();
        assert_eq!(out, "<s>HI");
        let err = render(t, &[Message::new("system", "x")], false, "", "")
            .unwrap_err()
            .to_string();
        assert!(err.contains("first must be user"), "{err}");
        let err = render("{% for %}", &[], false, "", "")
            .unwrap_err()
            .to_string();
        assert!(err.contains("chat_template"), "{err}");
    }

    /// Every assistant turn, with its end-of-turn text, is trained, and only those: the
    /// segments put back together are the whole rendering up to the last assistant turn.
    #[test]
    fn jinja_segments_train_every_assistant_turn_and_nothing_else() {
        let t = ChatTemplate::new(DEFAULT_TEMPLATE, "", "").unwrap();
        let c = conv(&[
            ("system", "Be brief."),
            ("user", "Hi"),
            ("assistant", "Hello"),
            ("user", "How are you?"),
            ("assistant", "Fine."),
            ("user", "Bye"),
        ]);
        let s = t.segments(&c).unwrap();
        assert_eq!(trained(&s), ["Hello<|im_end|>\n", "Fine.<|im_end|>\n"]);
        let whole: String = s.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(whole, t.render(&c[..5], false).unwrap());
        assert_eq!(
            s[0].text,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(
            t.segments(&conv(&[("user", "only a question")])),
            Err(Reject::NoAssistantTurn)
        );
        // A template that renders earlier turns differently once more follow.
        let odd = ChatTemplate::new(
            "{% for m in messages %}{% if loop.last %}{{ m['content'] }}{% else %}*{% endif %}{% endfor %}",
            "",
            "",
        )
        .unwrap();
        assert_eq!(
            odd.segments(&conv(&[
                ("user", "a"),
                ("assistant", "b"),
                ("user", "c"),
                ("assistant", "d")
            ])),
            Err(Reject::NotIncremental)
        );
    }

    #[test]
    fn plain_segments_follow_the_prompt_response_template() {
        let c = conv(&[
            ("system", "S"),
            ("user", "U1"),
            ("assistant", "A1"),
            ("user", "U2"),
            ("assistant", "A2"),
            ("user", "trailing"),
        ]);
        let s = plain_segments("<u>{prompt}</u><a>", "</a>", &c).unwrap();
        assert_eq!(
            s,
            vec![
                Segment::new("<u>S\n\nU1</u><a>", false),
                Segment::new("A1</a>", true),
                Segment::new("<u>U2</u><a>", false),
                Segment::new("A2</a>", true),
            ]
        );
        assert_eq!(parse_messages("{\"role\": 1}"), Err(Reject::BadMessages));
        assert_eq!(
            parse_messages(r#"[{"role": "user", "content": null}]"#),
            Err(Reject::BadMessages)
        );
        assert_eq!(
            parse_messages(r#"[{"role": "user", "content": "x", "name": "ann"}]"#).unwrap(),
            conv(&[("user", "x")])
        );
    }

    #[test]
    fn templates_load_from_model_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("tokenizer_config.json"),
            r#"{"chat_template": "T1"}"#,
        )
        .unwrap();
        assert_eq!(load_template(d).unwrap(), "T1");
        std::fs::write(
            d.join("model.json"),
            r#"{"chat_template": [{"name": "tool_use", "template": "X"}, {"name": "default", "template": "T2"}]}"#,
        )
        .unwrap();
        assert_eq!(load_template(d).unwrap(), "T2");
        std::fs::write(d.join("chat_template.jinja"), "T3").unwrap();
        assert_eq!(load_template(d).unwrap(), "T3");
        std::fs::write(d.join("none.json"), "{}").unwrap();
        let e = load_template(&d.join("none.json")).unwrap_err().to_string();
        assert!(e.contains("chat_template"), "{e}");
        let e = load_template(&d.join("m.gguf")).unwrap_err().to_string();
        assert!(e.contains("quern import"), "{e}");
    }
}
