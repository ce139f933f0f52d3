//! Where a model stands on the knowledge and alignment probes before any training: every item
//! of BIG-bench's `hhh_alignment` (221, as a two-choice question), `general_knowledge` (70) and
//! `misconceptions` (219), and of the country-knowledge probe (657, per kind), each scored by
//! the summed log-prob of its choices (lm-eval's `acc`) and per character (`acc_norm`), with
//! each item's chance level (1 / its choices) and whether its shortest choice is the right one
//! (what a length-only rule would score). `bapo probe` prints them with their intervals; the
//! study uses the table to know which probe has room to measure forgetting at which model size
//! (docs/evaluation.md).

use std::path::Path;

use bapo_data::{MultipleChoiceItem, PreferenceItem, load_hhh_alignment, load_multiple_choice};
use bapo_model::{CausalLm, LoadedModel};
use burn::tensor::Device;

use crate::TrainError;
use crate::eval::{BatchLimits, ChoiceTokens, EvalSets, choose};
use crate::prepare::{knowledge_probe, spread};

pub use bapo_data::BUILT_IN_PROBE_PATH;

/// The country probe's sets are `country_<kind>`; [`score_probes`] adds `country_facts`, all
/// of them together.
const COUNTRY: &str = "country";

/// One probe's items, tokenised, and the cluster each belongs to (items about one country
/// share it; a BIG-bench item is its own).
#[derive(Debug, Clone)]
pub struct ProbeSet {
    pub name: String,
    pub items: Vec<ChoiceTokens>,
    pub clusters: Vec<String>,
}

/// Every item of one probe, scored.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeScores {
    pub name: String,
    /// 1 where the summed log-prob picks the right choice, else 0.
    pub summed: Vec<f64>,
    /// 1 where the log-prob per character picks the right choice, else 0.
    pub per_char: Vec<f64>,
    /// 1 / the item's number of choices.
    pub chance: Vec<f64>,
    /// 1 where the shortest choice (in characters) is the right one, else 0.
    pub shortest_correct: Vec<f64>,
    pub clusters: Vec<String>,
}

/// The BIG-bench sets under `bigbench_dir` and the country probe at `knowledge_probe` (its
/// built-in copy for the default path), tokenised by `model`: every item, or at most
/// `at_most` of each set spread over it (0: every item).
pub fn probe_sets(
    model: &LoadedModel,
    bigbench_dir: &Path,
    knowledge_probe_path: &Path,
    at_most: usize,
) -> Result<Vec<ProbeSet>, TrainError> {
    let mut sets = Vec::new();
    let mut add = |name: &str, items: &[MultipleChoiceItem], clusters: Option<Vec<String>>| {
        let clusters =
            clusters.unwrap_or_else(|| (0..items.len()).map(|i| i.to_string()).collect());
        let count = if at_most == 0 { items.len() } else { at_most };
        let (items, clusters) = (spread(items, count), spread(&clusters, count));
        let tokens = EvalSets::tokenize_choices(model, &items, name)?;
        sets.push(ProbeSet {
            name: name.to_string(),
            items: tokens,
            clusters,
        });
        Ok::<(), TrainError>(())
    };
    let hhh: Vec<MultipleChoiceItem> = load_hhh_alignment(bigbench_dir)?
        .iter()
        .map(PreferenceItem::two_choice)
        .collect();
    add("hhh_alignment", &hhh, None)?;
    for name in ["general_knowledge", "misconceptions"] {
        add(name, &load_multiple_choice(bigbench_dir, name)?, None)?;
    }
    let probe = knowledge_probe(knowledge_probe_path)?;
    let mut kinds: Vec<&str> = probe.iter().map(|p| p.kind.as_str()).collect();
    kinds.sort_unstable();
    kinds.dedup();
    for kind in kinds {
        let of_kind: Vec<_> = probe.iter().filter(|p| p.kind == kind).collect();
        let items: Vec<MultipleChoiceItem> = of_kind.iter().map(|p| p.item.clone()).collect();
        let clusters = of_kind.iter().map(|p| p.entity.clone()).collect();
        add(&format!("{COUNTRY}_{kind}"), &items, Some(clusters))?;
    }
    Ok(sets)
}

/// Scores every item of `sets` with `model`, batched within `limits`; then the country
/// probe's kinds together as `country_facts`.
pub fn score_probes(
    model: &CausalLm,
    sets: &[ProbeSet],
    limits: BatchLimits,
    pad_id: u32,
    device: &Device,
) -> Result<Vec<ProbeScores>, TrainError> {
    let mut scores = sets
        .iter()
        .map(|set| score_set(model, set, limits, pad_id, device))
        .collect::<Result<Vec<_>, _>>()?;
    let prefix = format!("{COUNTRY}_");
    let kinds: Vec<&ProbeScores> = scores
        .iter()
        .filter(|s| s.name.starts_with(&prefix))
        .collect();
    if !kinds.is_empty() {
        let all = |field: fn(&ProbeScores) -> &Vec<f64>| -> Vec<f64> {
            kinds
                .iter()
                .flat_map(|s| field(s).iter().copied())
                .collect()
        };
        let total = ProbeScores {
            name: format!("{COUNTRY}_facts"),
            summed: all(|s| &s.summed),
            per_char: all(|s| &s.per_char),
            chance: all(|s| &s.chance),
            shortest_correct: all(|s| &s.shortest_correct),
            clusters: kinds.iter().flat_map(|s| s.clusters.clone()).collect(),
        };
        scores.push(total);
    }
    Ok(scores)
}

/// Every item of `set`, scored.
fn score_set(
    model: &CausalLm,
    set: &ProbeSet,
    limits: BatchLimits,
    pad_id: u32,
    device: &Device,
) -> Result<ProbeScores, TrainError> {
    let indicator = |flag: bool| if flag { 1.0 } else { 0.0 };
    let chosen = choose(model, &set.items, limits, pad_id, device)?;
    Ok(ProbeScores {
        name: set.name.clone(),
        summed: chosen.iter().map(|c| indicator(c.summed)).collect(),
        per_char: chosen.iter().map(|c| indicator(c.per_char)).collect(),
        chance: set
            .items
            .iter()
            .map(|i| 1.0 / i.choices.len().max(1) as f64)
            .collect(),
        shortest_correct: set
            .items
            .iter()
            .map(|i| indicator(i.shortest_is_correct()))
            .collect(),
        clusters: set.clusters.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::evaluate;

    /// The probe's first items of every set, on SmolLM2: HHH as a two-choice question scores
    /// what the run's evaluation scores for it (the better answer more likely), every set has
    /// its chance level, and `country_facts` is the country kinds together.
    #[test]
    fn probes_score_as_the_evaluation_does() {
        let (Some(model), Some(bigbench)) = (
            bapo_testkit::asset("SmolLM2-135M-Instruct.Q4_1.gguf"),
            bapo_testkit::asset("bigbench"),
        ) else {
            return;
        };
        let device = Device::flex();
        let loaded = LoadedModel::open(&model, &device).unwrap();
        let probe = std::path::PathBuf::from(BUILT_IN_PROBE_PATH);
        let mut sets = probe_sets(&loaded, &bigbench, &probe, 0).unwrap();
        let sizes: Vec<(&str, usize)> = sets
            .iter()
            .map(|s| (s.name.as_str(), s.items.len()))
            .collect();
        assert_eq!(
            sizes,
            [
                ("hhh_alignment", 221),
                ("general_knowledge", 70),
                ("misconceptions", 219),
                ("country_border", 163),
                ("country_capital", 247),
                ("country_subregion", 247),
            ]
        );
        for set in &mut sets {
            set.items.truncate(6);
            set.clusters.truncate(6);
        }
        let limits = BatchLimits {
            rows: 8,
            tokens: 4096,
            head_chunk_tokens: 0,
        };
        let scores = score_probes(&loaded.model, &sets, limits, loaded.pad_token, &device).unwrap();

        let hhh: Vec<_> = load_hhh_alignment(&bigbench).unwrap()[..6].to_vec();
        let eval_sets = EvalSets {
            hhh: EvalSets::tokenize_hhh(&loaded, &hhh).unwrap(),
            ..EvalSets::default()
        };
        let evaluation = evaluate(
            &loaded.model,
            &loaded.model,
            &eval_sets,
            limits,
            loaded.pad_token,
            &device,
        )
        .unwrap();
        assert_eq!(scores[0].name, "hhh_alignment");
        assert_eq!(
            scores[0].summed,
            evaluation.items["knowledge/hhh_alignment"]
        );
        assert_eq!(
            scores[0].per_char,
            evaluation.items["knowledge/hhh_alignment_norm"]
        );
        assert_eq!(scores[0].chance, vec![0.5; 6]);

        let total = scores.last().unwrap();
        assert_eq!(total.name, "country_facts");
        assert_eq!(total.summed.len(), 18, "three kinds of 6");
        assert_eq!(total.chance, vec![0.25; 18]);
        let kinds: Vec<f64> = scores[3..6]
            .iter()
            .flat_map(|s| s.per_char.clone())
            .collect();
        assert_eq!(total.per_char, kinds);
    }
}
