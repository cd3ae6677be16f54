//! Braze's dialect checked against the examples of Braze's documentation (the constructs that
//! brazejs, the other oracle, does not implement faithfully), and against published test
//! vectors for the hashes.

use eddy_liquid::{Limits, Rendered, Template, Value};
use serde_json::json;

fn render(template: &str, vars: serde_json::Value) -> String {
    let vars = Value::from_json(&vars)
        .into_object()
        .expect("variables are an object");
    match Template::parse(template)
        .expect("parses")
        .render(&vars, Limits::default(), None)
    {
        Ok(Rendered::Output(out)) => out,
        other => panic!("{other:?}"),
    }
}

#[test]
fn personalization_tags_as_the_documentation_writes_them() {
    let user = json!({"first_name": "Marion", "custom_attribute": {"current_rewards_balance": 50,
        "giftcard_balance": 25, "Favorite Color": "teal"}});
    // "Math filters" page: a custom attribute plus a number.
    assert_eq!(
        render(
            "balance {{custom_attribute.${current_rewards_balance} | plus: 50}}",
            user.clone()
        ),
        "balance 100"
    );
    // The same page assigns a custom attribute written inside {{ }} in a tag.
    assert_eq!(
        render(
            "{% assign balance = {{custom_attribute.${current_rewards_balance}}} %}{{custom_attribute.${giftcard_balance} | plus: balance}}",
            user.clone()
        ),
        "75"
    );
    assert_eq!(render("{{${first_name}}}", user.clone()), "Marion");
    assert_eq!(
        render("{{custom_attribute.${Favorite Color}}}", user.clone()),
        "teal"
    );
    assert_eq!(
        render("{{${last_name} | default: 'friend'}}", user),
        "friend"
    );
}

#[test]
fn advanced_filters_give_the_documented_results() {
    let none = json!({});
    assert_eq!(
        render("{{ 'hey<>hi' | url_escape }}", none.clone()),
        "hey%3C%3Ehi"
    );
    assert_eq!(
        render("{{ 'a b/c?d=1' | url_escape }}", none.clone()),
        "a%20b/c?d=1"
    );
    assert_eq!(
        render("{{ 'hey<>hi' | url_param_escape }}", none.clone()),
        "hey%3C%3Ehi"
    );
    assert_eq!(
        render("{{ 'a b&c=d/e' | url_param_escape }}", none.clone()),
        "a%20b%26c%3Dd%2Fe"
    );
    assert_eq!(
        render("{{ 123456 | number_with_delimiter }}", none.clone()),
        "123,456"
    );
    assert_eq!(
        render("{{ -1234567.891 | number_with_delimiter }}", none.clone()),
        "-1,234,567.891"
    );
    assert_eq!(
        render("{{ '123\"456' | json_escape }}", none.clone()),
        "123\\\"456"
    );
    assert_eq!(
        render("{{ 'a\nb\\c' | json_escape }}", none.clone()),
        "a\\nb\\\\c"
    );
    assert_eq!(
        render(
            "{{ hash | property_accessor: 'key' }}",
            json!({"hash": {"key": "hello"}})
        ),
        "hello"
    );
    assert_eq!(
        render(
            "{{ '2024-01-15T12:00:00Z' | time_zone: 'America/Los_Angeles' | date: '%Y-%m-%d %H:%M %z' }}",
            none.clone()
        ),
        "2024-01-15 04:00 -0800"
    );
}

#[test]
fn hashes_match_published_vectors() {
    let none = json!({});
    let fox = "The quick brown fox jumps over the lazy dog";
    let t = |f: &str| render(&format!("{{{{ '{fox}' | {f} }}}}"), none.clone());
    assert_eq!(t("md5"), "9e107d9d372bb6826bd81d3542a419d6");
    assert_eq!(t("sha1"), "2fd4e1c67a2d28fced849ee1bb76e7391b93eb12");
    assert_eq!(
        t("sha2"),
        "d7a8fbb307d7809469ca9abcb0082e4f8d5651e46d3cdb762d02d0bf37c9e592"
    );
    assert_eq!(
        t("hmac_sha1_hex: 'key'"),
        "de7c9b85b8b78aa6bc8a7a36f70a90701c9db4d9"
    );
    assert_eq!(
        t("hmac_sha256_hex: 'key'"),
        "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
    );
    assert_eq!(
        t("hmac_sha256_base64: 'key'"),
        "97yD9DBThCSxMpjmqm+xQ+9NWaFJRhdZl0edvC0aPNg="
    );
    assert_eq!(t("hmac_sha1_base64: 'key'"), "3nybhbi3iqa8ino29wqQcBydtNk=");
}

#[test]
fn aborts_carry_their_reason_and_stop_everything_after() {
    let template = Template::parse("a{% for i in (1..3) %}{{ i }}{% if i == 2 %}{% abort_message(\"stop at \" ) %}{% endif %}{% endfor %}z")
        .expect("parses");
    let out = template
        .render(&Default::default(), Limits::default(), None)
        .expect("renders");
    assert_eq!(out, Rendered::Aborted("stop at ".into()));
}
