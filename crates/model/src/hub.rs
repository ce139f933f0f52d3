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
//!
//! Datasets likewise (`data.path`): `owner/name[@revision]` names the Parquet files of one
//! split ([`resolve_dataset`]), in `datasets--owner--name/snapshots/<commit>/…`.

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
                 forbids downloading it{}",
                model.id,
                model.revision,
                cache.display(),
                as_a_path(spec)
            ),
        });
    }
    download(&model, cache).map_err(|e| match e {
        ModelError::Io { path, message } => ModelError::Io {
            path,
            message: format!("{message}{}", as_a_path(spec)),
        },
        other => other,
    })
}

/// What `spec`, taken for a model id that could not be had, is as a path when its folder
/// exists: a mistyped local folder (`models/smol2` for `models/smol`) reads as an id, and was
/// reported as a hub miss alone (issue #26). Nothing for a plain id.
fn as_a_path(spec: &Path) -> String {
    match spec.parent() {
        Some(parent) if !parent.as_os_str().is_empty() && parent.is_dir() => format!(
            "; as a path, the folder {} exists but has no {:?}",
            parent.display(),
            spec.file_name().unwrap_or_default()
        ),
        _ => String::new(),
    }
}

/// The Parquet files of split `split` of the Hugging Face dataset `spec` names
/// (`owner/name[@revision]`, as model ids), in the order of their paths: from the
/// environment's hub cache (`datasets--owner--name/snapshots/<commit>/…`), or downloaded into
/// it unless `HF_HUB_OFFLINE` forbids it. `None` when `spec` is not a dataset id.
pub fn resolve_dataset(spec: &str, split: &str) -> Option<Result<Vec<PathBuf>, ModelError>> {
    resolve_dataset_in(spec, split, &cache_dir(), offline())
}

/// [`resolve_dataset`] with the cache folder and the offline switch given.
pub fn resolve_dataset_in(
    spec: &str,
    split: &str,
    cache: &Path,
    offline: bool,
) -> Option<Result<Vec<PathBuf>, ModelError>> {
    let (id, revision) = ModelId::split(spec)?;
    // A mistyped local file or folder reads as an id too: say what it is as a path.
    let fail = |message: String| ModelError::Io {
        path: PathBuf::from(spec),
        message: format!("{message}{}", as_a_path(Path::new(spec))),
    };
    if !is_ref_name(revision) {
        return Some(Err(fail(format!(
            "revision `{revision}` of dataset `{id}` is not a branch, tag or commit name"
        ))));
    }
    let dataset = ModelId {
        id: id.to_string(),
        revision: revision.to_string(),
    };
    let (snapshot, cached) = cached_split(&dataset, split, cache);
    let relative: Vec<String> = cached
        .iter()
        .filter_map(|f| f.strip_prefix(&snapshot).ok())
        .map(|f| f.to_string_lossy().replace('\\', "/"))
        .collect();
    let missing = match one_whole_split(&relative) {
        Ok(()) if !cached.is_empty() => return Some(Ok(cached)),
        Ok(()) => format!("has no Parquet file of split `{split}`"),
        Err(SplitFault::SeveralFolders(message)) => return Some(Err(fail(message))),
        Err(SplitFault::MissingShards(message)) => message,
    };
    if offline {
        return Some(Err(fail(format!(
            "dataset `{id}` (revision {revision}) {missing} in the hub cache {}, and \
             HF_HUB_OFFLINE forbids downloading it (a split's files are named \
             `{split}-….parquet` or `{split}.parquet`, or lie in a folder `{split}`)",
            cache.display()
        ))));
    }
    Some(download_split(&dataset, split, cache).map_err(fail))
}

/// Why the files found for a split cannot be read as it.
enum SplitFault {
    /// In several folders: a dataset with several configs (`en/train-…`, `fr/train-…`).
    SeveralFolders(String),
    /// Fewer shards than their names count (`train-00000-of-00002` alone).
    MissingShards(String),
}

/// Refuses a split's files (paths in the repository) that lie in several folders or lack
/// shards their names count: they would be read as the split without a word.
fn one_whole_split(files: &[String]) -> Result<(), SplitFault> {
    let folder = |f: &String| {
        f.rsplit_once('/')
            .map_or(String::new(), |(d, _)| d.to_string())
    };
    let mut folders: Vec<String> = files.iter().map(folder).collect();
    folders.sort();
    folders.dedup();
    if folders.len() > 1 {
        return Err(SplitFault::SeveralFolders(format!(
            "the split's files lie in several folders ({}): a dataset with several \
             configurations; point `data.path` at the Parquet file to read",
            folders.join(", ")
        )));
    }
    // `…-00000-of-00002.parquet`: the count after `-of-` is how many there are.
    let counted = files.iter().find_map(|f| {
        let stem = f.strip_suffix(".parquet")?;
        let (_, total) = stem.rsplit_once("-of-")?;
        total.parse::<usize>().ok()
    });
    match counted {
        Some(total) if total != files.len() => Err(SplitFault::MissingShards(format!(
            "has {} of the {total} files of the split",
            files.len()
        ))),
        _ => Ok(()),
    }
}

/// Whether the file at `relative` (a path in a dataset repository, `/`-separated) is a
/// Parquet file of split `split`, as `datasets` finds a split's files: `train.parquet`,
/// `data/train-00000-of-00001.parquet`, `train/0000.parquet`.
pub fn is_split_file(relative: &str, split: &str) -> bool {
    let Some(path) = relative.strip_suffix(".parquet") else {
        return false;
    };
    let mut parts: Vec<&str> = path.split('/').collect();
    let stem = parts.pop().unwrap_or_default();
    parts.contains(&split) || stem == split || stem.starts_with(&format!("{split}-"))
}

/// The snapshot folder of `dataset` in the cache, and the Parquet files of `split` there,
/// sorted (none when it is not cached).
fn cached_split(dataset: &ModelId, split: &str, cache: &Path) -> (PathBuf, Vec<PathBuf>) {
    let folder = cache.join(dataset_repo(dataset).folder_name());
    // A branch or tag names its commit in `refs/`; a commit names its snapshot itself.
    let commit = std::fs::read_to_string(folder.join("refs").join(&dataset.revision))
        .map(|c| c.trim().to_string())
        .unwrap_or_else(|_| dataset.revision.clone());
    if !is_ref_name(&commit) {
        return (PathBuf::new(), Vec::new());
    }
    let snapshot = folder.join("snapshots").join(commit);
    let mut found = Vec::new();
    let mut pending = vec![snapshot.clone()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(relative) = path.strip_prefix(&snapshot)
                && is_split_file(&relative.to_string_lossy().replace('\\', "/"), split)
            {
                found.push(path);
            }
        }
    }
    found.sort();
    (snapshot, found)
}

/// Downloads the Parquet files of `split` of `dataset` into the cache.
fn download_split(dataset: &ModelId, split: &str, cache: &Path) -> Result<Vec<PathBuf>, String> {
    let fail = |what: &str, e: String| {
        download_failure(
            &format!("dataset `{}`", dataset.id),
            dataset,
            what,
            &e,
            cache,
        )
    };
    let remote = hub_api(cache)
        .map_err(|e| fail("anything", e.to_string()))?
        .repo(dataset_repo(dataset));
    let info = remote
        .info()
        .map_err(|e| fail("the file list", e.to_string()))?;
    let mut files: Vec<String> = info
        .siblings
        .into_iter()
        .map(|s| s.rfilename)
        .filter(|name| is_split_file(name, split))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(fail(
            "the files",
            format!("it has no Parquet file of split `{split}`"),
        ));
    }
    if let Err(SplitFault::SeveralFolders(message) | SplitFault::MissingShards(message)) =
        one_whole_split(&files)
    {
        return Err(fail("the files", message));
    }
    files
        .iter()
        .map(|file| remote.get(file).map_err(|e| fail(file, e.to_string())))
        .collect()
}

fn dataset_repo(dataset: &ModelId) -> Repo {
    Repo::with_revision(
        dataset.id.clone(),
        RepoType::Dataset,
        dataset.revision.clone(),
    )
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

/// The hub client, downloading into `cache`.
fn hub_api(cache: &Path) -> Result<hf_hub::api::sync::Api, hf_hub::api::sync::ApiError> {
    hf_hub::api::sync::ApiBuilder::from_cache(Cache::new(cache.to_path_buf())).build()
}

/// Why downloading `what` of the repository `name` (at `at`'s revision) failed, and that
/// HF_HUB_OFFLINE keeps to the cache.
fn download_failure(name: &str, at: &ModelId, what: &str, error: &str, cache: &Path) -> String {
    format!(
        "downloading {what} of {name} (revision {}) from the Hugging Face hub: {error}; with \
         HF_HUB_OFFLINE=1 only the hub cache {} is used",
        at.revision,
        cache.display()
    )
}

/// Downloads what `model` needs into the cache; returns its snapshot folder.
fn download(model: &ModelId, cache: &Path) -> Result<PathBuf, ModelError> {
    let fail = |file: &str, e: String| ModelError::Io {
        path: PathBuf::from(&model.id),
        message: download_failure(&format!("`{}`", model.id), model, file, &e, cache),
    };
    let remote = hub_api(cache)
        .map_err(|e| fail("anything", e.to_string()))?
        .repo(repo(model));
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
