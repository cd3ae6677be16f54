//! Base64 as Ruby's Liquid 5.4 answers it (each expected output rendered by Ruby 3.1).

use eddy_liquid::{Limits, Object, Rendered, Template};

#[test]
fn base64_filters_answer_as_ruby() {
    for (template, ruby) in [
        ("{{ 'YQ==' | base64_decode }}", "a"),
        (
            "{{ 'YR==' | base64_decode }}",
            "Liquid error: invalid base64 provided to base64_decode",
        ),
        (
            "{{ 'YQ' | base64_decode }}",
            "Liquid error: invalid base64 provided to base64_decode",
        ),
        (
            "{{ 'YQ===' | base64_decode }}",
            "Liquid error: invalid base64 provided to base64_decode",
        ),
        (
            "{{ 'Y Q==' | base64_decode }}",
            "Liquid error: invalid base64 provided to base64_decode",
        ),
        ("{{ 'YWJj' | base64_decode }}", "abc"),
        ("{{ 'YQ' | base64_url_safe_decode }}", "a"),
        ("{{ '-_8=' | base64_url_safe_decode | size }}", "2"),
        ("{{ '-_8' | base64_url_safe_decode | size }}", "2"),
        ("{{ 'abc?' | base64_url_safe_encode }}", "YWJjPw=="),
        ("{{ 'abc?' | base64_encode }}", "YWJjPw=="),
    ] {
        let out = Template::parse(template).expect("parses").render(
            &Object::default(),
            Limits::default(),
            None,
        );
        assert_eq!(out, Ok(Rendered::Output(ruby.into())), "{template}");
    }
}
