//! `bapo probe`: a model's accuracy on every item of the knowledge and alignment probes, by
//! summed log-prob and per character, next to each probe's chance level and what always
//! picking the shortest choice would score, with 95% intervals that resample items (for the
//! country probe, countries: the items about one country are not independent).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use bapo_study::stats::{Bootstrap, Clusters, difference_interval, mean_interval};
use bapo_train::config::EvalSection;
use bapo_train::probes::{ProbeScores, probe_sets, score_probes};
use serde::Serialize;

#[derive(clap::Args)]
pub struct ProbeArgs {
    #[command(flatten)]
    model: crate::device_args::ModelArgs,
    /// The BIG-bench task folder (`cargo xtask fetch` puts it here).
    #[arg(long, default_value = ".cache/assets/bigbench")]
    bigbench_dir: PathBuf,
    /// The country-knowledge probe (the default path falls back to the copy built into bapo).
    #[arg(long, default_value = bapo_train::probes::BUILT_IN_PROBE_PATH)]
    knowledge_probe: PathBuf,
    /// Score at most this many items of each probe, spread over it (0: all of them).
    #[arg(long, default_value_t = 0)]
    items: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Resamples of every interval, and the generator's seed: fixed, so that a rerun prints the
/// same intervals.
const RESAMPLES: usize = 10_000;
const SEED: u64 = 0;
const LEVEL: f64 = 0.95;

#[derive(Serialize)]
struct Estimate {
    value: f64,
    low: f64,
    high: f64,
}

impl Estimate {
    fn of(bootstrap: &Bootstrap) -> Estimate {
        let value = bootstrap.estimate.unwrap_or(f64::NAN);
        let (low, high) = bootstrap.bounds.unwrap_or((f64::NAN, f64::NAN));
        Estimate { value, low, high }
    }

    fn text(&self) -> String {
        format!("{:.3} [{:.3}, {:.3}]", self.value, self.low, self.high)
    }
}

#[derive(Serialize)]
struct ProbeRow {
    probe: String,
    items: usize,
    clusters: usize,
    /// The mean of 1 / choices.
    chance: f64,
    /// What always picking the shortest choice scores.
    shortest_choice: f64,
    /// Accuracy by summed log-prob (lm-eval's `acc`).
    acc: Estimate,
    /// Accuracy per character (lm-eval's `acc_norm`).
    acc_norm: Estimate,
    /// `acc_norm − chance`, paired by item.
    acc_norm_above_chance: Estimate,
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

fn row(scores: &ProbeScores) -> Result<ProbeRow> {
    let mut ids: HashMap<&str, usize> = HashMap::new();
    let cluster_ids: Vec<usize> = scores
        .clusters
        .iter()
        .map(|c| {
            let next = ids.len();
            *ids.entry(c.as_str()).or_insert(next)
        })
        .collect();
    let clusters = Clusters::new(&cluster_ids)?;
    let interval =
        |values: &[f64]| mean_interval(&[values.to_vec()], &clusters, RESAMPLES, LEVEL, SEED);
    let above = difference_interval(
        std::slice::from_ref(&scores.chance),
        std::slice::from_ref(&scores.per_char),
        &clusters,
        RESAMPLES,
        LEVEL,
        SEED,
    )?;
    Ok(ProbeRow {
        probe: scores.name.clone(),
        items: scores.summed.len(),
        clusters: clusters.count(),
        chance: mean(&scores.chance),
        shortest_choice: mean(&scores.shortest_correct),
        acc: Estimate::of(&interval(&scores.summed)?),
        acc_norm: Estimate::of(&interval(&scores.per_char)?),
        acc_norm_above_chance: Estimate::of(&above),
    })
}

pub fn run(args: ProbeArgs) -> Result<()> {
    if let Some(why) = bapo_data::unavailable_reason(&args.bigbench_dir) {
        bail!(
            "the BIG-bench sets are not in {}: {why}; point --bigbench-dir at a copy of the task files",
            args.bigbench_dir.display()
        );
    }
    let (loaded, device) = args.model.open()?;
    let sets = probe_sets(
        &loaded,
        &args.bigbench_dir,
        &args.knowledge_probe,
        args.items,
    )
    .with_context(|| {
        format!(
            "reading the probes ({}, {}; `cargo xtask fetch` fetches BIG-bench)",
            args.bigbench_dir.display(),
            args.knowledge_probe.display()
        )
    })?;
    let limits = default_limits();
    let started = Instant::now();
    let scores = score_probes(&loaded.model, &sets, limits, loaded.pad_token, &device)?;
    let seconds = started.elapsed().as_secs_f64();
    let rows = scores.iter().map(row).collect::<Result<Vec<_>>>()?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    let items: usize = sets.iter().map(|s| s.items.len()).sum();
    println!(
        "{}: {items} items scored in {seconds:.0} s; 95% intervals over items (the country \
         probe's over countries)",
        args.model.model.display(),
    );
    println!(
        "{:<20} {:>5} {:>6} {:>8} {:>22} {:>22} {:>24}",
        "probe", "items", "chance", "shortest", "acc", "acc_norm", "acc_norm − chance"
    );
    for r in &rows {
        println!(
            "{:<20} {:>5} {:>6.3} {:>8.3} {:>22} {:>22} {:>24}",
            r.probe,
            r.items,
            r.chance,
            r.shortest_choice,
            r.acc.text(),
            r.acc_norm.text(),
            r.acc_norm_above_chance.text()
        );
    }
    Ok(())
}

/// The evaluation's default batching, as a run without `[eval]` settings has it.
fn default_limits() -> bapo_train::BatchLimits {
    let eval = EvalSection::default();
    bapo_train::BatchLimits {
        rows: eval.batch_size,
        tokens: eval.batch_tokens,
        head_chunk_tokens: 0,
    }
}
