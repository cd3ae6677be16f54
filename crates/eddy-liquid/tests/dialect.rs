//! Braze's dialect is a layer: the same sources parsed as plain Shopify Liquid know none of it,
//! and a dialect cannot change what a standard tag or filter means.

use std::borrow::Cow;

use eddy_liquid::{Braze, Dialect, Limits, Object, Rendered, Shopify, Stop, Template, Value};

fn render_in(source: &str, dialect: &'static dyn Dialect) -> Result<Rendered, String> {
    let template = Template::parse_in(source, dialect).map_err(|e| e.to_string())?;
    let mut variables = Object::default();
    variables.insert("Shoe".into(), Value::str("left"));
    variables.insert("Shoe Size".into(), Value::Int(9));
    template
        .render(&variables, Limits::default(), None)
        .map_err(|e| e.to_string())
}

fn output(rendered: Result<Rendered, String>) -> String {
    match rendered {
        Ok(Rendered::Output(out)) => out,
        other => panic!("{other:?}"),
    }
}

#[test]
fn braze_filters_tags_and_names_exist_only_in_braze() {
    let hash = "{{ 'abc' | md5 }}";
    assert_eq!(
        output(render_in(hash, &Braze)),
        "900150983cd24fb0d6963f7d28e17f72"
    );
    // Liquid leaves the input of a filter it does not know as it is.
    assert_eq!(output(render_in(hash, &Shopify)), "abc");

    let abort = "{% abort_message('no') %}";
    assert_eq!(render_in(abort, &Braze), Ok(Rendered::Aborted("no".into())));
    assert_eq!(
        render_in(abort, &Shopify),
        Err("Liquid syntax error (line 1): Unknown tag 'abort_message'".into())
    );

    // Braze reads `${…}` as one name, spaces and all; lax Liquid reads the first word.
    let name = "{{${Shoe Size}}}";
    assert_eq!(output(render_in(name, &Braze)), "9");
    assert_eq!(output(render_in(name, &Shopify)), "left");
}

/// A dialect that claims a standard filter's name and adds one of its own.
#[derive(Debug)]
struct Shouting;

impl Dialect for Shouting {
    fn filter_arity(&self, name: &str) -> Option<(usize, Option<usize>)> {
        matches!(name, "upcase" | "shout").then_some((1, Some(1)))
    }

    fn filter(&self, _name: &str, input: Value, _args: &[Cow<'_, Value>]) -> Result<Value, Stop> {
        Ok(Value::Str(format!("{}!", input.to_string_lossy())))
    }
}

#[test]
fn a_dialect_adds_filters_but_cannot_redefine_the_core() {
    static SHOUTING: Shouting = Shouting;
    assert_eq!(
        output(render_in(
            "{{ 'hi' | upcase }} {{ 'hi' | shout }}",
            &SHOUTING
        )),
        "HI hi!"
    );
}
