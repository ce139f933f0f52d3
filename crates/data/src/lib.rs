//! # bapo-data: preference data
//!
//! Reads the formats TRL users already have, in JSON Lines or Parquet ([`load_preferences`]):
//! "standard" rows with `prompt` / `chosen` / `rejected` strings, and "conversational" rows
//! with message lists (the chat template is applied at tokenisation), including TRL's implicit prompt (chosen and
//! rejected are whole conversations whose shared prefix is the prompt). Optional fields: `user`
//! (who holds this preference) and `base` (a base response supplied by the user).
//!
//! Every problem names the file, the line and the field. Rows that are valid but unusable
//! (an empty completion; later, a prompt over the length budget) are dropped and counted with
//! their reason, never silently.

pub mod batch;
mod error;
pub mod eval;
pub mod format;
mod json;
mod parquet_rows;
pub mod probe;
pub mod tokenize;

pub use batch::{
    ExampleResponses, Packing, PreferenceBatch, ScoringInput, Slot, epoch_order, split_by_entity,
};
pub use error::DataError;
pub use eval::{
    FactItem, MultipleChoiceItem, PreferenceItem, load_fact_sample, load_hhh_alignment,
    load_multiple_choice, unavailable_note, unavailable_reason,
};
pub use format::{
    Completion, Dataset, DropReason, DroppedRow, Message, PreferenceExample, Prompt, is_parquet,
    load_jsonl, load_preference_files, load_preferences,
};
pub use probe::{BUILT_IN_PROBE_PATH, ProbeItem, built_in_knowledge_probe, load_knowledge_probe};
pub use tokenize::{Tokenization, TokenizedExample, TruncationSettings, tokenize_dataset};
