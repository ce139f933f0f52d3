//! The registry lists the built-in objectives, builds them from `[objective]` tables, and turns
//! every bad setting into an error that names the key.

use bapo_objective::{KlDirection, Metrics, ObjectiveConfigError, Quantity, Response, registry};
use bapo_objective_bapo as _;
use bapo_objective_dpo as _;
use bapo_objective_kl_dpo as _;
use bapo_objective_mrpo as _;

fn table(src: &str) -> toml::Table {
    toml::from_str(src).expect("test TOML parses")
}

#[test]
fn lists_the_four_built_in_objectives_with_defaults() {
    let names = registry::names();
    for name in ["bapo", "dpo", "kl-dpo", "mrpo"] {
        assert!(
            names.contains(&name.to_string()),
            "{name} missing from {names:?}"
        );
    }
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "entries are sorted by name");

    let dpo = registry::find("dpo").unwrap();
    let defaults = (dpo.defaults)();
    assert_eq!(defaults["beta"].as_float(), Some(0.1));
    assert_eq!(defaults["label_smoothing"].as_float(), Some(0.0));
    assert_eq!(defaults["reference_free"].as_bool(), Some(false));

    let bapo = (registry::find("bapo").unwrap().defaults)();
    assert_eq!(bapo["lambda"].as_float(), Some(1.0));
    assert_eq!(bapo["form"].as_str(), Some("huber"));
    assert_eq!(bapo["kappa"].as_str(), Some("auto"));
    assert_eq!(bapo["normalize"].as_str(), Some("sum"));
    assert_eq!(bapo["num_anchors"].as_integer(), Some(1));

    let kl = (registry::find("kl-dpo").unwrap().defaults)();
    assert_eq!(kl["lambda_kl"].as_float(), Some(0.1));
    assert_eq!(kl["direction"].as_str(), Some("reverse"));

    let mrpo = (registry::find("mrpo").unwrap().defaults)();
    assert_eq!(mrpo["epsilon"].as_float(), Some(0.1));
    assert_eq!(mrpo["alpha"].as_str(), Some("adaptive"));
    assert_eq!(mrpo["references"].as_integer(), Some(2));
}

#[test]
fn every_default_table_builds_its_objective() {
    for entry in registry::entries() {
        let objective = (entry.build)(&(entry.defaults)())
            .unwrap_or_else(|e| panic!("{}: defaults do not build: {e}", entry.name));
        assert_eq!(objective.name(), entry.name);
        assert!(!entry.summary.is_empty());
        assert!(!objective.needs().quantities.is_empty());
    }
}

#[test]
fn an_unknown_objective_lists_the_known_ones() {
    let err = registry::build("dop", &toml::Table::new()).unwrap_err();
    match &err {
        ObjectiveConfigError::UnknownObjective { name, known } => {
            assert_eq!(name, "dop");
            assert!(known.contains(&"dpo".to_string()) && known.contains(&"bapo".to_string()));
        }
        other => panic!("expected UnknownObjective, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("dop") && message.contains("bapo, dpo, kl-dpo, mrpo"),
        "{message}"
    );
}

#[test]
fn an_objective_table_names_its_objective() {
    let built = registry::build_from_table(&table("name = \"bapo\"\nlambda = 0.5")).unwrap();
    assert_eq!(built.name(), "bapo");
    assert!(matches!(
        registry::build_from_table(&table("beta = 0.5")),
        Err(ObjectiveConfigError::MissingName { .. })
    ));
    let err = registry::build_from_table(&table("name = 3"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("`objective.name`"), "{err}");
}

/// (objective, settings, key the error must name)
const BAD_SETTINGS: &[(&str, &str, &str)] = &[
    ("dpo", "bta = 0.1", "bta"),
    ("dpo", "beta = 0.0", "beta"),
    ("dpo", "beta = -1.0", "beta"),
    ("dpo", "beta = nan", "beta"),
    ("dpo", "beta = \"high\"", "beta"),
    ("dpo", "label_smoothing = 0.6", "label_smoothing"),
    ("dpo", "label_smoothing = -0.1", "label_smoothing"),
    ("dpo", "reference_free = 1", "reference_free"),
    ("kl-dpo", "lambda_kl = -0.5", "lambda_kl"),
    ("kl-dpo", "on = []", "on"),
    ("kl-dpo", "on = [\"chosen\", \"chosen\"]", "on"),
    ("kl-dpo", "on = [\"prompt\"]", "on"),
    ("kl-dpo", "direction = \"sideways\"", "direction"),
    ("bapo", "lambda = -1.0", "lambda"),
    ("bapo", "form = \"cubic\"", "form"),
    ("bapo", "normalize = \"max\"", "normalize"),
    ("bapo", "kappa = 0.0", "kappa"),
    ("bapo", "kappa = -1.0", "kappa"),
    ("bapo", "kappa = \"wide\"", "kappa"),
    ("bapo", "kappa = 0.5\nform = \"hinge\"", "kappa"),
    ("bapo", "num_anchors = 0", "num_anchors"),
    ("bapo", "num_anchors = -2", "num_anchors"),
    ("bapo", "temperature = 0.7", "temperature"),
    ("mrpo", "epsilon = 1.5", "epsilon"),
    ("mrpo", "alpha = 1.2", "alpha"),
    ("mrpo", "alpha = \"sometimes\"", "alpha"),
    ("mrpo", "references = 0", "references"),
    ("mrpo", "references = 3\nalpha = 0.5", "alpha"),
    ("mrpo", "weights = [0.5, 0.5]", "weights"),
    ("mrpo", "references = 3\nweights = [1.0, 1.0]", "weights"),
    (
        "mrpo",
        "references = 3\nweights = [1.0, -1.0, 1.0]",
        "weights",
    ),
    (
        "mrpo",
        "references = 3\nweights = [0.0, 0.0, 0.0]",
        "weights",
    ),
];

#[test]
fn every_bad_setting_is_an_error_naming_its_key() {
    for (objective, settings, key) in BAD_SETTINGS {
        let err = match registry::build(objective, &table(settings)) {
            Ok(_) => panic!("{objective} accepted `{settings}`"),
            Err(e) => e,
        };
        let names_key = match &err {
            ObjectiveConfigError::UnknownKey { key: k, .. }
            | ObjectiveConfigError::InvalidValue { key: k, .. }
            | ObjectiveConfigError::OutOfRange { key: k, .. } => k == key,
            _ => false,
        };
        assert!(
            names_key,
            "{objective} `{settings}`: error does not name `{key}`: {err:?}"
        );
        let message = err.to_string();
        assert!(
            message.contains(&format!("objective.{key}")) && message.contains(objective),
            "{objective} `{settings}`: message lacks the key: {message}"
        );
    }
}

/// A value of the wrong type is reported with what was expected (serde's reason, first line).
#[test]
fn type_errors_say_what_was_expected() {
    for (objective, settings, expected) in [
        (
            "dpo",
            "beta = \"high\"",
            "invalid type: string \"high\", expected a number",
        ),
        (
            "bapo",
            "kappa = \"wide\"",
            "expected a number > 0 or \"auto\"",
        ),
        ("bapo", "kappa = true", "expected a number > 0 or \"auto\""),
    ] {
        let message = match registry::build(objective, &table(settings)) {
            Ok(_) => panic!("{objective} accepted `{settings}`"),
            Err(e) => e.to_string(),
        };
        assert!(message.contains(expected), "{settings}: {message}");
        assert!(!message.contains('\n'), "one line: {message}");
    }
}

#[test]
fn integers_are_accepted_where_numbers_are_expected() {
    let dpo = registry::build("dpo", &table("beta = 1")).unwrap();
    assert_eq!(dpo.name(), "dpo");
    let mrpo = registry::build("mrpo", &table("alpha = 1")).unwrap();
    assert_eq!(mrpo.name(), "mrpo");
    let bapo = registry::build("bapo", &table("kappa = 2")).unwrap();
    assert_eq!(bapo.name(), "bapo");
}

/// Every example config in `configs/objectives/` builds, and spells out exactly the defaults
/// (so the commented files cannot drift from the code).
#[test]
fn example_objective_configs_build_and_show_the_defaults() {
    let dir = bapo_testkit::workspace_root().join("configs/objectives");
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let config: toml::Table =
            toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let objective = config["objective"]
            .as_table()
            .expect("an [objective] table");
        let built = registry::build_from_table(objective)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut settings = objective.clone();
        settings.remove("name");
        let defaults = (registry::find(built.name()).unwrap().defaults)();
        assert_eq!(
            settings,
            defaults,
            "{} differs from the defaults",
            path.display()
        );
        seen.push(built.name().to_string());
    }
    seen.sort();
    assert_eq!(seen, ["bapo", "dpo", "kl-dpo", "mrpo"]);
}

/// The names users meet (config values, metric names, error messages) are spelled as
/// documented and parse back.
#[test]
fn quantity_and_response_names_are_spelled_as_documented() {
    for (response, name) in [
        (Response::Chosen, "chosen"),
        (Response::Rejected, "rejected"),
        (Response::Base, "base"),
    ] {
        assert_eq!(response.as_str(), name);
        assert_eq!(response.to_string(), name);
        assert_eq!(Response::parse(name), Some(response));
    }
    assert_eq!(Response::parse("prompt"), None);
    assert_eq!(KlDirection::Reverse.as_str(), "reverse");
    assert_eq!(KlDirection::Forward.as_str(), "forward");
    let named = [
        (
            Quantity::PolicyLogp(Response::Chosen),
            "policy log-prob of chosen",
        ),
        (
            Quantity::ReferenceLogp {
                reference: 1,
                response: Response::Base,
            },
            "reference 1 log-prob of base",
        ),
        (
            Quantity::TokenCount(Response::Rejected),
            "token count of rejected",
        ),
        (
            Quantity::TokenKl {
                response: Response::Chosen,
                direction: KlDirection::Forward,
            },
            "forward token-level KL on chosen",
        ),
    ];
    for (quantity, name) in named {
        assert_eq!(quantity.to_string(), name);
    }
}

/// Metrics keep their names in insertion order; a second insert replaces the value in place.
#[test]
fn metrics_list_their_names_in_insertion_order() {
    let device = burn::tensor::Device::flex();
    let mut metrics = Metrics::new();
    metrics.insert(
        "rewards/margins",
        burn::tensor::Tensor::<1>::zeros([2], &device),
    );
    metrics.insert("anchor/term", burn::tensor::Tensor::<1>::ones([2], &device));
    metrics.insert(
        "rewards/margins",
        burn::tensor::Tensor::<1>::ones([2], &device),
    );
    assert_eq!(metrics.names(), vec!["rewards/margins", "anchor/term"]);
    let listed: Vec<&str> = metrics.iter().map(|(name, _)| name).collect();
    assert_eq!(listed, vec!["rewards/margins", "anchor/term"]);
}
