//! `cargo xtask gpu-kit [--test]`: the GPU check kit (issue #12, docs/backends.md), a
//! git-ignored folder `.gpu-kit/` that travels to a GPU machine with the working tree:
//!
//! - `bapo.gz`, stripped and gzipped, with the `tch` and `wgpu` backends, built against PyPI's
//!   `torch==2.11.0` (CUDA 13.0, the GPU machine's version) from its own venv and its own
//!   target folder, so that it loads that machine's libtorch (`libtorch_cuda.so` included,
//!   checked here) through `LD_LIBRARY_PATH`;
//! - `smollm2-shape/`: SmolLM2-135M-Instruct's config.json and tokenizer, from which
//!   `bapo model init` makes a random-weight model of that shape there (its 540 MB of f32
//!   weights would not travel); `qwen2.5-1.5b-shape/`: Qwen2.5-1.5B's shape with that
//!   tokenizer, for the steps at size;
//! - `wheels/`: TRL and what it needs that the GPU machine lacks; `debs/`: the Vulkan loader
//!   and the GL dispatch libraries NVIDIA's Vulkan driver needs;
//! - `run.sh` and `kit.py` (from xtask/gpu-kit/), which do the checks and write `$OUT`.
//!
//! `--test` then runs `run.sh` here with `tch-cpu` and `wgpu-cpu` in place of `cuda` and
//! `wgpu` (the benchmarks on `tch-cpu` only), and PyTorch on the CPU, so that the GPU run does
//! not fail on a typo.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::python::run;
use crate::{build, fetch, python};

/// The GPU machine's torch (its libtorch is what the kit's `bapo` loads).
const TORCH: &str = "torch==2.11.0";
/// What the kit may weigh: the machine takes 64 MiB with the working tree.
const MAX_KIT_MIB: f64 = 60.0;
/// Python packages the GPU machine lacks for the TRL peer (the versions of the project's venv).
const WHEELS: [&str; 4] = [
    "trl==1.16.0",
    "datasets==5.2.0",
    "dill==0.4.1",
    "multiprocess==0.70.19",
];
/// The test venv's packages besides torch: those the GPU machine has, at its versions.
/// (multiprocess too: the kit's wheel of it is for Python 3.12 only.)
const TEST_PACKAGES: [&str; 10] = [
    "transformers==5.17.0",
    "peft==0.21.2",
    "multiprocess==0.70.19",
    "accelerate==1.15.0",
    "pyarrow",
    "pandas",
    "xxhash",
    "requests",
    "tqdm",
    "psutil",
];

pub fn gpu_kit(root: &Path, cargo: &str, args: &[String]) -> Result<()> {
    let mut test = false;
    for arg in args {
        match arg.as_str() {
            "--test" => test = true,
            other => bail!("unknown argument `{other}`\nusage: cargo xtask gpu-kit [--test]"),
        }
    }
    fetch::fetch(root)?;
    let venv = kit_venv(test)?;
    let (binary, torch_lib) = build(root, cargo, &venv)?;
    let kit = root.join(".gpu-kit");
    assemble(root, &kit, &binary, &torch_lib)?;
    let mib = folder_bytes(&kit)? as f64 / (1024.0 * 1024.0);
    println!("{}: {mib:.1} MiB (limit {MAX_KIT_MIB} MiB)", kit.display());
    if mib > MAX_KIT_MIB {
        bail!("the kit weighs {mib:.1} MiB, over {MAX_KIT_MIB} MiB");
    }
    if test {
        test_run(root, &kit, &venv)?;
    }
    Ok(())
}

/// The venv with torch 2.11.0 (`$BAPO_KIT_VENV`, default `~/.cache/bapo/venv-torch211`);
/// for `--test` also transformers and TRL's needs, so that run.sh's PyTorch side runs here.
fn kit_venv(test: bool) -> Result<PathBuf> {
    let dir = match std::env::var_os("BAPO_KIT_VENV") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let home = std::env::var_os("HOME").context("HOME is not set; set BAPO_KIT_VENV")?;
            PathBuf::from(home).join(".cache/bapo/venv-torch211")
        }
    };
    let mut packages = vec![TORCH];
    if test {
        packages.extend(TEST_PACKAGES);
    }
    python::ensure_venv(&dir, &packages)?;
    Ok(dir)
}

/// Builds `bapo` with `tch` and `wgpu` against the venv's torch, in a target folder of its
/// own (the project's usual build links torch 2.9.0); returns the binary and torch's lib/.
fn build(root: &Path, cargo: &str, venv: &Path) -> Result<(PathBuf, PathBuf)> {
    let torch_lib = python::torch_dir(venv)?.join("lib");
    let target = kit_target_dir(root);
    let mut path = OsString::from(venv.join("bin"));
    if let Some(old) = std::env::var_os("PATH") {
        path.push(":");
        path.push(old);
    }
    let args = [
        "build",
        "--release",
        "-p",
        "bapo-cli",
        "--features",
        "tch,wgpu",
    ];
    eprintln!(
        "$ CARGO_TARGET_DIR={} LIBTORCH_USE_PYTORCH=1 LIBTORCH_BYPASS_VERSION_CHECK=1 cargo {}",
        target.display(),
        args.join(" ")
    );
    run(
        Command::new(cargo)
            .args(args)
            .env("CARGO_TARGET_DIR", &target)
            .env("LIBTORCH_USE_PYTORCH", "1")
            // tch 0.22 is made for torch 2.9.0; it compiles against 2.11.0 unchanged.
            .env("LIBTORCH_BYPASS_VERSION_CHECK", "1")
            .env_remove("LIBTORCH")
            .env("PATH", path)
            .current_dir(root),
        "cargo build (the kit's bapo)",
    )?;
    let binary = target.join("release/bapo");
    let needed = build::check_links_libtorch_cuda(&binary)?;
    eprintln!("{} needs {}", binary.display(), needed.join(", "));
    Ok((binary, torch_lib))
}

/// `$CARGO_TARGET_DIR-gpu-kit`, or target/gpu-kit.
fn kit_target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let mut dir = dir;
            dir.push("-gpu-kit");
            PathBuf::from(dir)
        }
        None => root.join("target/gpu-kit"),
    }
}

/// Writes the kit folder afresh.
fn assemble(root: &Path, kit: &Path, binary: &Path, torch_lib: &Path) -> Result<()> {
    if kit.exists() {
        std::fs::remove_dir_all(kit).with_context(|| format!("clearing {}", kit.display()))?;
    }
    std::fs::create_dir_all(kit)?;
    // Stripped, then gzipped (95 MiB stripped, 27 gzipped, measured 2026-11-27); the stripped
    // binary exports SmolLM2's shape below, then goes.
    let stripped = kit.join("bapo");
    run(
        Command::new("strip").arg("-o").arg(&stripped).arg(binary),
        "strip",
    )?;
    run(
        Command::new("gzip").args(["-9", "--keep"]).arg(&stripped),
        "gzip",
    )?;
    for file in ["run.sh", "kit.py"] {
        std::fs::copy(root.join("xtask/gpu-kit").join(file), kit.join(file))
            .with_context(|| format!("copying xtask/gpu-kit/{file}"))?;
    }
    // SmolLM2's shape and tokenizer: the real model exported, its weights left behind.
    let exported = kit.join("export.partial");
    run(
        Command::new(kit.join("bapo"))
            .arg("export")
            .arg("--model")
            .arg(root.join(".cache/assets/SmolLM2-135M-Instruct.Q4_1.gguf"))
            .arg("--out")
            .arg(&exported)
            .env("LD_LIBRARY_PATH", torch_lib),
        "bapo export (SmolLM2's config and tokenizer)",
    )?;
    let shape = kit.join("smollm2-shape");
    std::fs::create_dir_all(&shape)?;
    for file in [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
    ] {
        std::fs::copy(exported.join(file), shape.join(file))
            .with_context(|| format!("copying the exported {file}"))?;
    }
    // Qwen2.5-1.5B's shape (configs/shapes/) with SmolLM2's tokenizer, as the memory bench's.
    crate::bench_memory::shape_folder(
        root,
        &shape,
        "qwen2.5-1.5b",
        &kit.join("qwen2.5-1.5b-shape"),
    )?;
    std::fs::remove_dir_all(&exported)?;
    std::fs::remove_file(&stripped)?;
    download_wheels(&kit.join("wheels"))?;
    download_vulkan_loader(&kit.join("debs"))?;
    std::fs::write(
        kit.join("README.md"),
        format!(
            "The GPU check kit, made by `cargo xtask gpu-kit` (docs/backends.md).\n\n\
             From the repository root on the GPU machine: `OUT=/some/folder bash .gpu-kit/run.sh`.\n\
             bapo was built against {TORCH} (CUDA 13.0) and loads the machine's libtorch.\n"
        ),
    )?;
    Ok(())
}

/// Pure-Python wheels for Python 3.12 on x86-64 Linux (the GPU machine's), no dependencies.
fn download_wheels(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    run(
        Command::new("python3")
            .args([
                "-m",
                "pip",
                "download",
                "--quiet",
                "--disable-pip-version-check",
                "--no-deps",
                "--only-binary=:all:",
                "--python-version",
                "3.12",
                "--implementation",
                "cp",
                "--platform",
                "manylinux2014_x86_64",
                "-d",
            ])
            .arg(dir)
            .args(WHEELS),
        "pip download (the TRL peer's wheels)",
    )
}

/// Debian's Vulkan loader for amd64, which wgpu needs on a machine without one, and the GL
/// dispatch libraries NVIDIA's Vulkan driver (`libGLX_nvidia.so.0`) loads: without them the
/// driver loads nothing and wgpu sees no adapter (seen on the GPU machine, 2026-11-27).
const VULKAN_PACKAGES: [&str; 7] = [
    "libvulkan1",
    "libglvnd0",
    "libgl1",
    "libglx0",
    "libegl1",
    "libgles2",
    "libopengl0",
];

fn download_vulkan_loader(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let lists = std::env::temp_dir().join("bapo-gpu-kit-apt");
    std::fs::create_dir_all(lists.join("partial"))?;
    let options = [
        "-oAPT::Architecture=amd64".to_string(),
        "-oAPT::Architectures=amd64".to_string(),
        format!("-oDir::State::Lists={}", lists.display()),
    ];
    run(
        Command::new("apt-get")
            .args(&options)
            .args(["-qq", "update"]),
        "apt-get update (for the Vulkan loader)",
    )?;
    run(
        Command::new("apt-get")
            .args(&options)
            .args(["-qq", "download"])
            .args(VULKAN_PACKAGES)
            .current_dir(dir),
        "apt-get download (the Vulkan loader and GL dispatch)",
    )
}

/// `run.sh` here, on the CPU stand-ins for the GPU backends.
fn test_run(root: &Path, kit: &Path, venv: &Path) -> Result<()> {
    let out = std::env::temp_dir().join(format!("bapo-gpu-kit-test-{}", std::process::id()));
    if out.exists() {
        std::fs::remove_dir_all(&out)?;
    }
    std::fs::create_dir_all(&out)?;
    let python = venv.join("bin/python");
    eprintln!(
        "$ OUT={} bash .gpu-kit/run.sh --backends \"tch-cpu wgpu-cpu\" --bench-backends tch-cpu --torch-device cpu --steps 2 --budget 1800 --big-shape .gpu-kit/smollm2-shape",
        out.display()
    );
    let status = Command::new("bash")
        .arg(kit.join("run.sh"))
        // SmolLM2's shape on lavapipe (about 2 GFLOP/s) would take far too long: wgpu-cpu runs
        // the tiny run only.
        .args([
            "--backends",
            "tch-cpu wgpu-cpu",
            "--bench-backends",
            "tch-cpu",
        ])
        .args(["--torch-device", "cpu"])
        .arg("--python")
        .arg(&python)
        .args(["--steps", "2", "--budget", "1800"])
        // The 1.5B shape's steps take minutes on a CPU: SmolLM2's stands in for it here.
        .arg("--big-shape")
        .arg(kit.join("smollm2-shape"))
        .env("OUT", &out)
        .current_dir(root)
        .status()
        .context("running run.sh")?;
    if !status.success() {
        bail!(
            "run.sh failed here ({status}); its results are in {}",
            out.display()
        );
    }
    println!("run.sh passed here; its results are in {}", out.display());
    Ok(())
}

fn folder_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            folder_bytes(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}
