//! The knowledge probe loads from the committed file, and every malformed line is an error
//! naming the file, the line and the field.

use bapo_data::{DataError, load_knowledge_probe};

fn write(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("bapo-probe-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn the_committed_probe_loads() {
    let path = bapo_testkit::workspace_root().join("data/personalised/knowledge.jsonl");
    let items = load_knowledge_probe(&path).unwrap();
    assert!(items.len() >= 300);
    let first = &items[0];
    assert_eq!(first.entity, "Afghanistan");
    assert_eq!(first.kind, "capital");
    assert_eq!(first.item.question, "The capital of Afghanistan is");
    assert_eq!(first.item.choices[first.item.correct], "Kabul");
}

#[test]
fn malformed_lines_name_the_file_line_and_field() {
    let good = r#"{"entity":"Chad","kind":"capital","prompt":"The capital of Chad is","choices":["N'Djamena","Niamey"],"correct":0}"#;
    let cases = [
        (
            r#"{"entity":"Chad","kind":"capital","prompt":"p","choices":["a","b"],"correct":2}"#,
            "`correct` is 2 but there are 2 choices",
        ),
        (
            r#"{"entity":"Chad","kind":"capital","prompt":"p","choices":["a","b"]}"#,
            "missing field `correct`",
        ),
        (
            r#"{"entity":"Chad","kind":"capital","prompt":"p","choices":"a","correct":0}"#,
            "field `choices` has the wrong type",
        ),
        (
            r#"{"kind":"capital","prompt":"p","choices":["a","b"],"correct":0}"#,
            "missing field `entity`",
        ),
        ("{not json", "not valid JSON"),
    ];
    for (i, (bad, expected)) in cases.iter().enumerate() {
        let path = write(&format!("bad{i}.jsonl"), &format!("{good}\n\n{bad}\n"));
        let err = load_knowledge_probe(&path).unwrap_err().to_string();
        assert!(
            err.contains(&format!("{}:3:", path.display())) && err.contains(expected),
            "{err}"
        );
    }
    let empty = write("empty.jsonl", "\n");
    assert!(matches!(
        load_knowledge_probe(&empty),
        Err(DataError::Empty { .. })
    ));
    let missing = std::env::temp_dir().join("bapo-no-such-probe.jsonl");
    assert!(
        load_knowledge_probe(&missing)
            .unwrap_err()
            .to_string()
            .contains("bapo-no-such-probe.jsonl")
    );
}
