//! Column names and Arrow schemas of tokenized shards, one schema per objective.
//!
//! Kept in one place because three parties read these shards: the [`crate::reader`] the
//! trainer uses, the exports, and outside tools (pyarrow, DuckDB, `quern sql`). Every row
//! keeps the ids of the documents it came from (`doc_ids`), so a sequence can always be
//! traced back to its sources.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Int32Builder, Int64Builder, Int8Builder, ListBuilder, RecordBatch, StringBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::meta::Objective;

/// Packed rows: `seq_len + 1` token ids.
pub const TOKENS: &str = "tokens";
/// Ids of the documents that contributed to the row, in order of appearance.
pub const DOC_IDS: &str = "doc_ids";
/// Packed rows: positions in `tokens` (packed `sft`: in `input_ids`) where a document starts.
pub const DOC_STARTS: &str = "doc_starts";
/// `sft`/`cls`: the model input.
pub const INPUT_IDS: &str = "input_ids";
/// `sft`: 1 where the loss counts (the response), 0 elsewhere.
pub const LOSS_MASK: &str = "loss_mask";
/// `cls`: the class id (index into `meta.json`'s `labels`).
pub const LABEL: &str = "label";
/// `nsp`: 0 on `[CLS]`, A and the first `[SEP]`; 1 on B and the last `[SEP]`.
pub const TOKEN_TYPE_IDS: &str = "token_type_ids";
/// `nsp`: 0 when B follows A in its document, 1 when B comes from another document.
pub const NEXT_SENTENCE_LABEL: &str = "next_sentence_label";
/// `rm`/`dpo`: the prompt, and the preferred and dispreferred completions.
pub const PROMPT_IDS: &str = "prompt_ids";
pub const CHOSEN_IDS: &str = "chosen_ids";
pub const REJECTED_IDS: &str = "rejected_ids";

fn list(name: &str, item: DataType) -> Field {
    Field::new(
        name,
        DataType::List(Arc::new(Field::new_list_field(item, true))),
        false,
    )
}

/// The schema of a split's shards for `objective`.
pub fn token_schema(objective: Objective) -> SchemaRef {
    let fields = match objective {
        Objective::Clm | Objective::Mlm => {
            vec![
                list(TOKENS, DataType::Int32),
                list(DOC_IDS, DataType::Utf8),
                list(DOC_STARTS, DataType::Int32),
            ]
        }
        Objective::Sft => {
            vec![
                list(INPUT_IDS, DataType::Int32),
                list(LOSS_MASK, DataType::Int8),
                list(DOC_IDS, DataType::Utf8),
            ]
        }
        Objective::Cls => {
            vec![
                list(INPUT_IDS, DataType::Int32),
                Field::new(LABEL, DataType::Int64, false),
                list(DOC_IDS, DataType::Utf8),
            ]
        }
        Objective::Nsp => vec![
            list(INPUT_IDS, DataType::Int32),
            list(TOKEN_TYPE_IDS, DataType::Int8),
            Field::new(NEXT_SENTENCE_LABEL, DataType::Int64, false),
            list(DOC_IDS, DataType::Utf8),
        ],
        Objective::Rm | Objective::Dpo => vec![
            list(PROMPT_IDS, DataType::Int32),
            list(CHOSEN_IDS, DataType::Int32),
            list(REJECTED_IDS, DataType::Int32),
            list(DOC_IDS, DataType::Utf8),
        ],
    };
    Arc::new(Schema::new(fields))
}

/// The schema of a split's shards: [`token_schema`], with `doc_starts` added for packed
/// `sft` rows (several whole conversations per row; `packed` is `meta.json`'s `packed`).
pub fn split_schema(objective: Objective, packed: bool) -> SchemaRef {
    let schema = token_schema(objective);
    if !(packed && objective == Objective::Sft) {
        return schema;
    }
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(list(DOC_STARTS, DataType::Int32));
    Arc::new(Schema::new(fields))
}

/// Builds a batch of tokenized rows for one objective: the writer appends rows as it packs
/// them and cuts a batch every few thousand rows.
pub struct RowBuilder {
    objective: Objective,
    a: ListBuilder<Int32Builder>,
    b: ListBuilder<Int32Builder>,
    c: ListBuilder<Int32Builder>,
    mask: ListBuilder<Int8Builder>,
    label: Int64Builder,
    doc_ids: ListBuilder<StringBuilder>,
    rows: usize,
    /// `sft`: rows pack several conversations and carry `doc_starts` ([`split_schema`]).
    packed: bool,
}

impl RowBuilder {
    pub fn new(objective: Objective) -> Self {
        RowBuilder {
            objective,
            a: ListBuilder::new(Int32Builder::new()),
            b: ListBuilder::new(Int32Builder::new()),
            c: ListBuilder::new(Int32Builder::new()),
            mask: ListBuilder::new(Int8Builder::new()),
            label: Int64Builder::new(),
            doc_ids: ListBuilder::new(StringBuilder::new()),
            rows: 0,
            packed: false,
        }
    }

    /// Rows of `split_schema(objective, packed)`: with `packed`, `sft` rows hold several
    /// conversations and are added with [`push_sft_packed`](Self::push_sft_packed).
    pub fn with_packed(mut self, packed: bool) -> Self {
        self.packed = packed && self.objective == Objective::Sft;
        self
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    fn ids<S: AsRef<str>>(&mut self, doc_ids: &[S]) {
        for d in doc_ids {
            self.doc_ids.values().append_value(d.as_ref());
        }
        self.doc_ids.append(true);
        self.rows += 1;
    }

    /// `clm`/`mlm`: a packed sequence, its documents and where each starts.
    pub fn push_packed<S: AsRef<str>>(
        &mut self,
        tokens: &[i32],
        doc_ids: &[S],
        doc_starts: &[i32],
    ) {
        debug_assert!(self.objective.is_packed());
        self.a.values().append_slice(tokens);
        self.a.append(true);
        self.c.values().append_slice(doc_starts);
        self.c.append(true);
        self.ids(doc_ids);
    }

    /// `sft`: input ids and the loss mask (same length).
    pub fn push_sft<S: AsRef<str>>(&mut self, input_ids: &[i32], loss_mask: &[i8], doc_ids: &[S]) {
        debug_assert_eq!(input_ids.len(), loss_mask.len());
        self.a.values().append_slice(input_ids);
        self.a.append(true);
        self.mask.values().append_slice(loss_mask);
        self.mask.append(true);
        self.ids(doc_ids);
    }

    /// Packed `sft`: several whole conversations end to end, their loss mask, their
    /// document ids and where each starts in `input_ids` (the first at 0).
    pub fn push_sft_packed<S: AsRef<str>>(
        &mut self,
        input_ids: &[i32],
        loss_mask: &[i8],
        doc_ids: &[S],
        doc_starts: &[i32],
    ) {
        debug_assert!(self.packed);
        debug_assert_eq!(doc_ids.len(), doc_starts.len());
        self.c.values().append_slice(doc_starts);
        self.c.append(true);
        self.push_sft(input_ids, loss_mask, doc_ids);
    }

    /// `cls`: input ids and the class id.
    pub fn push_cls<S: AsRef<str>>(&mut self, input_ids: &[i32], label: i64, doc_ids: &[S]) {
        self.a.values().append_slice(input_ids);
        self.a.append(true);
        self.label.append_value(label);
        self.ids(doc_ids);
    }

    /// `nsp`: `[CLS] A [SEP] B [SEP]`, its token types (same length) and the label; `doc_ids`
    /// names A's document, then B's when it is another.
    pub fn push_nsp<S: AsRef<str>>(
        &mut self,
        input_ids: &[i32],
        token_type_ids: &[i8],
        label: i64,
        doc_ids: &[S],
    ) {
        debug_assert_eq!(input_ids.len(), token_type_ids.len());
        self.a.values().append_slice(input_ids);
        self.a.append(true);
        self.mask.values().append_slice(token_type_ids);
        self.mask.append(true);
        self.label.append_value(label);
        self.ids(doc_ids);
    }

    /// `rm`/`dpo`: prompt, chosen and rejected completions.
    pub fn push_pref<S: AsRef<str>>(
        &mut self,
        prompt: &[i32],
        chosen: &[i32],
        rejected: &[i32],
        doc_ids: &[S],
    ) {
        self.a.values().append_slice(prompt);
        self.a.append(true);
        self.b.values().append_slice(chosen);
        self.b.append(true);
        self.c.values().append_slice(rejected);
        self.c.append(true);
        self.ids(doc_ids);
    }

    /// The rows appended since the last call, as a batch of [`token_schema`].
    pub fn finish(&mut self) -> quern_core::Result<RecordBatch> {
        let schema = split_schema(self.objective, self.packed);
        let doc_ids: ArrayRef = Arc::new(self.doc_ids.finish());
        let cols: Vec<ArrayRef> = match self.objective {
            Objective::Clm | Objective::Mlm => vec![
                Arc::new(self.a.finish()),
                doc_ids,
                Arc::new(self.c.finish()),
            ],
            Objective::Sft if self.packed => vec![
                Arc::new(self.a.finish()),
                Arc::new(self.mask.finish()),
                doc_ids,
                Arc::new(self.c.finish()),
            ],
            Objective::Sft => vec![
                Arc::new(self.a.finish()),
                Arc::new(self.mask.finish()),
                doc_ids,
            ],
            Objective::Cls => vec![
                Arc::new(self.a.finish()),
                Arc::new(self.label.finish()),
                doc_ids,
            ],
            Objective::Nsp => vec![
                Arc::new(self.a.finish()),
                Arc::new(self.mask.finish()),
                Arc::new(self.label.finish()),
                doc_ids,
            ],
            Objective::Rm | Objective::Dpo => {
                vec![
                    Arc::new(self.a.finish()),
                    Arc::new(self.b.finish()),
                    Arc::new(self.c.finish()),
                    doc_ids,
                ]
            }
        };
        self.rows = 0;
        Ok(RecordBatch::try_new(schema, cols)?)
    }
}
