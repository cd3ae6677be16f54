//! The conformance corpus: every case of `tests/corpus/*.cases` rendered by eddy must equal,
//! byte for byte, what Shopify's Ruby Liquid 5 renders (`expected.json`, written by
//! `.ci/liquid/oracle.rb`; CI renders it again with ruby-liquid and compares).

mod common;

use std::collections::BTreeMap;

use common::{corpus, corpus_dir, corpus_vars, render};

#[test]
fn eddy_renders_the_corpus_as_ruby_liquid_does() {
    let dir = corpus_dir();
    let vars = corpus_vars();
    let expected: BTreeMap<String, serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let cases = corpus(&dir);
    let mut names = std::collections::HashSet::new();
    for (name, _) in &cases {
        assert!(names.insert(name.clone()), "case {name} appears twice");
    }
    assert!(cases.len() >= 300, "the corpus has {} cases", cases.len());
    let mut failures = Vec::new();
    for (name, template) in &cases {
        let want = expected
            .get(name)
            .unwrap_or_else(|| panic!("{name} has no expected output; run .ci/liquid/oracle.rb"));
        let got = render(template, &vars);
        if &got != want {
            failures.push(format!(
                "{name}\n  template: {template:?}\n  ruby:     {want}\n  eddy:     {got}"
            ));
        }
    }
    println!(
        "{} cases, {} equal to Ruby Liquid",
        cases.len(),
        cases.len() - failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
