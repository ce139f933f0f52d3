//! The report, written from hand-made run directories whose changes are known: DPO forgets 30
//! points of the probe, BAPO personalises as much and forgets nothing, KL-DPO personalises
//! less; on the more heterogeneous user DPO forgets more.

use std::path::{Path, PathBuf};

use bapo_study::{StudyConfig, write_report};

const CONFIG: &str = r#"
base = "configs/tiny.toml"
dir = "runs/study"
backend = "cpu"
user = "a"
seeds = [0, 1]

[[settings]]
name = "dpo"
objective = { name = "dpo" }

[[settings]]
name = "kl-dpo-1"
objective = { name = "kl-dpo", lambda_kl = 1.0 }

[[settings]]
name = "bapo-1"
objective = { name = "bapo", lambda = 1.0 }

[heterogeneity]
users = ["b"]
settings = ["dpo", "bapo-1"]
seeds = [0]

[quick]
dir = "runs/study-quick"
seeds = [0]
settings = ["dpo"]
heterogeneity_users = []
"#;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bapo-report-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `n` items, the first `ones` of which are 1.
fn ones(n: usize, ones: usize) -> Vec<f64> {
    (0..n).map(|i| f64::from(i < ones)).collect()
}

/// A finished run: step 0 and step 8 with the given items.
fn write_run(dir: &Path, trained: &str, end_accuracy: usize, end_probe: usize, seed: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let other = if trained == "a" { "b" } else { "a" };
    // The trained user's reference margin: user a agrees with the reference, b does not.
    let margin = |user: &str| if user == "a" { 10.0 } else { -30.0 };
    let row = |step: usize, accuracy: Vec<f64>, probe: Vec<f64>| {
        serde_json::json!({
            "step": step,
            format!("pref/{trained}/accuracy"): accuracy,
            format!("pref/{trained}/reference_margin"): vec![margin(trained); 20],
            format!("pref/{other}/accuracy"): vec![0.0; 20],
            format!("pref/{other}/reference_margin"): vec![margin(other); 20],
            "knowledge/country_facts": probe,
            // One seed forgets a little more of qa_wikidata than the other.
            "knowledge/facts_logp": vec![-5.0 - step as f64 / 8.0 * seed as f64; 10],
        })
        .to_string()
    };
    let text = format!(
        "{}\n{}\n",
        row(0, vec![0.0; 20], ones(100, 60)),
        row(8, ones(20, end_accuracy), ones(100, end_probe))
    );
    std::fs::write(dir.join("eval_items.jsonl"), text).unwrap();
    std::fs::write(dir.join("summary.md"), "# Run summary\n").unwrap();
}

fn report(root: &Path) -> String {
    let config_path = root.join("study.toml");
    std::fs::write(&config_path, CONFIG).unwrap();
    let plan = StudyConfig::load(&config_path).unwrap().plan(false);
    for cell in &plan.cells {
        let dir = root.join(&cell.dir);
        // (held-out accuracy out of 20, probe out of 100) at the end; 60 before.
        let (accuracy, probe) = match (cell.setting.as_str(), cell.user.as_str()) {
            ("dpo", "a") => (16, 30),
            ("bapo-1", "a") => (16, 60),
            ("kl-dpo-1", "a") => (6, 50),
            ("dpo", "b") => (16, 10),
            ("bapo-1", "b") => (16, 60),
            other => panic!("unexpected cell {other:?}"),
        };
        write_run(&dir, &cell.user, accuracy, probe, cell.seed);
    }
    let written = write_report(root, &plan, false).unwrap();
    assert!(written.iter().any(|f| f.ends_with("report.md")));
    std::fs::read_to_string(root.join("runs/study/report.md")).unwrap()
}

#[test]
fn the_tables_hold_the_known_changes() {
    let root = scratch("tables");
    let text = report(&root);
    // DPO: +80 points of held-out accuracy, −30 of the probe, every item moving the same way
    // in both seeds, so the seed interval is a point.
    let dpo: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("| `dpo` | 2 |"))
        .collect();
    assert_eq!(
        dpo.len(),
        2,
        "a personalisation and a retention row:\n{text}"
    );
    assert!(dpo[0].contains("| +80.0 ["), "{}", dpo[0]);
    assert!(dpo[1].contains("| -30.0 ["), "{}", dpo[1]);
    assert!(dpo[1].contains("(-30.0, -30.0)"), "{}", dpo[1]);
    // The probe's reference score and chance.
    assert!(
        text.contains("| `knowledge/country_facts` | 100 | 0.600 [")
            && text.contains("] | 0.250 |"),
        "{text}"
    );
    // Against DPO: BAPO keeps 30 points more at the same personalisation; KL-DPO personalises
    // 50 points less.
    let bapo = text
        .lines()
        .find(|l| l.starts_with("| `bapo-1` | +0.00 ["))
        .unwrap_or_else(|| panic!("no BAPO row against DPO:\n{text}"));
    assert!(bapo.contains("| yes | +30.0 ["), "{bapo}");
    let kl = text
        .lines()
        .find(|l| l.starts_with("| `kl-dpo-1` | -50.0 ["))
        .unwrap_or_else(|| panic!("no KL-DPO row against DPO:\n{text}"));
    assert!(kl.contains("| no |"), "{kl}");
    // Heterogeneity: a (reference margin +10) before b (−30), so a's is −10 and b's +30.
    let a = text
        .lines()
        .position(|l| l.starts_with("| a | -10.0"))
        .unwrap();
    let b = text
        .lines()
        .position(|l| l.starts_with("| b | +30.0"))
        .unwrap();
    assert!(a < b, "{text}");
    // DPO loses 30 points on a and 50 on b: −20 points over 40 nats.
    assert!(text.contains("- `dpo`: -0.50 ["), "{text}");
}

#[test]
fn the_verdict_follows_from_the_intervals() {
    let root = scratch("verdict");
    let text = report(&root);
    let verdict = &text[text.find("## Verdict").expect("a verdict")..];
    for expected in [
        "**DPO forgets measurably in this regime.**",
        "**BAPO retains more than DPO at matched personalisation.**",
        "**KL-DPO: no setting personalises as much as DPO.**",
        "**Heterogeneity, `dpo`:** forgetting grows with heterogeneity",
        "**Heterogeneity, `bapo-1`:** forgetting shows no measurable trend",
        "**Claim: personalisation makes the model forget** — agrees",
        "**Claim: the loss varies with heterogeneity** — agrees that it varies",
        "so the loss is larger for users further from what the reference prefers",
        "**Claim: a KL constraint does not prevent it** — agrees, in part",
        "**Claim: BAPO keeps the knowledge at matched personalisation** — agrees",
    ] {
        assert!(
            verdict.contains(expected),
            "missing {expected:?} in\n{verdict}"
        );
    }
}

#[test]
fn unfinished_runs_are_listed_not_reported() {
    let root = scratch("unfinished");
    report(&root);
    std::fs::remove_file(root.join("runs/study/bapo-1-a-seed1/summary.md")).unwrap();
    let plan = StudyConfig::load(&root.join("study.toml"))
        .unwrap()
        .plan(false);
    write_report(&root, &plan, false).unwrap();
    let text = std::fs::read_to_string(root.join("runs/study/report.md")).unwrap();
    assert!(
        text.contains("Runs not finished: `runs/study/bapo-1-a-seed1`"),
        "{text}"
    );
    assert!(text.contains("| `bapo-1` | 1 |"), "{text}");
}
