//! Helpers for bapo's tests (a dev-dependency, and a dependency of the fuzz targets): the test
//! device, tensors from plain numbers in f32 or f64, central finite differences to check
//! autodiff gradients against, the invariants every objective must satisfy as checks any
//! objective crate runs in one line ([`invariants`], [`objective_invariant_tests!`]), GGUF
//! bytes written field by field ([`gguf`]), a hub cache laid out by hand ([`hub_cache`]), and
//! the checks of an objective crate's own `bapo` ([`binary`]).

pub mod binary;
pub mod gguf;
pub mod invariants;

use burn::tensor::{DType, Device, Tensor, TensorData};

/// The pure-Rust Flex CPU device with autodiff: the backend every test runs on.
pub fn device() -> Device {
    Device::flex().autodiff()
}

/// Floating-point precision of a test tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    F32,
    F64,
}

impl Precision {
    fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::F64 => DType::F64,
        }
    }
}

/// A `[n]` tensor from values, in the given precision.
pub fn tensor(values: &[f64], precision: Precision, device: &Device) -> Tensor<1> {
    let data = TensorData::new(values.to_vec(), [values.len()]);
    Tensor::from_data(data, (device, precision.dtype()))
}

/// A `[rows, cols]` tensor from row-major values.
pub fn tensor_2d(
    values: &[f64],
    rows: usize,
    cols: usize,
    precision: Precision,
    device: &Device,
) -> Tensor<2> {
    assert_eq!(
        values.len(),
        rows * cols,
        "tensor_2d: {} values for [{rows}, {cols}]",
        values.len()
    );
    let data = TensorData::new(values.to_vec(), [rows, cols]);
    Tensor::from_data(data, (device, precision.dtype()))
}

/// The values of a tensor as f64, whatever its dtype.
pub fn values<const D: usize>(t: &Tensor<D>) -> Vec<f64> {
    t.to_data()
        .convert::<f64>()
        .try_to_vec::<f64>()
        .expect("a float tensor converts to f64")
}

/// The single value of a one-element tensor.
pub fn scalar<const D: usize>(t: &Tensor<D>) -> f64 {
    let v = values(t);
    assert_eq!(v.len(), 1, "scalar() of a tensor with {} elements", v.len());
    v[0]
}

/// Central finite difference of `f` with respect to each coordinate of `x`:
/// `(f(x + h·e_i) − f(x − h·e_i)) / 2h`.
pub fn central_difference(x: &[f64], h: f64, f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    (0..x.len())
        .map(|i| {
            let mut plus = x.to_vec();
            let mut minus = x.to_vec();
            plus[i] += h;
            minus[i] -= h;
            (f(&plus) - f(&minus)) / (2.0 * h)
        })
        .collect()
}

/// Asserts `|a − b| ≤ atol + rtol·|b|` element-wise, naming the first offending index.
pub fn assert_close(actual: &[f64], expected: &[f64], rtol: f64, atol: f64, what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: lengths differ");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (a - e).abs() <= atol + rtol * e.abs(),
            "{what}[{i}]: {a} vs expected {e} (rtol {rtol}, atol {atol})"
        );
    }
}

pub mod inputs;
pub use inputs::Inputs;

/// DPO's per-example loss with scalars, straight from the spec (`ε = 0`):
/// `softplus(−βz) = −logσ(βz)`, `z = (pc − pr) − (rc − rr)`. An independent reference for the
/// tests of objectives that contain a DPO term.
pub fn dpo_loss_by_hand(beta: f64, pc: f64, pr: f64, rc: f64, rr: f64) -> f64 {
    let z = (pc - pr) - (rc - rr);
    (1.0 + (-beta * z).exp()).ln()
}

/// An asset fetched by `cargo xtask fetch` (in `$BAPO_ASSETS` or the workspace's
/// `.cache/assets`), or `None` outside CI when it has not been fetched. In CI (the `CI`
/// variable set) a missing asset fails the test — CI fetches first — unless the fetch noted
/// that the registry no longer serves it.
pub fn asset(name: &str) -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("BAPO_ASSETS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../.cache/assets"))
        });
    let path = dir.join(name);
    if path.exists() {
        return Some(path);
    }
    // `cargo xtask fetch` leaves `<name>.unavailable` (bapo_data::unavailable_note) where the
    // registry no longer serves an optional asset: CI skips its tests too, saying why.
    let note = dir.join(format!("{name}.unavailable"));
    if let Ok(why) = std::fs::read_to_string(&note) {
        eprintln!("skipping: {} is missing: {}", path.display(), why.trim());
        return None;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{} is missing; CI must run `cargo xtask fetch` first",
        path.display()
    );
    eprintln!(
        "skipping: {} is missing; run `cargo xtask fetch`",
        path.display()
    );
    None
}

/// The SmolLM2-135M-Instruct GGUF (see [`asset`]).
pub fn smollm2_gguf() -> Option<std::path::PathBuf> {
    asset("SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// bapo's root folder: the nearest folder holding `Cargo.lock` and `configs/tiny.toml` above
/// the package under test (cargo sets `CARGO_MANIFEST_DIR` when it runs a test; an objective
/// crate with a workspace of its own, as examples/simpo, has a `Cargo.lock` but is not bapo's
/// root). The path compiled in is the fallback, and the answer for a crate outside bapo's
/// tree: a target folder shared between clones (as CI's is) can hold this crate built in
/// another clone, whose embedded path points there.
pub fn workspace_root() -> std::path::PathBuf {
    let compiled = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    let Some(package) = std::env::var_os("CARGO_MANIFEST_DIR") else {
        return compiled;
    };
    std::path::PathBuf::from(package)
        .ancestors()
        .find(|dir| dir.join("Cargo.lock").is_file() && dir.join("configs/tiny.toml").is_file())
        .map_or(compiled, std::path::Path::to_path_buf)
}

/// `--set` overrides that point configs/tiny.toml at the tiny chat fixture by absolute path
/// and put its anchor cache and run directory under `dir` (tests run in their crate's folder).
pub fn tiny_run_overrides(dir: &std::path::Path) -> Vec<String> {
    let root = workspace_root();
    let quoted = |p: std::path::PathBuf| format!("{:?}", p.display().to_string());
    vec![
        format!(
            "model.path={}",
            quoted(root.join("tests/fixtures/tiny-chat"))
        ),
        format!(
            "data.path={}",
            quoted(root.join("tests/fixtures/tiny-chat/preferences.jsonl"))
        ),
        format!("anchors.cache_dir={}", quoted(dir.join("anchors"))),
        format!("output.dir={}", quoted(dir.join("run"))),
    ]
}

/// A Hugging Face hub cache in `cache`, laid out as `huggingface_hub` lays it out, holding
/// `files` of the folder `source` as model `id` (`owner/name`) at commit `commit`:
/// `models--owner--name/blobs/…`, `snapshots/<commit>/<file>` linking to them, and
/// `refs/main` naming the commit.
pub fn hub_cache(
    cache: &std::path::Path,
    id: &str,
    source: &std::path::Path,
    files: &[&str],
    commit: &str,
) {
    let repo = cache.join(format!("models--{}", id.replace('/', "--")));
    let snapshot = repo.join("snapshots").join(commit);
    for dir in [repo.join("blobs"), snapshot.clone(), repo.join("refs")] {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    for name in files {
        let blob = format!("blob-{name}");
        std::fs::copy(source.join(name), repo.join("blobs").join(&blob)).unwrap();
        std::os::unix::fs::symlink(
            std::path::Path::new("../../blobs").join(&blob),
            snapshot.join(name),
        )
        .unwrap();
    }
}
