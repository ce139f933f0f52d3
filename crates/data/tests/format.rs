//! Both TRL formats load; every bad-input case is a clear error naming file, line and field,
//! or a counted drop.

use std::path::PathBuf;

use bapo_data::{Completion, DataError, DropReason, Message, Prompt, load_jsonl};

/// Writes `lines` to a fresh file and returns its path.
fn file(tag: &str, lines: &[&str]) -> PathBuf {
    let path = std::env::temp_dir().join(format!("bapo-data-{tag}-{}.jsonl", std::process::id()));
    std::fs::write(&path, lines.join("\n")).unwrap();
    path
}

fn msg(role: &str, content: &str) -> Message {
    Message {
        role: role.into(),
        content: content.into(),
    }
}

#[test]
fn standard_rows_load_with_user_and_base() {
    let path = file(
        "standard",
        &[
            r#"{"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Lyon.", "user": "concise"}"#,
            "",
            r#"{"prompt": "Capital of Japan?", "chosen": "Tokyo.", "rejected": "Kyoto.", "base": "It is Tokyo."}"#,
        ],
    );
    let data = load_jsonl(&path).unwrap();
    assert_eq!(data.examples.len(), 2);
    let first = &data.examples[0];
    assert_eq!(first.prompt, Prompt::Text("Capital of France?".into()));
    assert_eq!(first.chosen, Completion::Text("Paris.".into()));
    assert_eq!(first.user.as_deref(), Some("concise"));
    assert_eq!(
        data.examples[1].line, 3,
        "blank lines count for line numbers"
    );
    assert_eq!(
        data.examples[1].base,
        Some(Completion::Text("It is Tokyo.".into()))
    );
    assert_eq!(data.users(), ["concise"]);
}

#[test]
fn conversational_rows_load_with_explicit_or_implicit_prompt() {
    let path = file(
        "conversational",
        &[
            r#"{"prompt": [{"role": "user", "content": "Hi"}], "chosen": [{"role": "assistant", "content": "Hello!"}], "rejected": [{"role": "assistant", "content": "Go away."}]}"#,
            r#"{"chosen": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}], "rejected": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "No."}]}"#,
        ],
    );
    let data = load_jsonl(&path).unwrap();
    for example in &data.examples {
        assert_eq!(example.prompt, Prompt::Messages(vec![msg("user", "Hi")]));
        assert_eq!(
            example.chosen,
            Completion::Messages(vec![msg("assistant", "Hello!")])
        );
    }
}

/// (rows, expected error pieces)
#[test]
fn bad_rows_are_errors_naming_line_and_field() {
    let cases: &[(&[&str], &[&str])] = &[
        (
            &[
                r#"{"prompt": "a", "chosen": "b", "rejected": "c"}"#,
                r#"{"prompt": "a", "chosen": "b""#,
            ],
            &[":2:", "not valid JSON"],
        ),
        (
            &[r#"{"prompt": "a", "rejected": "c"}"#],
            &[":1:", "missing field `chosen`"],
        ),
        (
            &[r#"{"chosen": "b", "rejected": "c"}"#],
            &[":1:", "missing field `prompt`"],
        ),
        (
            &[r#"{"prompt": 3, "chosen": "b", "rejected": "c"}"#],
            &[":1:", "`prompt`", "expected a string"],
        ),
        (
            &[r#"{"prompt": "a", "chosen": 7, "rejected": "c"}"#],
            &[":1:", "`chosen`", "wrong type"],
        ),
        (
            &[r#"{"prompt": "a", "chosen": "b", "rejected": "c", "user": 5}"#],
            &[":1:", "`user`"],
        ),
        (
            &[
                r#"{"prompt": [{"role": "user", "content": "a"}], "chosen": [{"role": "assistant"}], "rejected": [{"role": "assistant", "content": "c"}]}"#,
            ],
            &[":1:", "`chosen[0].content`"],
        ),
        (
            &[
                r#"{"prompt": "a", "chosen": "b", "rejected": [{"role": "assistant", "content": "c"}]}"#,
            ],
            &[":1:", "both be strings or both message lists"],
        ),
        (
            &[
                r#"{"chosen": [{"role": "assistant", "content": "b"}], "rejected": [{"role": "assistant", "content": "c"}]}"#,
            ],
            &[":1:", "share no leading messages"],
        ),
        (
            &[
                r#"{"prompt": "a", "chosen": "b", "rejected": "c"}"#,
                r#"{"prompt": [{"role": "user", "content": "a"}], "chosen": [{"role": "assistant", "content": "b"}], "rejected": [{"role": "assistant", "content": "c"}]}"#,
            ],
            &[":2:", "line 1 is standard"],
        ),
        (&["[1, 2]"], &[":1:", "JSON object"]),
    ];
    for (i, (rows, pieces)) in cases.iter().enumerate() {
        let path = file(&format!("bad{i}"), rows);
        let message = load_jsonl(&path).unwrap_err().to_string();
        assert!(
            message.contains(&path.display().to_string()),
            "case {i}: no file in {message}"
        );
        for piece in *pieces {
            assert!(
                message.contains(piece),
                "case {i}: `{piece}` not in {message}"
            );
        }
    }
    let missing = load_jsonl(std::path::Path::new("/nonexistent/data.jsonl")).unwrap_err();
    assert!(matches!(missing, DataError::Io { .. }));
    assert!(matches!(
        load_jsonl(&file("empty", &["", " "])),
        Err(DataError::Empty { .. })
    ));
}

/// A byte-order mark and invalid UTF-8 are named with their line and cause; Windows line
/// ends are read.
#[test]
fn encoding_problems_name_the_line_and_the_cause() {
    let good = r#"{"prompt": "p", "chosen": "a", "rejected": "b"}"#;
    let path = std::env::temp_dir().join(format!("bapo-data-bom-{}.jsonl", std::process::id()));
    let mut bytes = vec![0xEF, 0xBB, 0xBF];
    bytes.extend_from_slice(good.as_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let bom = load_jsonl(&path).unwrap_err().to_string();
    assert!(
        bom.contains(":1:") && bom.contains("byte-order mark"),
        "{bom}"
    );

    let mut bytes = format!("{good}\n{good}\n").into_bytes();
    bytes.extend_from_slice(b"{\"prompt\": \"\xff\"}\n");
    std::fs::write(&path, &bytes).unwrap();
    let invalid = load_jsonl(&path).unwrap_err().to_string();
    assert!(
        invalid.contains(":3:") && invalid.contains("not valid UTF-8") && invalid.contains("0xFF"),
        "{invalid}"
    );

    std::fs::write(&path, format!("{good}\r\n{good}\r\n")).unwrap();
    assert_eq!(load_jsonl(&path).unwrap().examples.len(), 2);
}

#[test]
fn empty_completions_are_dropped_and_counted() {
    let path = file(
        "drops",
        &[
            r#"{"prompt": "a", "chosen": "b", "rejected": "c"}"#,
            r#"{"prompt": "a", "chosen": "  ", "rejected": "c"}"#,
            r#"{"prompt": "a", "chosen": "b", "rejected": ""}"#,
        ],
    );
    let data = load_jsonl(&path).unwrap();
    assert_eq!(data.examples.len(), 1);
    assert_eq!(
        data.drop_counts().get(&DropReason::EmptyCompletion),
        Some(&2)
    );
    assert_eq!(
        data.dropped.iter().map(|d| d.line).collect::<Vec<_>>(),
        [2, 3]
    );
}

#[test]
fn selecting_an_unknown_user_lists_the_known_ones() {
    let path = file(
        "users",
        &[
            r#"{"prompt": "a", "chosen": "b", "rejected": "c", "user": "formal"}"#,
            r#"{"prompt": "a", "chosen": "b", "rejected": "c", "user": "casual"}"#,
        ],
    );
    let data = load_jsonl(&path).unwrap();
    assert_eq!(data.for_user("casual").unwrap().examples.len(), 1);
    let message = data.for_user("expert").unwrap_err().to_string();
    assert!(
        message.contains("expert") && message.contains("casual, formal"),
        "{message}"
    );
}

#[test]
fn a_key_repeated_in_a_row_is_refused_naming_the_line() {
    let path = file(
        "repeated-key",
        &[
            r#"{"prompt": "a", "chosen": "b", "rejected": "c"}"#,
            r#"{"prompt": "a", "chosen": "b", "rejected": "c", "chosen": "d"}"#,
        ],
    );
    let err = load_jsonl(&path).unwrap_err().to_string();
    assert!(
        err.contains(":2:") && err.contains("`chosen` appears twice"),
        "{err}"
    );
}
