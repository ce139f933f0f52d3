//! `cargo xtask train --objective X --backend Y [--config C] [--set k=v]… [--resume]`: builds
//! the binary that has the objective (bapo, or an objective crate's own `bapo-<name>`) with
//! the backend's feature, then runs `train` with it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::build::{build_binary, check_links_libtorch_cuda, feature, objective_binary};

const USAGE: &str = "usage: cargo xtask train [--objective NAME] [--backend cpu|tch-cpu|cuda|wgpu|wgpu-cpu] [--config FILE] [--set key=value]… [--resume] [--force-anchors] [--quiet]";

/// `cargo xtask train …`.
pub fn train(root: &Path, cargo: &str, args: &[String]) -> Result<()> {
    let args = TrainArgs::parse(root, args)?;
    let features: Vec<&str> = feature(&args.backend)?.into_iter().collect();
    crate::fetch::fetch(root)?;
    let config = ConfigDefaults::read(&args.config)?;
    let objective = args
        .objective
        .clone()
        .unwrap_or_else(|| config.objective.clone().unwrap_or_default());
    let (package, bin) = objective_binary(root, cargo, &objective)?;
    let (binary, env) = build_binary(root, cargo, (&package, &bin), &features, false)?;
    if args.backend == "cuda" {
        check_links_libtorch_cuda(&binary)?;
    }
    let mut command = train_command(&binary, &args, &config, &objective);
    command
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(root);
    eprintln!("$ {}", describe(&command));
    let status = command.status().context("running bapo")?;
    if !status.success() {
        bail!("bapo train failed ({status})");
    }
    Ok(())
}

/// The task's own arguments; the rest goes to `bapo train` as given.
struct TrainArgs {
    objective: Option<String>,
    backend: String,
    config: PathBuf,
    passthrough: Vec<String>,
}

impl TrainArgs {
    fn parse(root: &Path, args: &[String]) -> Result<TrainArgs> {
        let mut parsed = TrainArgs {
            objective: None,
            backend: "cpu".into(),
            config: root.join("configs/quickstart.toml"),
            passthrough: Vec::new(),
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut value = |name: &str| {
                it.next()
                    .cloned()
                    .with_context(|| format!("{name} needs a value"))
            };
            match arg.as_str() {
                "--objective" => parsed.objective = Some(value("--objective")?),
                "--backend" => parsed.backend = value("--backend")?,
                "--config" => parsed.config = PathBuf::from(value("--config")?),
                "--set" => {
                    parsed.passthrough.push("--set".into());
                    parsed.passthrough.push(value("--set")?);
                }
                "--resume" | "--force-anchors" | "--quiet" => parsed.passthrough.push(arg.clone()),
                other => bail!("unknown argument `{other}`\n{USAGE}"),
            }
        }
        Ok(parsed)
    }
}

/// What the config file sets of the three keys the task decides with. Read as plain TOML:
/// xtask does not link bapo-train (it would build Burn), and `bapo train` checks the rest.
struct ConfigDefaults {
    /// `objective.name`.
    objective: Option<String>,
    /// `training.backend` (its default: `cpu`).
    backend: String,
    /// `output.dir` (its default: `runs/run`).
    out: String,
}

impl ConfigDefaults {
    fn read(config: &Path) -> Result<ConfigDefaults> {
        let text = std::fs::read_to_string(config)
            .with_context(|| format!("reading {}", config.display()))?;
        let table: toml::Table = text
            .parse()
            .with_context(|| format!("parsing {}", config.display()))?;
        let setting = |section: &str, key: &str| {
            table
                .get(section)
                .and_then(|s| s.get(key))
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        Ok(ConfigDefaults {
            objective: setting("objective", "name"),
            backend: setting("training", "backend").unwrap_or_else(|| "cpu".into()),
            out: setting("output", "dir").unwrap_or_else(|| "runs/run".into()),
        })
    }
}

/// `binary train` with the task's objective and backend.
fn train_command(
    binary: &Path,
    args: &TrainArgs,
    config: &ConfigDefaults,
    objective: &str,
) -> Command {
    let backend = &args.backend;
    let mut command = Command::new(binary);
    command.arg("train").arg("--config").arg(&args.config);
    command.args(["--set", &format!("training.backend={backend}")]);
    // Another objective than the config's starts from that objective's defaults (the config's
    // settings belong to its own objective): `bapo train --objective` does that.
    if !objective.is_empty() {
        command.args(["--objective", objective]);
    }
    // A run that differs from the config's objective or backend gets its own directory, so
    // that it never meets the config's own run (set `output.dir` to choose another).
    let differs = config.objective.as_deref() != Some(objective) || config.backend != *backend;
    let out_set = args
        .passthrough
        .iter()
        .any(|a| a.starts_with("output.dir="));
    if differs && !out_set {
        let out = format!("{}-{objective}-{backend}", config.out);
        command.args(["--set", &format!("output.dir={out:?}")]);
    }
    command.args(&args.passthrough);
    command
}

/// The command line, for the log.
pub fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}
