//! Models by name: wherever a model path is taken (`model.path`, `model.references`,
//! `--model`), a Hugging Face model id works too: `HuggingFaceTB/SmolLM2-135M-Instruct`, or
//! `owner/name@REVISION` for a branch, tag or commit (default `main`).
//!
//! An id is looked up first in the local hub cache, laid out as `huggingface_hub` lays it out
//! (`models--owner--name/refs/<revision>` naming a commit, `snapshots/<commit>/<file>`). The
//! cache is the first of:
//! - `$HF_HUB_CACHE`;
//! - `$HF_HOME/hub`;
//! - `~/.cache/huggingface/hub`.
//!
//! What the cache lacks is downloaded into it with the `hf-hub` crate, unless
//! `HF_HUB_OFFLINE=1`. The model is then loaded from the snapshot folder, like any checkpoint
//! folder. A path that exists on disk is always a path.

use std::path::{Path, PathBuf};

use hf_hub::{Cache, Repo, RepoType};

use crate::ModelError;

/// The files a checkpoint folder needs, and those it may have.
const REQUIRED: [&str; 2] = ["config.json", "tokenizer.json"];
const OPTIONAL: [&str; 3] = [
    "tokenizer_config.json",
    "chat_template.jinja",
    "generation_config.json",
];
const WEIGHTS: &str = "model.safetensors";
const WEIGHTS_INDEX: &str = "model.safetensors.index.json";

/// Whether `name` is a file of a checkpoint folder that the model is read from: its config,
/// tokenizer, tokenizer settings and chat template, and weights. A model's
/// fingerprint (`bapo_anchors::model_sha256`) covers exactly these, so that a change to any
/// of them, the chat template included, makes it another model.
pub fn is_model_file(name: &str) -> bool {
    // generation_config.json is fetched with a model but never read: it does not count.
    REQUIRED.contains(&name)
        || matches!(name, "tokenizer_config.json" | "chat_template.jinja")
        || name == WEIGHTS_INDEX
        || name.ends_with(".safetensors")
}

/// A model id with its revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelId {
    pub id: String,
    pub revision: String,
}

impl ModelId {
    /// `owner/name` or `owner/name@revision` with a revision that can only be a branch, tag
    /// or commit name ([`is_ref_name`]); `None` for anything else (a path).
    pub fn parse(spec: &str) -> Option<ModelId> {
        let (id, revision) = Self::split(spec)?;
        is_ref_name(revision).then(|| ModelId {
            id: id.to_string(),
            revision: revision.to_string(),
        })
    }

    /// `owner/name` and the revision (`main` when none is given), whatever the revision.
    fn split(spec: &str) -> Option<(&str, &str)> {
        let (id, revision) = match spec.split_once('@') {
            Some((id, revision)) if !revision.is_empty() => (id, revision),
            Some(_) => return None,
            None => (spec, "main"),
        };
        let (owner, name) = id.split_once('/')?;
        (is_name(owner) && is_name(name)).then_some((id, revision))
    }
}

/// A hub owner's or model's name, or one part of a ref name: letters, digits, `-`, `_` and `.`,
/// not starting with `.` (so never `.` or `..`).
fn is_name(part: &str) -> bool {
    !part.is_empty()
        && !part.starts_with('.')
        && part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Whether `revision` can only name a branch, tag or commit: names joined by single `/` (a
/// branch such as `refs/pr/1`). The hub cache joins it to its own folders, so `..`, a leading
/// `/` or an empty part would name a folder outside it.
pub fn is_ref_name(revision: &str) -> bool {
    revision.split('/').all(is_name)
}

/// The hub cache folder the environment names.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HF_HUB_CACHE") {
        return PathBuf::from(dir);
    }
    Cache::from_env().path().clone()
}

/// Whether `HF_HUB_OFFLINE` forbids downloads (`1`, `true`, `yes` or `on`, as
/// `huggingface_hub` reads it).
pub fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    })
}

/// `spec` as a path to load: itself when it exists, else the snapshot folder of the model id
/// it names (from the environment's cache, downloaded into it when allowed).
pub fn resolve(spec: &Path) -> Result<PathBuf, ModelError> {
    resolve_in(spec, &cache_dir(), offline())
}

/// [`resolve`] with the cache folder and the offline switch given.
pub fn resolve_in(spec: &Path, cache: &Path, offline: bool) -> Result<PathBuf, ModelError> {
    if spec.exists() {
        return Ok(spec.to_path_buf());
    }
    if let Some((id, revision)) = spec.to_str().and_then(ModelId::split)
        && !is_ref_name(revision)
    {
        return Err(ModelError::Io {
            path: spec.to_path_buf(),
            message: format!(
                "revision `{revision}` of model `{id}` is not a branch, tag or commit name \
                 (letters, digits, `-`, `_` and `.`, parts joined by `/`; no `..`, no leading \
                 `/`)"
            ),
        });
    }
    let Some(model) = spec.to_str().and_then(ModelId::parse) else {
        return Err(ModelError::Io {
            path: spec.to_path_buf(),
            message: "not found: neither a file, a folder, nor a Hugging Face model id \
                      (owner/name[@revision])"
                .into(),
        });
    };
    if let Some(folder) = cached(&model, cache) {
        return Ok(folder);
    }
    if offline {
        return Err(ModelError::Io {
            path: spec.to_path_buf(),
            message: format!(
                "model `{}` (revision {}) is not complete in the hub cache {}, and HF_HUB_OFFLINE \
                 forbids downloading it",
                model.id,
                model.revision,
                cache.display()
            ),
        });
    }
    download(&model, cache)
}

/// The snapshot folder of `model` when the cache holds every file it needs.
fn cached(model: &ModelId, cache: &Path) -> Option<PathBuf> {
    let repo = Cache::new(cache.to_path_buf()).repo(repo(model));
    // A commit hash as revision has no ref file: its snapshot folder is named by it.
    let folder = match repo.get(REQUIRED[0]) {
        Some(config) => config.parent()?.to_path_buf(),
        None => cache
            .join(repo_folder(model))
            .join("snapshots")
            .join(&model.revision),
    };
    let has = |file: &str| folder.join(file).is_file();
    let weights = has(WEIGHTS)
        || shards(&folder.join(WEIGHTS_INDEX)).is_some_and(|s| s.iter().all(|f| has(f)));
    (REQUIRED.iter().all(|f| has(f)) && weights).then_some(folder)
}

/// `models--owner--name`, as the hub cache names a model's folder.
fn repo_folder(model: &ModelId) -> String {
    repo(model).folder_name()
}

fn repo(model: &ModelId) -> Repo {
    Repo::with_revision(model.id.clone(), RepoType::Model, model.revision.clone())
}

/// The shard files a safetensors index names.
fn shards(index: &Path) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(index).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    let mut files: Vec<String> = json
        .get("weight_map")?
        .as_object()?
        .values()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    files.sort();
    files.dedup();
    Some(files)
}

/// Downloads what `model` needs into the cache; returns its snapshot folder.
fn download(model: &ModelId, cache: &Path) -> Result<PathBuf, ModelError> {
    let fail = |file: &str, e: String| ModelError::Io {
        path: PathBuf::from(&model.id),
        message: format!(
            "downloading {file} of `{}` (revision {}) from the Hugging Face hub: {e}; with \
             HF_HUB_OFFLINE=1 only the hub cache {} is used",
            model.id,
            model.revision,
            cache.display()
        ),
    };
    let api = hf_hub::api::sync::ApiBuilder::from_cache(Cache::new(cache.to_path_buf()))
        .build()
        .map_err(|e| fail("anything", e.to_string()))?;
    let remote = api.repo(repo(model));
    let mut folder = None;
    for file in REQUIRED {
        let path = remote.get(file).map_err(|e| fail(file, e.to_string()))?;
        folder = path.parent().map(Path::to_path_buf);
    }
    // A model has a single weights file or an index of shards.
    if remote.get(WEIGHTS).is_err() {
        let index = remote
            .get(WEIGHTS_INDEX)
            .map_err(|e| fail(&format!("{WEIGHTS} or {WEIGHTS_INDEX}"), e.to_string()))?;
        for shard in shards(&index).unwrap_or_default() {
            remote
                .get(&shard)
                .map_err(|e| fail(&shard, e.to_string()))?;
        }
    }
    // The required files came down, so the hub is reachable: a failure here is a file the
    // model does not have.
    for file in OPTIONAL {
        let _ = remote.get(file);
    }
    folder.ok_or_else(|| fail("config.json", "no folder".into()))
}
