//! Tokenisation with SmolLM2's real tokenizer and ChatML template: EOS ends every completion,
//! no doubled BOS, conversational completions are the template's suffix after the prompt, and
//! TRL's truncation (prompt keeps its end, completions their start, over-long prompts dropped
//! and counted).

use std::path::PathBuf;

use bapo_data::{DropReason, Tokenization, TruncationSettings, load_jsonl, tokenize_dataset};
use bapo_model::{ChatTemplate, GgufFile, tokenizer_from_gguf};

fn file(tag: &str, lines: &[&str]) -> PathBuf {
    let path = std::env::temp_dir().join(format!("bapo-tok-{tag}-{}.jsonl", std::process::id()));
    std::fs::write(&path, lines.join("\n")).unwrap();
    path
}

const EOS: u32 = 2;
const BOS: u32 = 1;

#[test]
fn tokenisation_follows_trl() {
    let Some(gguf) = bapo_testkit::smollm2_gguf() else {
        return;
    };
    let gguf = GgufFile::open(&gguf).unwrap();
    let tokenizer = tokenizer_from_gguf(&gguf).unwrap();
    let template = ChatTemplate::from_gguf(&gguf).unwrap();
    let tokenization = Tokenization {
        tokenizer: &tokenizer,
        chat_template: Some(&template),
        eos_token: EOS,
    };
    let ids = |text: &str| tokenizer.encode(text, false).unwrap().get_ids().to_vec();
    let wide = TruncationSettings {
        max_length: 1024,
        max_prompt_length: None,
    };

    // Standard: separate tokenisation, EOS appended.
    let standard = load_jsonl(&file(
        "std",
        &[r#"{"prompt": "The capital of France is", "chosen": " Paris.", "rejected": " Lyon."}"#],
    ))
    .unwrap();
    let (examples, dropped) = tokenize_dataset(&standard, &tokenization, &wide).unwrap();
    assert!(dropped.is_empty());
    assert_eq!(examples[0].prompt, [504, 3575, 282, 4649, 314]);
    assert_eq!(examples[0].chosen, [ids(" Paris."), vec![EOS]].concat());

    // Conversational: the template's suffix after the prompt; one BOS (<|im_start|>) per turn,
    // never doubled; the completion ends with exactly one <|im_end|>.
    let chat = load_jsonl(&file(
        "chat",
        &[r#"{"prompt": [{"role": "user", "content": "What is the capital of Japan?"}], "chosen": [{"role": "assistant", "content": "Tokyo."}], "rejected": [{"role": "assistant", "content": "Osaka."}]}"#],
    ))
    .unwrap();
    let (examples, _) = tokenize_dataset(&chat, &tokenization, &wide).unwrap();
    let e = &examples[0];
    let prompt_text = tokenizer.decode(&e.prompt, false).unwrap();
    assert!(
        prompt_text.starts_with("<|im_start|>system\n")
            && prompt_text.ends_with("<|im_start|>assistant\n"),
        "{prompt_text:?}"
    );
    assert_ne!(e.prompt[..2], [BOS, BOS]);
    assert_eq!(
        tokenizer.decode(&e.chosen, false).unwrap(),
        "Tokyo.<|im_end|>"
    );
    assert_eq!(e.chosen.iter().filter(|&&t| t == EOS).count(), 1);
    assert_eq!(*e.rejected.last().unwrap(), EOS);

    // Truncation: a 5-token prompt with max_prompt_length 3 keeps its last 3 tokens; with
    // max_length 5 the completions keep their first 2 tokens.
    let long = load_jsonl(&file(
        "long",
        &[
            r#"{"prompt": "The capital of France is", "chosen": " Paris, the city of light.", "rejected": " Lyon."}"#,
            r#"{"prompt": "The capital of France is a long question indeed", "chosen": " Paris.", "rejected": " Lyon."}"#,
        ],
    ))
    .unwrap();
    let tight = TruncationSettings {
        max_length: 5,
        max_prompt_length: Some(3),
    };
    let (examples, dropped) = tokenize_dataset(&long, &tokenization, &tight).unwrap();
    assert_eq!(examples[0].prompt, [282, 4649, 314]);
    assert_eq!(examples[0].chosen, ids(" Paris, the city of light.")[..2]);
    assert_eq!(examples[0].rejected.len(), 2);
    assert!(dropped.is_empty(), "prompts are cut to 3 tokens and fit");

    // Without a prompt limit, a prompt that alone fills max_length is dropped and counted.
    let no_room = TruncationSettings {
        max_length: 6,
        max_prompt_length: None,
    };
    let (examples, dropped) = tokenize_dataset(&long, &tokenization, &no_room).unwrap();
    assert_eq!(examples.len(), 1);
    assert_eq!(dropped.len(), 1);
    assert_eq!(
        (dropped[0].line, dropped[0].reason),
        (2, DropReason::PromptOverBudget)
    );
}

#[test]
fn conversational_data_needs_a_chat_template() {
    let Some(gguf) = bapo_testkit::smollm2_gguf() else {
        return;
    };
    let gguf = GgufFile::open(&gguf).unwrap();
    let tokenizer = tokenizer_from_gguf(&gguf).unwrap();
    let tokenization = Tokenization {
        tokenizer: &tokenizer,
        chat_template: None,
        eos_token: EOS,
    };
    let chat = load_jsonl(&file(
        "notemplate",
        &[r#"{"prompt": [{"role": "user", "content": "Hi"}], "chosen": [{"role": "assistant", "content": "Hello"}], "rejected": [{"role": "assistant", "content": "Bye"}]}"#],
    ))
    .unwrap();
    let limits = TruncationSettings {
        max_length: 64,
        max_prompt_length: None,
    };
    let message = tokenize_dataset(&chat, &tokenization, &limits)
        .unwrap_err()
        .to_string();
    assert!(
        message.contains(":1:") && message.contains("chat template"),
        "{message}"
    );
}

#[test]
fn template_failures_and_empty_prompts_name_the_row() {
    let Some(gguf) = bapo_testkit::smollm2_gguf() else {
        return;
    };
    let gguf = GgufFile::open(&gguf).unwrap();
    let tokenizer = tokenizer_from_gguf(&gguf).unwrap();
    let template = |source: &str| ChatTemplate {
        source: source.into(),
        bos_token: String::new(),
        eos_token: String::new(),
    };
    let limits = TruncationSettings {
        max_length: 64,
        max_prompt_length: None,
    };
    let row = r#"{"prompt": [{"role": "user", "content": "Hi"}], "chosen": [{"role": "assistant", "content": "Hello"}], "rejected": [{"role": "assistant", "content": "Bye"}]}"#;
    let chat = load_jsonl(&file("template-rows", &[row, row])).unwrap();
    let error = |source: &str| {
        let template = template(source);
        let tokenization = Tokenization {
            tokenizer: &tokenizer,
            chat_template: Some(&template),
            eos_token: EOS,
        };
        tokenize_dataset(&chat, &tokenization, &limits)
            .unwrap_err()
            .to_string()
    };
    // A template that refuses: the row and the template are named.
    let refused = error("{{ raise_exception('roles must alternate') }}");
    assert!(
        refused.contains(":1:")
            && refused.contains("chat template failed on this row")
            && refused.contains("roles must alternate"),
        "{refused}"
    );
    // A template that renders the prompt to nothing.
    let empty = error("{% if not add_generation_prompt %}{{ messages[-1].content }}{% endif %}");
    assert!(
        empty.contains(":1:") && empty.contains("the prompt is empty"),
        "{empty}"
    );
    let text = load_jsonl(&file(
        "empty-prompt",
        &[
            r#"{"prompt": "Hi", "chosen": "a", "rejected": "b"}"#,
            r#"{"prompt": "", "chosen": "a", "rejected": "b"}"#,
        ],
    ))
    .unwrap();
    let tokenization = Tokenization {
        tokenizer: &tokenizer,
        chat_template: None,
        eos_token: EOS,
    };
    let empty = tokenize_dataset(&text, &tokenization, &limits)
        .unwrap_err()
        .to_string();
    assert!(
        empty.contains(":2:") && empty.contains("the prompt is empty"),
        "{empty}"
    );
}
