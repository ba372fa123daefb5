//! What docs.rs and a reader of the crate docs see: the docs.rs build enables every feature with
//! `--cfg docsrs` (so each item shows the feature it needs), and the crate docs' feature table
//! lists every feature Cargo.toml declares.

const CARGO_TOML: &str = include_str!("../Cargo.toml");
const LIB_RS: &str = include_str!("../src/lib.rs");

/// The lines of one `[section]` of Cargo.toml, up to the next section.
fn section(name: &str) -> Vec<&'static str> {
    let header = format!("[{name}]");
    CARGO_TOML
        .lines()
        .skip_while(|line| line.trim() != header)
        .skip(1)
        .take_while(|line| !line.trim_start().starts_with('['))
        .collect()
}

#[test]
fn docs_rs_builds_every_feature_with_the_docsrs_cfg() {
    let docs_rs = section("package.metadata.docs.rs");
    assert!(
        docs_rs
            .iter()
            .any(|l| l.replace(' ', "") == "all-features=true"),
        "{docs_rs:?}"
    );
    assert!(
        docs_rs
            .iter()
            .any(|l| l.replace(' ', "") == r#"rustdoc-args=["--cfg","docsrs"]"#),
        "{docs_rs:?}"
    );
    assert!(LIB_RS.contains("#![cfg_attr(docsrs, feature(doc_cfg))]"));
}

#[test]
fn the_crate_docs_list_every_feature() {
    let features: Vec<&str> = section("features")
        .into_iter()
        .filter(|line| !line.trim_start().starts_with('#') && line.contains('='))
        .filter_map(|line| line.split('=').next())
        .map(str::trim)
        .filter(|name| *name != "default")
        .collect();
    assert!(features.len() >= 5, "{features:?}");
    for feature in features {
        let row = format!("//! | `{feature}` |");
        assert!(
            LIB_RS.contains(&row),
            "feature `{feature}` is missing from the table under `# Features` in src/lib.rs"
        );
    }
}
