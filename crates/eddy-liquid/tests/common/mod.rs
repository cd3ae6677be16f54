//! What the conformance and oracle tests share: reading `.cases` files, the corpus variables,
//! and rendering a case the way `.ci/liquid/oracle.rb` reports it.

use std::path::Path;

use eddy_liquid::{Limits, Object, Rendered, Template, Value};

/// The corpus directory.
pub fn corpus_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

/// The variables every case renders with (`vars.json`).
pub fn corpus_vars() -> Object {
    let text = std::fs::read_to_string(corpus_dir().join("vars.json")).expect("vars.json");
    let json: serde_json::Value = serde_json::from_str(&text).expect("vars.json is JSON");
    Value::from_json(&json)
        .into_object()
        .expect("vars.json holds an object")
}

/// Every case: ("file/name", template).
// Each test binary compiles this module; the oracle test does not read the corpus files.
#[allow(dead_code)]
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

pub fn render(template: &str, vars: &Object) -> serde_json::Value {
    match Template::parse(template) {
        Err(e) => serde_json::json!({"syntax_error": e.message}),
        Ok(t) => match t.render(vars, Limits::default(), None) {
            Ok(Rendered::Output(out)) => serde_json::json!({"output": out}),
            Ok(Rendered::Aborted(reason)) => serde_json::json!({"aborted": reason}),
            Err(e) => serde_json::json!({"stopped": e.to_string()}),
        },
    }
}
