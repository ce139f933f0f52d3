//! Workspace-level tests (see the `[[test]]` targets next to this file). Each test links the
//! objectives it uses with `use … as _`; this library holds what several of them share.

/// A JSON fixture under `tests/fixtures/`, deserialised; a missing or malformed file fails the
/// test naming it.
pub fn fixture<T: serde::de::DeserializeOwned>(relative: &str) -> T {
    // The package folder at run time, not the one compiled in (a target folder shared
    // between clones can hold this test built in another clone).
    let path =
        std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo"))
            .join("fixtures")
            .join(relative);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
