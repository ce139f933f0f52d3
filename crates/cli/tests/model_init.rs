//! `bapo model init`: a checkpoint of another's shape with random weights, as the GPU check kit
//! makes SmolLM2-135M's there. Checked against the tiny fixture made by transformers: every
//! tensor of the same name and shape, HF's initialisation (norms 1, matrices N(0, 0.02)), the
//! tokenizer copied, the same seed giving the same bytes, and a model `bapo score` loads.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use safetensors::SafeTensors;

fn root() -> PathBuf {
    // The run-time value (a shared target folder can hold a binary built in another clone).
    Path::new(&std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo")).join("../..")
}

fn bapo(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bapo"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("the bapo binary runs")
}

fn init(out: &Path, seed: &str) -> Output {
    bapo(&[
        "model",
        "init",
        "--like",
        "tests/fixtures/tiny-chat",
        "--out",
        out.to_str().unwrap(),
        "--seed",
        seed,
    ])
}

fn values(tensors: &SafeTensors, name: &str) -> Vec<f32> {
    let view = tensors.tensor(name).unwrap();
    view.data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

#[test]
fn makes_a_model_of_the_same_shape_with_random_weights() {
    let scratch = std::env::temp_dir().join(format!("bapo-model-init-{}", std::process::id()));
    std::fs::remove_dir_all(&scratch).ok();
    let (a, b, c) = (scratch.join("a"), scratch.join("b"), scratch.join("c"));
    for (dir, seed) in [(&a, "0"), (&b, "0"), (&c, "1")] {
        let output = init(dir, seed);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    let fixture_dir = root().join("tests/fixtures/tiny-chat");
    let fixture_bytes = std::fs::read(fixture_dir.join("model.safetensors")).unwrap();
    let fixture = SafeTensors::deserialize(&fixture_bytes).unwrap();
    let made_bytes = std::fs::read(a.join("model.safetensors")).unwrap();
    let made = SafeTensors::deserialize(&made_bytes).unwrap();
    let mut names: Vec<String> = fixture.names().into_iter().map(String::from).collect();
    let mut made_names: Vec<String> = made.names().into_iter().map(String::from).collect();
    names.sort();
    made_names.sort();
    assert_eq!(names, made_names, "the same tensors");
    for name in &names {
        let (want, got) = (fixture.tensor(name).unwrap(), made.tensor(name).unwrap());
        assert_eq!(want.shape(), got.shape(), "{name}");
        let got = values(&made, name);
        if name.contains("norm") {
            assert!(got.iter().all(|&v| v == 1.0), "{name}: norms start at 1");
        } else {
            let n = got.len() as f64;
            let mean = got.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
            let std = (got
                .iter()
                .map(|&v| (f64::from(v) - mean).powi(2))
                .sum::<f64>()
                / n)
                .sqrt();
            // Four standard errors of N(0, 0.02)'s sample mean and sample std.
            assert!(mean.abs() < 4.0 * 0.02 / n.sqrt(), "{name}: mean {mean}");
            assert!(
                (std - 0.02).abs() < 4.0 * 0.02 / (2.0 * n).sqrt(),
                "{name}: std {std}"
            );
            assert_ne!(got, values(&fixture, name), "{name}: not the fixture's");
        }
    }
    assert_eq!(
        std::fs::read(fixture_dir.join("tokenizer.json")).unwrap(),
        std::fs::read(a.join("tokenizer.json")).unwrap(),
        "the tokenizer is copied"
    );
    assert_eq!(
        made_bytes,
        std::fs::read(b.join("model.safetensors")).unwrap(),
        "the same seed gives the same weights"
    );
    assert_ne!(
        made_bytes,
        std::fs::read(c.join("model.safetensors")).unwrap(),
        "another seed gives others"
    );

    // A model like any other: bapo loads and scores it.
    let score = bapo(&[
        "score",
        "--model",
        a.to_str().unwrap(),
        "--prompt",
        "The sky is",
        "--completion",
        " blue",
    ]);
    assert!(
        score.status.success(),
        "{}",
        String::from_utf8_lossy(&score.stderr)
    );

    // An existing checkpoint is not overwritten.
    let again = init(&a, "5");
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert_eq!(again.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("already exists"), "{stderr}");
    assert_eq!(
        made_bytes,
        std::fs::read(a.join("model.safetensors")).unwrap()
    );
    std::fs::remove_dir_all(&scratch).ok();
}
