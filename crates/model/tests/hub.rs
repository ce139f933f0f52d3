//! Models by Hugging Face id, from a hub cache laid out as `huggingface_hub` lays it out:
//! `models--owner--name/blobs/<sha256>`, `snapshots/<commit>/<file>` (links to the blobs) and
//! `refs/<branch>` (the commit). Offline only: nothing here reaches the network.

use std::path::{Path, PathBuf};

use bapo_model::hub::{ModelId, resolve_in};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// A hub cache in a temporary folder holding the tiny chat fixture as `bapo-test/tiny-chat`
/// at `COMMIT`, without the files in `leave_out`.
fn hub_cache(tag: &str, leave_out: &[&str]) -> PathBuf {
    let cache = std::env::temp_dir().join(format!("bapo-hub-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    let fixture = bapo_testkit::workspace_root().join("tests/fixtures/tiny-chat");
    let files: Vec<&str> = [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    .into_iter()
    .filter(|f| !leave_out.contains(f))
    .collect();
    bapo_testkit::hub_cache(&cache, "bapo-test/tiny-chat", &fixture, &files, COMMIT);
    cache
}

#[test]
fn model_ids_parse_and_paths_do_not() {
    assert_eq!(
        ModelId::parse("HuggingFaceTB/SmolLM2-135M-Instruct"),
        Some(ModelId {
            id: "HuggingFaceTB/SmolLM2-135M-Instruct".into(),
            revision: "main".into()
        })
    );
    assert_eq!(
        ModelId::parse("owner/name@v1.0").map(|m| m.revision),
        Some("v1.0".into())
    );
    for path in [
        "model.gguf",
        "./runs/x",
        "/abs/path",
        "a/b/c",
        "a/",
        "../x",
        "a/b@",
    ] {
        assert_eq!(ModelId::parse(path), None, "{path}");
    }
    assert_eq!(
        ModelId::parse("owner/name@refs/pr/1").map(|m| m.revision),
        Some("refs/pr/1".into())
    );
}

/// A revision is joined to the hub cache's folders, so one that is a path out of it is refused
/// by name, before any folder is looked at (issue #26: `own/tiny@../../../../tmp/evil` loaded
/// a model from outside the cache).
#[test]
fn a_revision_that_is_a_path_is_refused() {
    let cache = hub_cache("revision", &[]);
    // A model the hub cache would find at `snapshots/<revision>` after `..` steps.
    let outside = cache
        .join("models--bapo-test--tiny-chat/snapshots")
        .join(COMMIT);
    let up = format!(
        "bapo-test/tiny-chat@../../../{}",
        outside.file_name().unwrap().to_string_lossy()
    );
    let absolute = format!("bapo-test/tiny-chat@{}", outside.display());
    for spec in [
        up.as_str(),
        absolute.as_str(),
        "bapo-test/tiny-chat@a//b",
        "bapo-test/tiny-chat@./x",
    ] {
        assert_eq!(ModelId::parse(spec), None, "{spec}");
        let err = resolve_in(Path::new(spec), &cache, true)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("is not a branch, tag or commit name")
                && err.contains("bapo-test/tiny-chat"),
            "{spec}: {err}"
        );
    }
    std::fs::remove_dir_all(&cache).ok();
}

#[test]
fn an_id_in_the_cache_loads_as_its_snapshot_folder() {
    let cache = hub_cache("main", &[]);
    let folder = resolve_in(Path::new("bapo-test/tiny-chat"), &cache, true).unwrap();
    let snapshot = cache
        .join("models--bapo-test--tiny-chat/snapshots")
        .join(COMMIT);
    assert_eq!(folder, snapshot);
    // A commit as revision: no ref file names it, its snapshot folder does.
    let by_commit = format!("bapo-test/tiny-chat@{COMMIT}");
    assert_eq!(
        resolve_in(Path::new(&by_commit), &cache, true).unwrap(),
        snapshot
    );

    // The snapshot (links into blobs/) loads and scores as the fixture folder does.
    let device = burn::tensor::Device::flex();
    let fixture = bapo_testkit::workspace_root().join("tests/fixtures/tiny-chat");
    let a = bapo_model::LoadedModel::open(&folder, &device).unwrap();
    let b = bapo_model::LoadedModel::open(&fixture, &device).unwrap();
    let ids = a.encode("what colour is the sky ?").unwrap();
    assert_eq!(ids, b.encode("what colour is the sky ?").unwrap());
    assert_eq!(
        a.chat_template.as_ref().map(|t| &t.source),
        b.chat_template.as_ref().map(|t| &t.source)
    );
    let batch = bapo_model::TokenBatch::from_pairs([(&ids[..2], &ids[2..])], a.pad_token);
    let score = |m: &bapo_model::LoadedModel| {
        bapo_model::sequence_logprobs(&m.model, &batch, &device)
            .unwrap()
            .total
            .into_data()
            .try_to_vec::<f32>()
            .unwrap()
    };
    assert_eq!(score(&a), score(&b));
    std::fs::remove_dir_all(&cache).ok();
}

#[test]
fn an_incomplete_or_unknown_id_offline_is_refused_naming_the_cache() {
    let cache = hub_cache("incomplete", &["model.safetensors"]);
    let err = resolve_in(Path::new("bapo-test/tiny-chat"), &cache, true)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("bapo-test/tiny-chat")
            && err.contains("HF_HUB_OFFLINE")
            && err.contains(&cache.display().to_string()),
        "{err}"
    );
    let err = resolve_in(Path::new("someone/else@v2"), &cache, true)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("someone/else") && err.contains("revision v2"),
        "{err}"
    );
    // A mistyped local folder (relative, `folder/name`) reads as a model id: the message
    // also says what it is as a path.
    let models = format!("bapo-models-{}", std::process::id());
    std::fs::create_dir_all(&models).unwrap();
    let mistyped = format!("{models}/smol");
    let err = resolve_in(Path::new(&mistyped), &cache, true)
        .unwrap_err()
        .to_string();
    // The same for a dataset id (`data.path`).
    let dataset_err = bapo_model::hub::resolve_dataset_in(&mistyped, "train", &cache, true)
        .unwrap()
        .unwrap_err()
        .to_string();
    std::fs::remove_dir_all(&models).ok();
    for err in [err, dataset_err] {
        assert!(
            err.contains("HF_HUB_OFFLINE")
                && err.contains(&format!("the folder {models} exists but has no \"smol\"")),
            "{err}"
        );
    }
    let err = resolve_in(Path::new("no/such/file.gguf"), &cache, true)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("neither a file, a folder, nor a Hugging Face model id"),
        "{err}"
    );
    std::fs::remove_dir_all(&cache).ok();
}

#[test]
fn a_splits_parquet_files_are_found_as_datasets_finds_them() {
    use bapo_model::hub::is_split_file;
    for (file, split) in [
        ("train.parquet", "train"),
        ("data/train-00000-of-00002.parquet", "train"),
        ("default/train/0000.parquet", "train"),
        ("data/test-00000-of-00001.parquet", "test"),
    ] {
        assert!(is_split_file(file, split), "{file} is of {split}");
    }
    for (file, split) in [
        ("data/test-00000-of-00001.parquet", "train"),
        ("data/training-00000.parquet", "train"),
        ("train.jsonl", "train"),
        ("data/train-00000-of-00001.parquet.lock", "train"),
    ] {
        assert!(!is_split_file(file, split), "{file} is not of {split}");
    }
}

#[test]
fn a_split_is_read_whole_from_one_folder_or_refused() {
    use bapo_model::hub::resolve_dataset_in;
    let cache = std::env::temp_dir().join(format!("bapo-hub-datasets-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    let repo = cache.join("datasets--bapo-test--prefs");
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), COMMIT).unwrap();
    let snapshot = repo.join("snapshots").join(COMMIT);
    let put = |file: &str| {
        let path = snapshot.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, "").unwrap();
    };
    let resolve = || resolve_dataset_in("bapo-test/prefs", "train", &cache, true).unwrap();

    put("data/train-00000-of-00002.parquet");
    put("data/test-00000-of-00001.parquet");
    let err = resolve().unwrap_err().to_string();
    assert!(
        err.contains("has 1 of the 2 files") && err.contains("HF_HUB_OFFLINE"),
        "{err}"
    );
    put("data/train-00001-of-00002.parquet");
    let files = resolve().unwrap();
    let names: Vec<_> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "train-00000-of-00002.parquet",
            "train-00001-of-00002.parquet"
        ]
    );
    put("fr/train-00000-of-00001.parquet");
    let err = resolve().unwrap_err().to_string();
    assert!(err.contains("several folders (data, fr)"), "{err}");
    // Not an id: a path, which the caller reads.
    assert!(resolve_dataset_in("no/such/file.jsonl", "train", &cache, true).is_none());
    std::fs::remove_dir_all(&cache).ok();
}
