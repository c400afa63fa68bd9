//! Chat templates: the Jinja templates Hugging Face tokenizers and GGUF files carry, rendered
//! with minijinja (Python string methods through `minijinja-contrib`'s pycompat), with the
//! variables `transformers`' `apply_chat_template` passes: `messages`, `add_generation_prompt`,
//! `bos_token`, `eos_token`, and a `raise_exception` function.
//!
//! A model without a template gets [`DEFAULT_TEMPLATE`], a plain ChatML layout, so chat
//! prompts still work (and say so in `quern generate`'s output).

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

/// Renders `template` over `messages`. Errors name the template's problem (a syntax error,
/// or a `raise_exception` the template called).
pub fn render(
    template: &str,
    messages: &[Message],
    add_generation_prompt: bool,
    bos_token: &str,
    eos_token: &str,
) -> Result<String> {
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
    env.add_template("chat", template)
        .map_err(|e| Error::bad_config("chat_template", format!("not a valid template: {e}")))?;
    let tmpl = env
        .get_template("chat")
        .map_err(|e| Error::bug(format!("template just added: {e}")))?;
    tmpl.render(minijinja::context! {
        messages => messages,
        add_generation_prompt => add_generation_prompt,
        bos_token => bos_token,
        eos_token => eos_token,
    })
    .map_err(|e| Error::bad_config("chat_template", format!("rendering failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_template_is_chatml() {
        let out = render(
            DEFAULT_TEMPLATE,
            &[
                Message::new("user", "Hi"),
                Message::new("assistant", "Hello"),
            ],
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
}
