//! Hostile templates end within their limits, with the limit as the reason, and never take the
//! process with them: huge ranges are counted, not built; values that double are stopped before
//! they grow past the memory budget; long condition chains and deep nesting parse without
//! recursion; content blocks nest only as deep as allowed; a render stops at its time budget.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use eddy_liquid::{Limits, Object, Rendered, Stop, Template};

fn render_with(source: &str, limits: Limits) -> Result<Rendered, Stop> {
    Template::parse(source)
        .expect("parses")
        .render(&Object::default(), limits, None)
}

fn fatal(source: &str) -> String {
    match render_with(source, Limits::default()) {
        Err(Stop::Fatal(reason)) => reason,
        other => panic!("{source:.60}: expected a fatal stop, got {other:?}"),
    }
}

#[test]
fn huge_ranges_are_counted_not_built() {
    let started = Instant::now();
    for source in [
        "{% for i in (1..100000000000) %}{% endfor %}",
        "{% for i in (1..9223372036854775807) %}{% assign j = i %}{% endfor %}",
        "{% for i in (-9223372036854775807..9223372036854775807) reversed %}{% endfor %}",
        "{% tablerow i in (1..100000000000) cols: 0 %}{% endtablerow %}",
    ] {
        // Steps are counted with the default bound in production; a smaller one keeps the
        // debug build's test quick.
        let limits = Limits {
            max_steps: 200_000,
            ..Limits::default()
        };
        match render_with(source, limits) {
            Err(Stop::Fatal(reason)) => assert!(reason.contains("steps"), "{source}: {reason}"),
            other => panic!("{source}: {other:?}"),
        }
    }
    for source in [
        "{{ (1..100000000000) | join: ',' }}",
        "{{ (1..9223372036854775807) | reverse | first }}",
        "{{ (1..9223372036854775807) | sort | size }}",
        "{% assign a = (1..100000000000) | map: 'x' %}",
    ] {
        assert!(fatal(source).contains("bytes of values"), "{source}");
    }
    // What a range costs nothing to ask stays cheap.
    let out = render_with(
        "{% assign r = (1..9223372036854775807) %}{{ r.first }} {{ r.last }} {{ r | size }} {% for i in r limit: 3 offset: 2 %}{{ i }}{% endfor %}",
        Limits::default(),
    );
    assert_eq!(
        out,
        Ok(Rendered::Output(
            "1 9223372036854775807 9223372036854775807 345".into()
        ))
    );
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn ranges_in_loops_keep_liquids_offsets_limits_and_order() {
    let out = render_with(
        "{% for i in (3..9) reversed offset: 2 limit: 3 %}{{ i }}{{ forloop.length }}{% endfor %}|{% for i in (5..1) %}x{% else %}none{% endfor %}|{% for i in (1..4) limit: 2 %}{{ i }}{% endfor %}{% for i in (1..4) offset: continue %}{{ i }}{% endfor %}",
        Limits::default(),
    );
    assert_eq!(out, Ok(Rendered::Output("736353|none|1234".into())));
}

#[test]
fn values_that_double_stop_at_the_memory_budget() {
    let doubling = "{% assign s = 'ab' %}{% for i in (1..40) %}{% assign s = s | append: s %}{% endfor %}{{ s | size }}";
    assert!(fatal(doubling).contains("bytes of values"));
    let arrays = "{% assign a = 'a,b' | split: ',' %}{% for i in (1..40) %}{% assign a = a | concat: a %}{% endfor %}";
    assert!(fatal(arrays).contains("bytes of values"));
    // A replacement that multiplies is refused before it is made.
    let replace = "{% assign s = 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa' %}{% for i in (1..5) %}{% assign s = s | append: s %}{% endfor %}{% assign t = s | replace: 'a', s %}{% assign u = t | replace: 'a', t %}";
    assert!(fatal(replace).contains("bytes of values"));
    let small = Limits {
        max_memory_bytes: 1000,
        ..Limits::default()
    };
    assert!(matches!(
        render_with(
            "{% capture c %}{% for i in (1..2000) %}x{% endfor %}{% endcapture %}",
            small
        ),
        Err(Stop::Fatal(_))
    ));
    // The same variable assigned again replaces what it held.
    assert_eq!(
        render_with(
            "{% for i in (1..100) %}{% assign s = 'xxxxxxxxxxxxxxxxxxxx' | append: i %}{% endfor %}{{ s }}",
            small
        ),
        Ok(Rendered::Output("xxxxxxxxxxxxxxxxxxxx100".into()))
    );
    // Ruby pads a date to any width; past 1,024 the date is left as it was given.
    assert_eq!(
        render_with(
            "{{ '2024-01-02' | date: '%999999999999Y' }}",
            Limits::default()
        ),
        Ok(Rendered::Output("2024-01-02".into()))
    );
}

#[test]
fn integers_stop_growing_at_their_bound() {
    let squaring = "{% assign x = 3 %}{% for i in (1..40) %}{% assign x = x | times: x %}{% endfor %}{{ x | size }}";
    assert!(fatal(squaring).contains("bits"), "{squaring}");
    let literal = format!("{{{{ {} | plus: 1 }}}}", "9".repeat(30_000));
    assert!(matches!(
        render_with(&literal, Limits::default()),
        Ok(Rendered::Output(_))
    ));
}

#[test]
fn long_chains_and_deep_nesting_parse_without_recursion() {
    let chain = format!(
        "{{% if a{} %}}yes{{% else %}}no{{% endif %}}",
        " and a".repeat(100_000)
    );
    assert_eq!(
        render_with(&chain, Limits::default()),
        Ok(Rendered::Output("no".into()))
    );
    let ors = format!(
        "{{% if a{} or true %}}yes{{% endif %}}",
        " or a".repeat(100_000)
    );
    assert_eq!(
        render_with(&ors, Limits::default()),
        Ok(Rendered::Output("yes".into()))
    );
    let nested = format!(
        "{}x{}",
        "{% if true %}".repeat(100_000),
        "{% endif %}".repeat(100_000)
    );
    let error = Template::parse(&nested).expect_err("too deep");
    assert_eq!(error.message, "Nesting too deep");
    let ranges = format!(
        "{{{{ {}1..2{} }}}}",
        "(".repeat(50_000),
        "..3)".repeat(50_000)
    );
    assert!(Template::parse(&ranges).is_ok());
}

#[test]
fn content_blocks_nest_as_deep_as_allowed() {
    let mut blocks = HashMap::new();
    for (name, body) in [
        ("a", "A{{content_blocks.${b}}}"),
        ("b", "B{{content_blocks.${c}}}"),
        ("c", "C"),
    ] {
        blocks.insert(name.to_string(), Template::parse(body).expect("block"));
    }
    let template = Template::parse("{{content_blocks.${a}}}").expect("parses");
    let two = Limits::default();
    match template.render_with(&Object::default(), two, None, Some(&blocks)) {
        Err(Stop::Fatal(reason)) => assert!(reason.contains("a → b → c"), "{reason}"),
        other => panic!("three levels: {other:?}"),
    }
    let three = Limits {
        max_content_block_depth: 3,
        ..Limits::default()
    };
    assert_eq!(
        template.render_with(&Object::default(), three, None, Some(&blocks)),
        Ok(Rendered::Output("ABC".into()))
    );
    // A long chain stops at the limit instead of exhausting the stack.
    let mut chain = HashMap::new();
    for i in 0..5_000 {
        let body = format!("{{{{content_blocks.${{b{}}}}}}}", i + 1);
        chain.insert(format!("b{i}"), Template::parse(&body).expect("block"));
    }
    let start = Template::parse("{{content_blocks.${b0}}}").expect("parses");
    assert!(matches!(
        start.render_with(&Object::default(), two, None, Some(&chain)),
        Err(Stop::Fatal(_))
    ));
}

#[test]
fn a_render_stops_at_its_time_budget() {
    let limits = Limits {
        max_duration: Duration::from_millis(50),
        max_steps: u64::MAX,
        ..Limits::default()
    };
    let started = Instant::now();
    match render_with(
        "{% for i in (1..100000000000) %}{{ i | plus: 1 }}{% endfor %}",
        Limits {
            max_output_bytes: usize::MAX,
            ..limits
        },
    ) {
        Err(Stop::Fatal(reason)) => assert!(reason.contains("to render"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(30));
}
