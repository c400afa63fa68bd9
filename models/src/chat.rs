//! Chat templates: the Jinja templates Hugging Face tokenizers and GGUF files carry. They live
//! in `quern-tokenize` (`quern_tokenize::chat`), since `quern tokenize` renders conversations
//! for `sft` rows with them and a data crate cannot depend on this one; re-exported here for
//! generation.
//!
//! A model without a template gets [`DEFAULT_TEMPLATE`], a plain ChatML layout, so chat
//! prompts still work (and say so in `quern generate`'s output).

pub use quern_tokenize::chat::{render, ChatTemplate, Message, DEFAULT_TEMPLATE};
