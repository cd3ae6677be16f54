//! The conformance corpus: every case of `tests/corpus/*.cases` rendered by eddy must equal,
//! byte for byte, what Shopify's Ruby Liquid 5 renders (`expected.json`, written by
//! `.ci/liquid/oracle.rb`; CI renders it again with ruby-liquid and compares).

use std::collections::BTreeMap;
use std::path::Path;

use eddy_liquid::{Limits, Object, Rendered, Template, Value};

/// Every case: ("file/name", template).
pub fn corpus(dir: &Path) -> Vec<(String, String)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("corpus dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cases"))
        .collect();
    files.sort();
    let mut cases = Vec::new();
    for path in files {
        let file = path.file_stem().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&path).expect("read cases");
        let mut name: Option<String> = None;
        let mut body = String::new();
        let mut flush = |name: &mut Option<String>, body: &mut String| {
            if let Some(n) = name.take() {
                let template = body.strip_suffix('\n').unwrap_or(body).to_string();
                cases.push((format!("{file}/{n}"), template));
            }
            body.clear();
        };
        for line in text.split_inclusive('\n') {
            if let Some(n) = line.strip_prefix("### ") {
                flush(&mut name, &mut body);
                name = Some(n.trim().to_string());
            } else {
                body.push_str(line);
            }
        }
        flush(&mut name, &mut body);
    }
    cases
}

fn render(template: &str, vars: &Object) -> serde_json::Value {
    match Template::parse(template) {
        Err(e) => serde_json::json!({"syntax_error": e.message}),
        Ok(t) => match t.render(vars.clone(), Limits::default(), None) {
            Ok(Rendered::Output(out)) => serde_json::json!({"output": out}),
            Ok(Rendered::Aborted(reason)) => serde_json::json!({"aborted": reason}),
            Err(e) => serde_json::json!({"stopped": e.to_string()}),
        },
    }
}

#[test]
fn eddy_renders_the_corpus_as_ruby_liquid_does() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let vars_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("vars.json")).unwrap()).unwrap();
    let Value::Object(vars) = Value::from_json(&vars_json) else {
        panic!("vars.json holds an object");
    };
    let expected: BTreeMap<String, serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let cases = corpus(&dir);
    let mut names = std::collections::HashSet::new();
    for (name, _) in &cases {
        assert!(names.insert(name.clone()), "case {name} appears twice");
    }
    assert!(cases.len() >= 300, "the corpus has {} cases", cases.len());
    // Dates "now" differ between runs: such cases compare their shape only.
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
