//! The report on hand-made runs whose answer is known: DPO's probe falls by 30 points on the
//! confirmation countries (50 on the development ones), BAPO's by 0 then 10 points while its
//! style curve crosses the first level half way between those two evaluations, KL-DPO's loss is
//! small and noisy across countries (a borderline claim), the heterogeneity users' DPO loss
//! falls with the reference's win rate. The data file round-trips, and the report from the
//! read-back file is the report from the runs, byte for byte.

use std::path::{Path, PathBuf};

use bapo_study::report::select::{fnv1a64, in_confirmation};
use bapo_study::{Plan, StudyConfig, StudyData, render};
use serde_json::{Value, json};

const CONFIG: &str = r#"
base = "configs/tiny.toml"
dir = "runs/s"
backend = "cpu"
user = "a"
learning_rates = [1e-3]
seeds = [0, 1, 2]
curve_interval = 4

[[settings]]
name = "dpo"
objective = { name = "dpo", beta = 0.1 }

[[settings]]
name = "kl-dpo-0.1"
objective = { name = "kl-dpo", beta = 0.1, lambda_kl = 0.1 }

[[settings]]
name = "bapo-1"
objective = { name = "bapo", lambda = 1.0 }

[[not_tested]]
objective = "mrpo"
why = "No second reference."

[heterogeneity]
users = ["h1", "h2", "h3"]
settings = ["dpo"]
seeds = [0]
learning_rate = 1e-3

[probes]

[rules]
levels = [0.5, 0.9]
retention = [
    { metric = "knowledge/country_facts_norm", name = "country probe", scale = 100.0, unit = "points", margin = 5.0, better = "higher" },
    { metric = "kl/heldout", name = "held-out KL", scale = 1.0, unit = "nats", margin = 0.25, better = "lower" },
]
level = 0.95
alpha = 0.05
resamples = 1000
confirmation_share = 0.5

[quick]
dir = "runs/s-quick"
seeds = [0]
learning_rates = [1e-3]
settings = ["dpo"]
heterogeneity_users = ["h1"]
heterogeneity_seeds = [0]
"#;

/// The base run config (only its fingerprint is used here).
const BASE: &str = "[training]\nseed = 0\nlearning_rate = 1e-3\n";

/// 40 probe countries of 10 items each.
const PROBE_COUNTRIES: usize = 40;
/// 8 held-out countries of 2 prompts (and pairs) each.
const HELD_OUT: usize = 8;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bapo-report-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn plan(root: &Path) -> Plan {
    plan_of(root, CONFIG)
}

/// The plan of study config `text`, written under `root` with the base run config.
fn plan_of(root: &Path, text: &str) -> Plan {
    let path = root.join("study.toml");
    std::fs::write(&path, text).unwrap();
    // The base run config, fingerprinted into every run's data.
    std::fs::create_dir_all(root.join("configs")).unwrap();
    std::fs::write(root.join("configs/tiny.toml"), BASE).unwrap();
    StudyConfig::load(&path).unwrap().plan(false)
}

fn probe_country(i: usize) -> String {
    format!("Country {:02}", i / 10)
}

fn held_out_country(i: usize) -> String {
    format!("Held {}", i / 2)
}

/// The probe items of one run at one step: each country's first `correct(country)` of its
/// 10 items right.
fn probe_items(correct: impl Fn(&str) -> usize) -> Vec<f64> {
    (0..PROBE_COUNTRIES * 10)
        .map(|i| f64::from(u8::from(i % 10 < correct(&probe_country(i)))))
        .collect()
}

/// What one main-grid run holds at step index t (0, 1, 2 for steps 0, 4, 8).
fn main_row(setting: &str, seed: u64, t: usize) -> Value {
    // Items kept right of each country's 6 (of 10), at steps 0, 4, 8.
    let probe = |c: &str| -> usize {
        match setting {
            "dpo" if in_confirmation(c, 0.5) => [6, 4, 3][t],
            "dpo" => [6, 2, 1][t],
            "bapo-1" => [6, 6, 5][t],
            // KL-DPO: three items lost in about a seventh of the countries.
            _ if fnv1a64(c).is_multiple_of(7) => [6, 5, 3][t],
            _ => 6,
        }
    };
    let style = match (setting, t) {
        (_, 0) => 0.2,
        ("dpo", 1) => 0.6,
        ("dpo", _) => 1.0,
        ("bapo-1", 1) => 0.4,
        ("bapo-1", _) => 0.8,
        (_, 1) => 0.5,
        (_, _) => 0.9,
    };
    let kl = match setting {
        "dpo" => t as f64,
        "bapo-1" => 0.01 * t as f64,
        _ => 0.25 * t as f64,
    };
    let margin = if t == 0 { 0.0 } else { 2.0 + seed as f64 };
    json!({
        "step": 4 * t,
        "knowledge/country_facts_norm": probe_items(probe),
        "kl/heldout": vec![kl; HELD_OUT * 2],
        "answer/a/style": vec![style; HELD_OUT * 2],
        "pref/a/margin": vec![margin; HELD_OUT * 2],
        "pref/a/reference_margin": vec![-1.0; HELD_OUT * 2],
        "answer/length": vec![30.0; HELD_OUT * 2],
    })
}

fn labels(user: &str) -> Value {
    let probe: Vec<String> = (0..PROBE_COUNTRIES * 10).map(probe_country).collect();
    let held: Vec<String> = (0..HELD_OUT * 2).map(held_out_country).collect();
    json!({
        "knowledge/country_facts_norm": {"cluster": probe},
        "kl/heldout": {"cluster": held},
        format!("answer/{user}/style"): {"cluster": held},
        format!("pref/{user}/margin"): {"cluster": held},
        format!("pref/{user}/reference_margin"): {"cluster": held},
    })
}

fn write_run(dir: &Path, rows: &[Value], labels: &Value) {
    std::fs::create_dir_all(dir).unwrap();
    let lines: String = rows.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(dir.join("eval_items.jsonl"), lines).unwrap();
    std::fs::write(dir.join("eval_item_labels.json"), labels.to_string()).unwrap();
    std::fs::write(
        dir.join("finished.json"),
        r#"{"steps": 8, "tokens": 12000, "seconds": 61.5}"#,
    )
    .unwrap();
}

/// A heterogeneity run of user `h{k}`: the reference wins k of the 4 pairs of every pair
/// cluster, DPO loses 50 − 10k points on every probe country.
fn heterogeneity_rows(user: &str) -> Vec<Value> {
    let k: usize = user[1..].parse().unwrap();
    let margins: Vec<f64> = (0..32)
        .map(|i| if i % 4 < k { 1.0 } else { -1.0 })
        .collect();
    let lost = 5 - k;
    (0..2)
        .map(|t| {
            let mut row = json!({
                "step": 8 * t,
                "knowledge/country_facts_norm": probe_items(|_| if t == 0 { 6 } else { 6 - lost }),
                "kl/heldout": vec![0.0; 32],
            });
            row[format!("pref/{user}/reference_margin")] = json!(margins);
            row
        })
        .collect()
}

fn heterogeneity_labels(user: &str) -> Value {
    let probe: Vec<String> = (0..PROBE_COUNTRIES * 10).map(probe_country).collect();
    let pairs: Vec<String> = (0..32).map(|i| format!("Pair {}", i / 4)).collect();
    json!({
        "knowledge/country_facts_norm": {"cluster": probe},
        "kl/heldout": {"cluster": pairs},
        format!("pref/{user}/reference_margin"): {"cluster": pairs},
    })
}

fn probe_rows() -> (Vec<Value>, Value) {
    let country = probe_items(|_| 7);
    let general: Vec<f64> = (0..40).map(|i| f64::from(u8::from(i % 5 == 0))).collect();
    let row = |step: usize| {
        json!({
            "step": step,
            "knowledge/country_facts": country,
            "knowledge/country_facts_norm": country,
            "knowledge/general_knowledge": general,
        })
    };
    let probe: Vec<String> = (0..PROBE_COUNTRIES * 10).map(probe_country).collect();
    let chance = vec![0.25; PROBE_COUNTRIES * 10];
    let shortest: Vec<bool> = (0..PROBE_COUNTRIES * 10).map(|i| i % 4 == 0).collect();
    let labels = json!({
        "knowledge/country_facts": {"cluster": probe, "chance": chance, "shortest_correct": shortest},
        "knowledge/country_facts_norm": {"cluster": probe, "chance": chance, "shortest_correct": shortest},
        "knowledge/general_knowledge": {"chance": vec![0.2; 40], "shortest_correct": vec![false; 40]},
    });
    (vec![row(0), row(1)], labels)
}

/// Every cell of the plan written as a finished run under `root`, with its record.
fn write_runs(root: &Path, plan: &Plan) {
    let base = bapo_study::plan::base_fingerprint(root, &plan.base).unwrap();
    for cell in &plan.cells {
        let dir = root.join(&cell.dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join(bapo_rundir::files::STUDY_OVERRIDES_FILE),
            bapo_study::plan::run_record(&base, &cell.overrides),
        )
        .unwrap();
        match cell.grid {
            bapo_study::Grid::Main => {
                let rows: Vec<Value> = (0..3)
                    .map(|t| main_row(&cell.setting, cell.seed, t))
                    .collect();
                write_run(&dir, &rows, &labels(&cell.user));
            }
            bapo_study::Grid::Heterogeneity => {
                write_run(
                    &dir,
                    &heterogeneity_rows(&cell.user),
                    &heterogeneity_labels(&cell.user),
                );
            }
            bapo_study::Grid::Probes => {
                let (rows, labels) = probe_rows();
                write_run(&dir, &rows, &labels);
            }
            bapo_study::Grid::Reference => {}
        }
    }
}

/// The study written, collected, stored and read back: (plan, data path, report).
fn study(name: &str) -> (PathBuf, Plan, PathBuf, String) {
    let root = scratch(name);
    let plan = plan(&root);
    write_runs(&root, &plan);
    let data = StudyData::collect(&root, &plan, &StudyData::default()).unwrap();
    let path = root.join("data.json");
    data.write(&path).unwrap();
    let read = StudyData::read(&path).unwrap();
    let report = render(&plan, &read, "data.json", "").unwrap();
    (root, plan, path, report)
}

/// The table row starting with `first` after the heading line containing `heading`.
fn row_after<'r>(report: &'r str, heading: &str, first: &str) -> &'r str {
    let from = report
        .find(heading)
        .unwrap_or_else(|| panic!("no {heading:?} in\n{report}"));
    report[from..]
        .lines()
        .find(|l| l.starts_with(&format!("| {first} |")))
        .unwrap_or_else(|| panic!("no row {first:?} after {heading:?} in\n{report}"))
}

#[test]
fn fnv1a_is_the_published_function() {
    assert_eq!(fnv1a64(""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a64("a"), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(fnv1a64("foobar"), 0x8594_4171_f739_67e8);
}

#[test]
fn both_halves_hold_countries() {
    let confirmation = (0..PROBE_COUNTRIES)
        .filter(|c| in_confirmation(&probe_country(c * 10), 0.5))
        .count();
    assert!(
        confirmation > 5 && confirmation < PROBE_COUNTRIES - 5,
        "{confirmation}"
    );
    let held = (0..HELD_OUT)
        .filter(|c| in_confirmation(&held_out_country(c * 2), 0.5))
        .count();
    assert!(held > 0 && held < HELD_OUT, "{held}");
}

#[test]
fn dpo_loses_30_points_on_confirmation_countries_and_50_on_development_ones() {
    let (_, _, _, report) = study("split");
    let confirmation = row_after(
        &report,
        "## Changes at the end of training (confirmation half)",
        "dpo",
    );
    assert!(
        confirmation.contains("-30.0 (all seeds equal)"),
        "{confirmation}"
    );
    let development = row_after(
        &report,
        "## Changes at the end of training (development half)",
        "dpo",
    );
    assert!(
        development.contains("-50.0 (all seeds equal)"),
        "{development}"
    );
    let bapo = row_after(
        &report,
        "## Changes at the end of training (confirmation half)",
        "bapo-1",
    );
    assert!(
        bapo.contains("| -10.0 (all seeds equal) | +0.020 (all seeds equal) |"),
        "{bapo}"
    );
}

#[test]
fn retention_at_a_level_is_interpolated_between_evaluations() {
    let (_, _, _, report) = study("level");
    let heading = "**Learning rate 1e-3, level f = 0.5**";
    // DPO's style 0.2 → 0.6 reaches 0.2 + 0.5 · 0.8 = 0.6 at step 4: its change there.
    let dpo = row_after(&report, heading, "dpo");
    assert!(
        dpo.contains("| -20.0 (all seeds equal) (reached in 100%)"),
        "{dpo}"
    );
    // BAPO's style 0.4 → 0.8 reaches 0.6 half way from step 4 (0 points) to step 8 (−10).
    let bapo = row_after(&report, heading, "bapo-1");
    assert!(
        bapo.contains("| -5.0 (all seeds equal) (reached in 100%)"),
        "{bapo}"
    );
    let difference = row_after(&report, heading, "bapo-1 − dpo");
    assert!(
        difference.contains("| +15.0 (all seeds equal)"),
        "{difference}"
    );
}

#[test]
fn a_level_not_reached_says_so() {
    let (_, _, _, report) = study("unreached");
    // Level 0.2 + 0.9 · 0.8 = 0.92: BAPO's style ends at 0.8.
    let bapo = row_after(&report, "**Learning rate 1e-3, level f = 0.9**", "bapo-1");
    assert!(bapo.contains("not reached (reached in 0%)"), "{bapo}");
    let dpo = row_after(&report, "**Learning rate 1e-3, level f = 0.9**", "dpo");
    // DPO: 0.92 is 0.8 of the way from 0.6 (−20) to 1.0 (−30).
    assert!(dpo.contains("| -28.0"), "{dpo}");
}

#[test]
fn accuracy_counts_ties_half() {
    let (_, _, _, report) = study("ties");
    let row = row_after(&report, "held-out accuracy, ties half**", "dpo");
    assert!(
        row.starts_with("| dpo | 0.500 (all seeds equal) | 1.000"),
        "{row}"
    );
}

#[test]
fn holm_leaves_a_borderline_claim_not_shown() {
    let (_, _, _, report) = study("holm");
    let line = report
        .lines()
        .find(|l| l.starts_with("| (b) kl-dpo-0.1 forgets at lr 1e-3: country probe"))
        .unwrap_or_else(|| panic!("no claim (b) in\n{report}"));
    let cells: Vec<&str> = line.split(" | ").collect();
    let raw: f64 = cells[2].parse().unwrap();
    let adjusted: f64 = cells[3].parse().unwrap();
    assert!(raw <= 0.05 && adjusted > 0.05, "{line}");
    assert!(line.ends_with("| not shown |"), "{line}");
    let dpo = report
        .lines()
        .find(|l| l.starts_with("| (a) dpo forgets at lr 1e-3: country probe"))
        .unwrap();
    assert!(dpo.ends_with("| agrees |"), "{dpo}");
}

#[test]
fn heterogeneity_slope_and_probes_without_signal() {
    let (_, _, _, report) = study("slope");
    assert!(report.contains("| h1 | 0.250"), "{report}");
    let slope = report
        .lines()
        .find(|l| l.starts_with("Slope (points per unit of win rate): +40.0"))
        .unwrap_or_else(|| panic!("no slope in\n{report}"));
    assert!(slope.contains("OLS t 95%: +40.0 [+40.0, +40.0]"), "{slope}");
    assert!(report.contains("No signal at this model size: `knowledge/general_knowledge`."));
    let probe = row_after(
        &report,
        "## The probes before training",
        "`knowledge/country_facts`",
    );
    assert!(
        probe.contains("| 70.0 (all seeds equal) items only |")
            && probe.ends_with("| summed, per character |"),
        "{probe}"
    );
}

#[test]
fn the_data_file_round_trips_and_regenerates_the_report_byte_for_byte() {
    let (root, plan, path, report) = study("roundtrip");
    let text = std::fs::read_to_string(&path).unwrap();
    let read = StudyData::read(&path).unwrap();
    assert_eq!(read.to_text().unwrap(), text);
    let from_runs = StudyData::collect(&root, &plan, &StudyData::default()).unwrap();
    assert_eq!(render(&plan, &from_runs, "data.json", "").unwrap(), report);
    // Rewritten from what was read: the same bytes again.
    let again = root.join("again.json");
    read.write(&again).unwrap();
    assert_eq!(std::fs::read_to_string(&again).unwrap(), text);
    assert!(report.contains("| dpo | 3 | 12000 | 62 s |"), "{report}");
}

/// The full study spans sittings on machines that do not keep runs/: the runs of the data file
/// committed by earlier sittings are carried into the next one, the same bytes as if every run
/// were on this machine; a run made with other overrides is not taken for its cell.
#[test]
fn runs_of_earlier_sittings_are_carried_from_the_data_file() {
    let (root, plan, path, _) = study("sittings");
    let whole = std::fs::read_to_string(&path).unwrap();
    // A first sitting made every run but the probe check (the plan's first cell, whose labels
    // come first in the whole file: carried runs must be re-indexed).
    let probes = plan
        .cells
        .iter()
        .find(|c| c.grid == bapo_study::Grid::Probes)
        .unwrap();
    let aside = root.join("probes-aside");
    std::fs::rename(root.join(&probes.dir), &aside).unwrap();
    let first = StudyData::collect(&root, &plan, &StudyData::default()).unwrap();
    let first_path = root.join("first.json");
    first.write(&first_path).unwrap();
    let recorded = StudyData::read(&first_path).unwrap();
    assert_eq!(
        recorded.runs.len() + 1,
        StudyData::read(&path).unwrap().runs.len()
    );
    // The next sitting, on a new machine, made the probe check alone.
    for cell in &plan.cells {
        let _ = std::fs::remove_dir_all(root.join(&cell.dir));
    }
    std::fs::rename(&aside, root.join(&probes.dir)).unwrap();
    let carried = StudyData::collect(&root, &plan, &recorded).unwrap();
    assert_eq!(carried.to_text().unwrap(), whole);
    // Without the data file only the probe check is left.
    let alone = StudyData::collect(&root, &plan, &StudyData::default()).unwrap();
    assert_eq!(alone.runs.len(), 1);

    // A cell of an edited config is not the recorded run.
    let base = bapo_study::plan::base_fingerprint(&root, &plan.base).unwrap();
    let mut edited = plan.clone();
    let main = edited
        .cells
        .iter()
        .position(|c| c.grid == bapo_study::Grid::Main)
        .unwrap();
    edited.cells[main]
        .overrides
        .push("training.max_steps=3".into());
    assert!(recorded.recorded(&edited.cells[main], &base).is_none());
    assert!(
        recorded
            .recorded_otherwise(&edited.cells[main], &base)
            .is_some()
    );
    assert!(recorded.recorded(&plan.cells[main], &base).is_some());
    // collect refuses it too, rather than drop a committed run from the next file, and
    // refuses a plan that no longer has a recorded run.
    let refused = StudyData::collect(&root, &edited, &recorded)
        .unwrap_err()
        .to_string();
    assert!(refused.contains("other settings"), "{refused}");
    let mut trimmed = plan.clone();
    trimmed.cells.remove(main);
    let refused = StudyData::collect(&root, &trimmed, &recorded)
        .unwrap_err()
        .to_string();
    assert!(refused.contains("not a cell of the plan"), "{refused}");
    // The same setting, user and seed at another learning rate is another cell, not an
    // edited one (its run directory says so).
    let mut other_rate = plan.cells[main].clone();
    other_rate.learning_rate *= 4.0;
    other_rate.dir = other_rate.dir.with_file_name("dpo-lr9-u-seed0");
    other_rate
        .overrides
        .push("optimizer.learning_rate=9".into());
    assert!(recorded.recorded(&other_rate, &base).is_none());
    assert!(recorded.recorded_otherwise(&other_rate, &base).is_none());

    // Nor is any of them when the base config's settings change (issue #26, item 9); its
    // comments and layout do not count.
    let base_file = root.join("configs/tiny.toml");
    std::fs::write(&base_file, format!("# a comment\n\n{BASE}")).unwrap();
    assert_eq!(
        bapo_study::plan::base_fingerprint(&root, &plan.base).unwrap(),
        base
    );
    let same = StudyData::collect(&root, &plan, &recorded).unwrap();
    assert_eq!(same.to_text().unwrap(), whole);
    std::fs::write(&base_file, BASE.replace("1e-3", "2e-3")).unwrap();
    let other = bapo_study::plan::base_fingerprint(&root, &plan.base).unwrap();
    assert_ne!(other, base);
    assert!(recorded.recorded(&plan.cells[main], &other).is_none());
    let after_edit = StudyData::collect(&root, &plan, &recorded)
        .unwrap_err()
        .to_string();
    assert!(
        after_edit.contains("study-overrides.txt") && after_edit.contains("other settings"),
        "{after_edit}"
    );
}

#[test]
fn a_corrupt_data_file_is_an_error_naming_the_file() {
    let (root, _, path, _) = study("corrupt");
    let text = std::fs::read_to_string(&path).unwrap();
    let cut = root.join("cut.json");
    std::fs::write(&cut, &text[..text.len() / 2]).unwrap();
    let error = StudyData::read(&cut).unwrap_err().to_string();
    assert!(error.contains("cut.json"), "{error}");
    let bad = root.join("bad.json");
    std::fs::write(&bad, text.replacen("\"labels\":0,", "\"labels\":99,", 1)).unwrap();
    let error = StudyData::read(&bad).unwrap_err().to_string();
    assert!(
        error.contains("bad.json") && error.contains("labels 99 does not exist"),
        "{error}"
    );
}

/// A synthetic full grid (79 runs: 42 main runs of 5 evaluations, 36 heterogeneity runs of 2,
/// the probe check) of realistic values: the file stays a few MB.
#[test]
fn a_full_grid_fits_in_a_few_megabytes() {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut runs = Vec::new();
    for (n, evaluations) in [(42, 5), (36, 2), (1, 2)] {
        for seed in 0..n {
            let mut metrics = serde_json::Map::new();
            let mut add = |name: &str, items: usize, real: bool, scale: f64| {
                let rows: Vec<Vec<f64>> = (0..evaluations)
                    .map(|_| {
                        (0..items)
                            .map(|_| {
                                let v = next();
                                if real {
                                    bapo_study::data::round4((v - 0.5) * scale)
                                } else {
                                    f64::from(u8::from(v < 0.6))
                                }
                            })
                            .collect()
                    })
                    .collect();
                metrics.insert(name.into(), json!({"labels": 0, "values": rows}));
            };
            add("knowledge/country_facts_norm", 1000, false, 1.0);
            add("knowledge/country_facts", 1000, false, 1.0);
            add("answer/u/fact", 128, false, 1.0);
            add("answer/u/style", 128, false, 1.0);
            add("knowledge/facts_logp", 64, true, 20.0);
            add("kl/heldout", 128, true, 2.0);
            add("pref/u/margin", 128, true, 40.0);
            add("pref/u/reference_margin", 128, true, 40.0);
            // A real cell's overrides: about 15 `key=value` settings.
            let overrides: Vec<String> = (0..15)
                .map(|i| format!("section.some_setting_{i}=\"value {seed}\""))
                .collect();
            runs.push(
                json!({"grid": "main", "dir": format!("runs/study/dpo-lr0.002-u-seed{seed}"),
                "setting": "dpo", "objective": "dpo", "user": "u",
                "seed": seed, "learning_rate": 0.002, "cost": null,
                "base": format!("configs/quickstart.toml sha256:{}", "0".repeat(64)),
                "overrides": overrides,
                "steps": (0..evaluations).collect::<Vec<usize>>(), "metrics": metrics}),
            );
        }
    }
    let file =
        json!({"format": bapo_study::data::FORMAT, "clusters": [], "labels": [{}], "runs": runs});
    let data: StudyData = serde_json::from_value(file).unwrap();
    let size = data.to_text().unwrap().len();
    eprintln!("synthetic full grid: {size} bytes");
    assert!(size < 6_000_000, "{size} bytes");
}

/// Two figures read from the runs' own logs: the first step's gradient norm (every run has
/// it; seed k of setting s logs 10·s + k) and the last `anchor/drift` of the evaluations
/// (only BAPO's runs log it).
const LOG_FIGURES: &str = r#"
[[log_figures]]
name = "step-1 grad norm"
log = "metrics"
key = "grad_norm"
at = "step 1"

[[log_figures]]
name = "drift"
log = "eval"
key = "anchor/drift"
at = "last"
"#;

#[test]
fn log_figures_are_collected_kept_in_the_data_file_and_shown_per_setting() {
    let root = scratch("log-figures");
    let plan = plan_of(&root, &format!("{CONFIG}{LOG_FIGURES}"));
    write_runs(&root, &plan);
    for (s, setting) in ["dpo", "kl-dpo-0.1", "bapo-1"].iter().enumerate() {
        for cell in plan.cells.iter().filter(|c| &c.setting == setting) {
            let dir = root.join(&cell.dir);
            let norm = 10.0 * s as f64 + cell.seed as f64;
            // Step 1 logged twice (a resumed run), the second line alike: the first counts.
            let metrics = format!(
                "{{\"step\":1,\"grad_norm\":{norm}}}\n{{\"step\":1,\"grad_norm\":{norm}}}\n{{\"step\":2,\"grad_norm\":99}}\n"
            );
            std::fs::write(dir.join("metrics.jsonl"), metrics).unwrap();
            let drift = |v: f64| {
                if *setting == "bapo-1" {
                    format!(",\"anchor/drift\":{v}")
                } else {
                    String::new()
                }
            };
            let eval = format!(
                "{{\"step\":0{}}}\n{{\"step\":8{}}}\n",
                drift(0.0),
                drift(1.5 + cell.seed as f64)
            );
            std::fs::write(dir.join("eval.jsonl"), eval).unwrap();
        }
    }
    let path = root.join("data.json");
    StudyData::collect(&root, &plan, &StudyData::default())
        .unwrap()
        .write(&path)
        .unwrap();
    let read = StudyData::read(&path).unwrap();
    let report = render(&plan, &read, "data.json", "").unwrap();
    let logs = &report[report.find("## The runs' logs").expect("the section")..];
    assert_eq!(
        row_after(logs, "Learning rate 1e-3", "dpo"),
        "| dpo | 0, 1, 2 | 1.00 (0, 1.00, 2.00) | — |"
    );
    assert_eq!(
        row_after(logs, "Learning rate 1e-3", "bapo-1"),
        "| bapo-1 | 0, 1, 2 | 21.0 (20.0, 21.0, 22.0) | 2.50 (1.50, 2.50, 3.50) |"
    );
    assert_eq!(
        row_after(logs, "| figure |", "step-1 grad norm"),
        "| step-1 grad norm | `metrics.jsonl` | `grad_norm` | step 1 |"
    );
    // Without figures in the config, no section (the full study's report is unchanged).
    assert!(!study("no-figures").3.contains("## The runs' logs"));

    // A finished run without the log a figure reads is an error naming the file.
    let dpo = plan.cells.iter().find(|c| c.setting == "dpo").unwrap();
    std::fs::remove_file(root.join(&dpo.dir).join("metrics.jsonl")).unwrap();
    let e = StudyData::collect(&root, &plan, &StudyData::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("metrics.jsonl"), "{e}");
}

/// A study of the main grid alone (no heterogeneity grid, probe check or `[quick]`), with a
/// title of its own: its report has neither section nor the heterogeneity figure, and says
/// there is no heterogeneity grid.
#[test]
fn a_study_of_the_main_grid_alone_reports_it_alone() {
    let at = |table: &str| CONFIG.find(table).unwrap();
    // The settings, then the rules: without [heterogeneity], [probes] and [quick].
    let text = format!(
        "title = \"The main grid alone\"\n{}{}",
        &CONFIG[..at("[heterogeneity]")],
        &CONFIG[at("[rules]")..at("[quick]")]
    );
    let root = scratch("main-alone");
    let plan = plan_of(&root, &text);
    write_runs(&root, &plan);
    let data = StudyData::collect(&root, &plan, &StudyData::default()).unwrap();
    assert_eq!(data.runs.len(), 9);
    let report = render(&plan, &data, "data.json", "").unwrap();
    assert!(report.starts_with("# The main grid alone\n"), "{report}");
    assert!(report.contains("No heterogeneity grid."), "{report}");
    for absent in [
        "## Heterogeneity",
        "## The probes",
        "heterogeneity.png",
        "(e) ",
    ] {
        assert!(!report.contains(absent), "{absent} in\n{report}");
    }
    assert!(report.contains("## Verdict"), "{report}");
}
