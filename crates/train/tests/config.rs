//! Every bad key or value of a run config is an error that names it; overrides work; a backend
//! that is not compiled in names its feature and the xtask command.

mod common;

use bapo_train::{Backend, BackendDevice, RunConfig, TrainOptions, train};
use common::{root, scratch, tiny_config};

use bapo_objective_bapo as _;

fn base() -> String {
    std::fs::read_to_string(root().join("configs/tiny.toml")).unwrap()
}

/// The error of the tiny config with `find` replaced by `replace` (and the overrides).
fn error_of(find: &str, replace: &str, sets: &[&str]) -> String {
    let text = base();
    assert!(text.contains(find), "configs/tiny.toml contains {find:?}");
    let text = text.replacen(find, replace, 1);
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    match RunConfig::from_toml(&text, "tiny.toml", &sets) {
        Ok(_) => panic!("{replace:?} / {sets:?} was accepted"),
        Err(e) => e.to_string(),
    }
}

fn assert_names(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(message.contains(part), "{message:?} should name {part:?}");
    }
}

fn is_study_config(path: &std::path::Path) -> bool {
    let text = std::fs::read_to_string(path).unwrap();
    let table: toml::Table = toml::from_str(&text).unwrap();
    table.contains_key("rules")
}

#[test]
fn the_shipped_configs_parse() {
    let mut count = 0;
    for entry in std::fs::read_dir(root().join("configs")).unwrap() {
        let path = entry.unwrap().path();
        // Study configs (configs/study.toml, configs/anchor-forms.toml: a grid of runs with
        // its `[rules]`) are not run configs; bapo-study's tests check them.
        if path.extension().is_some_and(|e| e == "toml") && !is_study_config(&path) {
            RunConfig::load(&path, &[]).unwrap_or_else(|e| panic!("{e}"));
            count += 1;
        }
    }
    assert!(count >= 4, "quickstart, tiny, bench, bapo-cuda");
}

#[test]
fn unknown_keys_are_rejected_with_their_path() {
    for (find, replace, key) in [
        ("[training]\n", "[training]\nbatchsize = 4\n", "batchsize"),
        ("[data]\n", "[data]\nusr = \"a\"\n", "usr"),
        ("[model]\n", "[model]\nrevision = \"main\"\n", "revision"),
        ("[lora]\n", "[lora]\nr = 8\n", "r"),
        ("[eval]\n", "[eval]\nevery = 3\n", "every"),
        (
            "[output]\n",
            "[outputs]\ndir = \"x\"\n[output]\n",
            "outputs",
        ),
    ] {
        let message = error_of(find, replace, &[]);
        assert_names(&message, &["tiny.toml", key, "unknown field"]);
    }
}

#[test]
fn wrong_types_and_values_name_the_key() {
    for (find, replace, parts) in [
        (
            "batch_size = 4",
            "batch_size = \"four\"",
            &["training.batch_size", "invalid type"][..],
        ),
        (
            "batch_size = 4",
            "batch_size = 0",
            &["training.batch_size", "at least 1"],
        ),
        (
            "learning_rate = 1e-2",
            "learning_rate = -1.0",
            &["optimizer.learning_rate", "-1"],
        ),
        (
            "backend = \"cpu\"",
            "backend = \"tpu\"",
            &["training.backend", "tpu", "wgpu-cpu"],
        ),
        (
            "kind = \"constant\"",
            "kind = \"step\"",
            &["schedule.kind", "step"],
        ),
        (
            "test_fraction = 0.25",
            "test_fraction = 1.5",
            &["data.test_fraction", "1.5"],
        ),
        (
            "max_prompt_length = 32",
            "max_prompt_length = 64",
            &["data.max_prompt_length"],
        ),
        (
            "max_new_tokens = 6",
            "max_new_tokens = 0",
            &["anchors.max_new_tokens"],
        ),
        (
            "[training]\n",
            "[training]\nprecision = \"f16\"\n",
            &["training.precision", "f16"],
        ),
        (
            "[lora]\n",
            "[lora]\ninit = \"xavier\"\n",
            &["lora.init", "xavier", "kaiming_uniform"],
        ),
        (
            "[training]\n",
            "[training]\nrecompute_chunk_rows = 1\n",
            &[
                "training.recompute_chunk_rows",
                "training.gradient_checkpointing = true",
            ],
        ),
        (
            "backend = \"cpu\"\n",
            "backend = \"wgpu-cpu\"\nprecision = \"bf16\"\n",
            &[
                "training.precision",
                "wgpu-cpu",
                "WGSL",
                "`cpu`, `tch-cpu` and `cuda`",
            ],
        ),
        (
            "enabled = false\n",
            "base_dtype = \"bf16\"\n",
            &["lora.base_dtype", "training.precision = \"bf16\""],
        ),
        (
            "[lora]\n",
            "[lora]\nbase_dtype = \"bf16\"\n",
            &["lora.base_dtype", "lora.enabled = false"],
        ),
        (
            "[lora]\n",
            "[lora]\nbase_dtype = \"fp8\"\n",
            &["lora.base_dtype", "fp8"],
        ),
        (
            "[lora]\n",
            "[lora]\nbase_quantization = \"q8\"\n",
            &["lora.base_quantization", "lora.enabled = false"],
        ),
        (
            "[lora]\n",
            "[lora]\nbase_quantization = \"q3\"\n",
            &["lora.base_quantization", "q3"],
        ),
        ("name = \"bapo\"\n", "", &["objective.name", "missing"]),
        ("dir = \"runs/tiny\"", "dir = \"\"", &["output.dir"]),
    ] {
        assert_names(&error_of(find, replace, &[]), parts);
    }
    // A quantized base on a backend without quantized tensors, and under bf16 compute.
    let quantized = "enabled = true\nbase_quantization = \"q4\"\n";
    assert_names(
        &error_of(
            "enabled = false\n",
            quantized,
            &["training.backend='tch-cpu'"],
        ),
        &["lora.base_quantization", "`tch-cpu`", "burn-tch", "\"cpu\""],
    );
    assert_names(
        &error_of("enabled = false\n", quantized, &["training.backend='wgpu'"]),
        &["lora.base_quantization", "`wgpu`", "cubecl", "\"cpu\""],
    );
    assert_names(
        &error_of(
            "enabled = false\n",
            quantized,
            &["training.precision='bf16'"],
        ),
        &["lora.base_quantization", "training.precision"],
    );
    // The file's own blocks: dequantised on the host, tried on `cpu` only.
    assert_names(
        &error_of(
            "enabled = false\n",
            "enabled = true\nbase_quantization = \"gguf\"\n",
            &["training.backend='tch-cpu'"],
        ),
        &["lora.base_quantization", "`gguf`", "\"cpu\"", "`tch-cpu`"],
    );
    // The tables stay frozen over a quantized base: a target that reaches them is refused.
    for (target, table) in [
        ("lm_head", "lm_head.weight"),
        ("(proj|embed_tokens)\\.weight$", "embed_tokens.weight"),
    ] {
        assert_names(
            &error_of(
                "enabled = false\n",
                quantized,
                &[&format!("lora.target='{target}'")],
            ),
            &["lora.target", table, "frozen"],
        );
    }
}

/// `[anchors]` and `[lora]` flatten the library's own settings types (the sampling knobs
/// among them): their unknown keys are refused and their bad values named as every other
/// key's, and the resolved config still writes them flat, as runs made before did.
#[test]
fn flattened_sections_refuse_unknown_keys_and_name_bad_values() {
    for (set, parts) in [
        (
            "anchors.tempreature=0.5",
            &["anchors.tempreature", "unknown field", "`temperature`"][..],
        ),
        (
            "anchors.temperature=\"hot\"",
            &["anchors.temperature", "invalid type"],
        ),
        ("anchors.temperature=-1.0", &["anchors.temperature", "-1"]),
        ("anchors.top_p=0.0", &["anchors.top_p"]),
        (
            "anchors.chunk_size=2.5",
            &["anchors.chunk_size", "invalid type"],
        ),
        (
            "anchors.decode_batch=\"x\"",
            &["anchors.decode_batch", "invalid type"],
        ),
        ("lora.rnak=4", &["lora.rnak", "unknown field", "`rank`"]),
        ("lora.rank=\"two\"", &["lora.rank", "invalid type"]),
    ] {
        assert_names(&error_of("", "", &[set]), parts);
    }

    let config = RunConfig::from_toml(
        &base(),
        "tiny.toml",
        &["anchors.temperature=0.5".into(), "lora.rank=4".into()],
    )
    .unwrap();
    assert_eq!(config.anchors.settings.sampling.temperature, 0.5);
    assert_eq!(config.lora.settings.rank, 4);
    let written = config.to_toml();
    let table: toml::Table = written.parse().unwrap();
    assert_eq!(
        table["anchors"]["temperature"].as_float(),
        Some(0.5),
        "{written}"
    );
    assert_eq!(table["lora"]["rank"].as_integer(), Some(4), "{written}");
    assert_eq!(
        RunConfig::from_toml(&written, "written", &[]).unwrap(),
        config
    );
}

#[test]
fn overrides_set_values_and_bad_ones_are_named() {
    let config = RunConfig::from_toml(
        &base(),
        "tiny.toml",
        &[
            "training.max_steps=7".into(),
            "objective.beta=0.25".into(),
            "data.user=contrarian".into(),
            "lora.enabled=true".into(),
            "lora.init='kaiming_uniform'".into(),
        ],
    )
    .unwrap();
    assert_eq!(config.training.max_steps, Some(7));
    assert_eq!(config.objective["beta"].as_float(), Some(0.25));
    assert_eq!(config.data.user.as_deref(), Some("contrarian"));
    assert!(config.lora.enabled);
    assert_eq!(
        config.lora.settings.init,
        bapo_model::LoraInit::KaimingUniform
    );

    assert_names(
        &error_of("", "", &["training.max_steps"]),
        &["--set", "training.max_steps", "key=value"],
    );
    assert_names(
        &error_of("", "", &["training.max_steps=ten"]),
        &["training.max_steps", "invalid type"],
    );
    assert_names(
        &error_of("", "", &["training.batch_size.x=1"]),
        &["training.batch_size", "not a table"],
    );
    assert_names(
        &error_of("", "", &["training.steps=3"]),
        &["training", "steps", "unknown field"],
    );
}

/// Messages a config user reads carry no Rust type names or Debug text, a number too large
/// is not called a string, and LoRA's settings are checked before any model loads.
#[test]
fn config_messages_are_plain() {
    let table = error_of("", "", &["training=3"]);
    assert_names(&table, &["`training`", "expected a table of settings"]);
    assert!(!table.contains("Section"), "{table}");

    let huge = error_of("", "", &["training.seed=99999999999999999999999"]);
    assert_names(&huge, &["training.seed", "integer too large"]);
    assert!(!huge.contains("string"), "{huge}");

    let regex = error_of("", "", &["lora.enabled=true", "lora.target=\"((\""]);
    assert_names(&regex, &["lora.target", "`((`", "unclosed group"]);
    assert!(
        !regex.contains("InvalidPatternError") && !regex.contains('\n'),
        "{regex}"
    );
    assert_names(
        &error_of("", "", &["lora.enabled=true", "lora.rank=0"]),
        &["lora.rank"],
    );
}

#[test]
fn objective_settings_are_checked_by_the_registry() {
    let dir = scratch("objective-config");
    let quiet = TrainOptions {
        quiet: true,
        ..TrainOptions::default()
    };
    let config = tiny_config(&dir, &["objective.lambda=-1"]);
    let message = train(&config, &quiet).unwrap_err().to_string();
    assert_names(&message, &["objective.lambda", "-1"]);
    let config = tiny_config(&dir, &[r#"objective={name="no-such-loss"}"#]);
    let message = train(&config, &quiet).unwrap_err().to_string();
    assert_names(&message, &["no-such-loss", "known objectives", "bapo"]);
    let config = tiny_config(&dir, &["data.user=nobody"]);
    let message = train(&config, &quiet).unwrap_err().to_string();
    assert_names(&message, &["data.user", "nobody", "truthful"]);
    let config = tiny_config(&dir, &[r#"eval.users=["truthful", "nobody"]"#]);
    let message = train(&config, &quiet).unwrap_err().to_string();
    assert_names(
        &message,
        &["eval.users", "nobody", "contrarian", "truthful"],
    );
}

#[test]
fn a_backend_that_is_not_compiled_in_names_its_feature_and_xtask_command() {
    for backend in Backend::ALL {
        if backend.feature().is_none() {
            continue;
        }
        // CI's build has every backend: there the refusal's words are checked as made.
        let message = if backend.compiled_in() {
            backend.not_compiled_in().to_string()
        } else {
            backend.device(0).unwrap_err().to_string()
        };
        assert_names(
            &message,
            &[
                backend.name(),
                backend.feature().unwrap(),
                &format!("cargo xtask train --backend {backend}"),
            ],
        );
    }
}

#[test]
fn an_existing_run_is_never_overwritten() {
    let dir = scratch("exists");
    let config = tiny_config(&dir, &["training.max_steps=1"]);
    let quiet = TrainOptions {
        quiet: true,
        ..TrainOptions::default()
    };
    train(&config, &quiet).unwrap();
    let before = std::fs::read_to_string(dir.join("run/metrics.jsonl")).unwrap();
    let message = train(&config, &quiet).unwrap_err().to_string();
    assert_names(&message, &["already holds a run", "--resume"]);
    let after = std::fs::read_to_string(dir.join("run/metrics.jsonl")).unwrap();
    assert_eq!(before, after);
}

/// The tiny fixture's preferences with `edit` applied to every row, written under `dir`.
fn edited_fixture(
    dir: &std::path::Path,
    edit: impl Fn(&mut serde_json::Value),
) -> std::path::PathBuf {
    let fixture =
        std::fs::read_to_string(root().join("tests/fixtures/tiny-chat/preferences.jsonl")).unwrap();
    let edited: String = fixture
        .lines()
        .map(|line| {
            let mut row: serde_json::Value = serde_json::from_str(line).unwrap();
            edit(&mut row);
            format!("{row}\n")
        })
        .collect();
    let path = dir.join("preferences.jsonl");
    std::fs::write(&path, edited).unwrap();
    path
}

/// A selected user whose rows were all dropped is told how many and why, not "no examples".
#[test]
fn a_user_whose_rows_were_all_dropped_is_told_why() {
    let dir = scratch("dropped-user");
    // Every row of user "truthful" loses its chosen completion.
    let data = edited_fixture(&dir, |row| {
        if row["user"] == "truthful" {
            row["chosen"] = serde_json::json!([]);
        }
    });
    let data_set = format!("data.path={:?}", data.display().to_string());
    let quiet = TrainOptions {
        quiet: true,
        ..TrainOptions::default()
    };
    let config = tiny_config(&dir, &[&data_set]);
    let message = train(&config, &quiet).unwrap_err().to_string();
    assert_names(
        &message,
        &[
            "all 16 rows",
            "\"truthful\"",
            "16 for empty chosen or rejected completion",
        ],
    );

    // A user who is not in the file at all lists the users there.
    let config = tiny_config(&dir, &["data.user=nobody"]);
    let message = train(&config, &quiet).unwrap_err().to_string();
    assert_names(&message, &["\"nobody\"", "no rows", "contrarian, truthful"]);
}

/// Data in which every pair has the same chosen and rejected response trains nothing: it is
/// said before training.
#[test]
fn identical_pairs_everywhere_are_warned_about() {
    let dir = scratch("identical");
    let data = edited_fixture(&dir, |row| row["rejected"] = row["chosen"].clone());
    let progress = bapo_train::Progress { quiet: true };
    let warned = |path: &std::path::Path| {
        let set = format!("data.path={:?}", path.display().to_string());
        let prepared = bapo_train::prepare(&tiny_config(&dir, &[&set]), false, &progress).unwrap();
        prepared
            .summary
            .iter()
            .any(|l| l.contains("warning") && l.contains("same tokens"))
    };
    assert!(warned(&data));
    assert!(!warned(
        &root().join("tests/fixtures/tiny-chat/preferences.jsonl")
    ));
}

/// Lengths past the model's positions are refused before anything is tokenised or generated,
/// naming the setting: the tiny model has 128 (`max_position_embeddings`).
#[test]
fn lengths_past_the_models_positions_are_refused_by_name() {
    let dir = scratch("too-long");
    let progress = bapo_train::Progress { quiet: true };
    let refused = |sets: &[&str]| {
        bapo_train::prepare(&tiny_config(&dir, sets), false, &progress)
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    assert_names(
        &refused(&["data.max_length=200"]),
        &["data.max_length is 200 tokens", "128 positions"],
    );
    assert_names(
        &refused(&["anchors.max_new_tokens=100"]),
        &[
            "data.max_prompt_length + anchors.max_new_tokens is 132 tokens",
            "128 positions",
        ],
    );
    // Exactly the model's positions is allowed.
    let set = ["data.max_prompt_length=32", "anchors.max_new_tokens=96"];
    bapo_train::prepare(&tiny_config(&dir, &set), false, &progress).unwrap();
}

/// The objective's count of base responses decides how many are generated: BAPO with
/// `num_anchors = 2` needs no `[anchors]` change; `anchors.num_anchors` only asks for more.
#[test]
fn the_objective_decides_how_many_base_responses_are_generated() {
    let dir = scratch("needs-anchors");
    let progress = bapo_train::Progress { quiet: true };
    let base_responses = |sets: &[&str]| {
        let prepared = bapo_train::prepare(&tiny_config(&dir, sets), false, &progress).unwrap();
        assert!(
            prepared
                .train
                .iter()
                .all(|e| e.reference.base.len() == e.base.len())
        );
        prepared.train[0].base.len()
    };
    assert_eq!(base_responses(&[]), 1);
    assert_eq!(base_responses(&["objective.num_anchors=2"]), 2);
    assert_eq!(
        base_responses(&["objective.num_anchors=2", "anchors.num_anchors=3"]),
        3
    );
}

/// References the objective does not use are neither loaded nor scored, and the summary says
/// so: BAPO compares with the model it starts from only.
#[test]
fn references_the_objective_does_not_use_are_not_loaded() {
    let dir = scratch("unused-references");
    let progress = bapo_train::Progress { quiet: true };
    let listed = format!(
        "model.references=[{:?}]",
        root()
            .join("tests/fixtures/tiny-chat")
            .display()
            .to_string()
    );
    let prepared = bapo_train::prepare(&tiny_config(&dir, &[&listed]), false, &progress).unwrap();
    assert!(prepared.train.iter().all(|e| e.reference_count() == 1));
    assert!(
        prepared
            .summary
            .iter()
            .any(|line| line.contains("`model.references` lists 1 model(s); the objective uses 0")),
        "{:?}",
        prepared.summary
    );
}
