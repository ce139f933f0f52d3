//! Parquet preference files, as the Hugging Face `datasets` library writes them
//! (tests/fixtures/parquet/make_parquet.py): the same examples as the JSONL they were made
//! from, in every TRL format, and errors that name the file, the row and the column.

use std::path::PathBuf;

use bapo_data::{load_jsonl, load_preferences};

fn fixture(name: &str) -> PathBuf {
    bapo_testkit::workspace_root().join(name)
}

#[test]
fn parquet_files_read_as_the_jsonl_they_were_made_from() {
    for (parquet, jsonl) in [
        (
            "tests/fixtures/parquet/conversational.parquet",
            "tests/fixtures/tiny-chat/preferences.jsonl",
        ),
        (
            "tests/fixtures/parquet/standard.parquet",
            "tests/fixtures/parquet/standard.jsonl",
        ),
        // Columns bapo does not read (a score, bytes) are left alone.
        (
            "tests/fixtures/parquet/extra-columns.parquet",
            "tests/fixtures/parquet/standard.jsonl",
        ),
        // No prompt column: TRL's implicit prompt, the conversations' shared start.
        (
            "tests/fixtures/parquet/implicit.parquet",
            "tests/fixtures/tiny-chat/preferences.jsonl",
        ),
    ] {
        let from_parquet = load_preferences(&fixture(parquet)).unwrap();
        let from_jsonl = load_jsonl(&fixture(jsonl)).unwrap();
        assert_eq!(from_parquet.examples.len(), 32, "{parquet}");
        assert_eq!(from_parquet.examples, from_jsonl.examples, "{parquet}");
        // A JSONL name still reads as JSONL.
        assert_eq!(load_preferences(&fixture(jsonl)).unwrap(), from_jsonl);
    }
}

#[test]
fn parquet_problems_name_the_file_the_row_and_the_column() {
    let wrong = fixture("tests/fixtures/parquet/wrong-type.parquet");
    let err = load_preferences(&wrong).unwrap_err().to_string();
    assert!(
        err.contains(&format!("{}:1:", wrong.display()))
            && err.contains("`chosen`")
            && err.contains("a string or a list of messages"),
        "{err}"
    );
    let bytes = fixture("tests/fixtures/parquet/bytes.parquet");
    let err = load_preferences(&bytes).unwrap_err().to_string();
    assert!(
        err.contains(&format!("{}:1:", bytes.display()))
            && err.contains("`prompt`")
            && err.contains("bytes"),
        "{err}"
    );
    // A file that is not Parquet, named as one.
    let fake = std::env::temp_dir().join(format!("bapo-not-{}.parquet", std::process::id()));
    std::fs::write(&fake, "{\"prompt\": \"p\"}\n").unwrap();
    let err = load_preferences(&fake).unwrap_err().to_string();
    assert!(
        err.contains(&fake.display().to_string()) && err.contains("not a readable Parquet file"),
        "{err}"
    );
    std::fs::remove_file(&fake).ok();
}
