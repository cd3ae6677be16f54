//! The index against the oracle: after any sequence of profile writes, deletes and cohort
//! changes, evaluating a filter on the index equals scanning every profile with `matches`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use eddy_model::attrs::AttrValue;
use eddy_model::profile::Profile;
use eddy_segments::filter::matches;
use eddy_segments::{Filter, WorkspaceIndex};
use proptest::prelude::*;
use serde_json::{Value, json};

const DAY: i64 = 86_400_000;
const NOW: i64 = 20_000 * DAY;

#[derive(Debug, Clone)]
enum Change {
    Upsert(u32, Box<Profile>),
    Remove(u32),
    Member(&'static str, &'static str, u32, bool),
}

fn attr_value() -> impl Strategy<Value = AttrValue> {
    prop_oneof![
        // The "solo" values are mostly held by one profile at a time (a single-holder entry).
        prop::sample::select(vec![
            "free", "pro", "team", "Pro", "solo-1", "solo-2", "solo-3", "solo-4"
        ])
        .prop_map(|s| AttrValue::String(s.into())),
        (-3i64..6).prop_map(AttrValue::Int),
        prop::sample::select(vec![0.5, 2.0, 2.5]).prop_map(AttrValue::Float),
        any::<bool>().prop_map(AttrValue::Bool),
        (-40i64..5).prop_map(|d| AttrValue::Time(NOW + d * DAY)),
        prop::collection::vec(
            prop::sample::select(vec![json!("a"), json!("b"), json!(2), json!(true)]),
            0..3
        )
        .prop_map(AttrValue::Array),
    ]
}

fn profile() -> impl Strategy<Value = Profile> {
    (
        prop::collection::btree_map(
            prop::sample::select(vec!["plan", "score", "vip", "tags", "seen"]),
            attr_value(),
            0..4,
        ),
        prop::option::of(prop::sample::select(vec!["Ada", "Bob", "Cy"])),
        prop::option::of(prop::sample::select(vec!["1980-12-21", "2001-01-01"])),
        prop::collection::vec((prop::sample::select(vec!["open", "buy"]), -35i64..1), 0..4),
        prop::collection::vec(
            (prop::sample::select(vec!["p1", "p2"]), -35i64..1, 1u32..3),
            0..3,
        ),
        prop::option::of(prop::sample::select(vec!["e1", "e2"])),
    )
        .prop_map(|(custom, name, dob, events, purchases, ext)| {
            let mut p = Profile::new("b".into(), NOW - 3 * DAY);
            p.external_id = ext.map(str::to_string);
            for (k, v) in custom {
                p.custom.insert(k.to_string(), v);
            }
            if let Some(n) = name {
                p.fields.insert("first_name".into(), json!(n));
            }
            if let Some(d) = dob {
                p.fields.insert("dob".into(), json!(d));
            }
            for (e, d) in events {
                p.record_event(e, NOW + d * DAY);
            }
            for (prod, d, q) in purchases {
                p.record_purchase(prod, 1.0, q, NOW + d * DAY);
            }
            p
        })
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        4 => (0u32..16, profile()).prop_map(|(id, p)| Change::Upsert(id, Box::new(p))),
        1 => (0u32..16).prop_map(Change::Remove),
        2 => (prop::sample::select(vec!["amplitude", "mixpanel"]), prop::sample::select(vec!["c1", "c2"]), 0u32..16, any::<bool>())
            .prop_map(|(p, c, id, m)| Change::Member(p, c, id, m)),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    let names = prop::sample::select(vec![
        "plan",
        "score",
        "vip",
        "tags",
        "seen",
        "first_name",
        "dob",
        "missing",
        "external_id",
    ]);
    let operand = prop_oneof![
        prop::sample::select(vec![
            "free",
            "pro",
            "Ada",
            "a",
            "1980-12-21",
            "e1",
            "solo-1",
            "solo-3"
        ])
        .prop_map(|s| json!(s)),
        (-3i64..6).prop_map(|n| json!(n)),
        Just(json!(2.5)),
        any::<bool>().prop_map(|b| json!(b)),
    ];
    prop_oneof![
        (names.clone(), prop::sample::select(vec!["equals", "not_equals", "includes_value"]), operand)
            .prop_map(|(n, op, v)| json!({"attribute": n, "op": op, "value": v})),
        (names.clone(), prop::sample::select(vec!["greater_than", "less_than", "at_least", "at_most"]), -3i64..6)
            .prop_map(|(n, op, v)| json!({"attribute": n, "op": op, "value": v})),
        (names.clone(), prop::sample::select(vec!["exists", "not_exists"]))
            .prop_map(|(n, op)| json!({"attribute": n, "op": op})),
        (names.clone(), prop::sample::select(vec!["contains", "matches_regex"]), prop::sample::select(vec!["r", "^P", "o$", "A"]))
            .prop_map(|(n, op, v)| json!({"attribute": n, "op": op, "value": v})),
        (names.clone(), prop::sample::select(vec!["before", "after"]), prop::sample::select(vec!["1990-01-01", "2024-10-01"]))
            .prop_map(|(n, op, v)| json!({"attribute": n, "op": op, "value": v})),
        (names, prop::sample::select(vec!["more_than_days_ago", "less_than_days_ago"]), 0i64..40)
            .prop_map(|(n, op, v)| json!({"attribute": n, "op": op, "value": v})),
        (prop::sample::select(vec!["amplitude", "mixpanel"]), prop::sample::select(vec!["c1", "c2"]))
            .prop_map(|(p, c)| json!({"attribute": format!("{p}_cohorts"), "op": "includes_value", "value": c})),
        (prop::sample::select(vec!["amplitude", "mixpanel"]), prop::sample::select(vec!["exists", "not_exists"]))
            .prop_map(|(p, op)| json!({"attribute": format!("{p}_cohorts"), "op": op})),
        (prop::sample::select(vec!["open", "buy", "never"]), prop::sample::select(vec!["count_at_least", "count_at_most"]), 0u64..4, prop::option::of(1i64..31))
            .prop_map(|(e, op, n, d)| json!({"event": e, "op": op, "value": n, "within_days": d})),
        (prop::option::of(prop::sample::select(vec!["p1", "p2"])), prop::sample::select(vec!["count_at_least", "count_at_most"]), 0u64..5, prop::option::of(1i64..31))
            .prop_map(|(p, op, n, d)| json!({"purchase": p, "op": op, "value": n, "within_days": d})),
    ]
}

fn filter() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 16, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 1..4).prop_map(|c| json!({"and": c})),
            prop::collection::vec(inner.clone(), 1..4).prop_map(|c| json!({"or": c})),
            inner.prop_map(|c| json!({"not": c})),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn index_equals_full_scan(changes in prop::collection::vec(change(), 1..40), filters in prop::collection::vec(filter(), 1..6)) {
        let mut index = WorkspaceIndex::default();
        let mut profiles: HashMap<u32, Profile> = HashMap::new();
        let mut members: BTreeSet<(&str, &str, u32)> = BTreeSet::new();
        for change in changes {
            match change {
                Change::Upsert(id, p) => {
                    index.upsert(id, &p);
                    profiles.insert(id, *p);
                }
                Change::Remove(id) => {
                    index.remove(id);
                    profiles.remove(&id);
                    members.retain(|m| m.2 != id);
                }
                Change::Member(partner, cohort, id, member) => {
                    // Only existing profiles join cohorts, as the store enforces.
                    if !profiles.contains_key(&id) {
                        continue;
                    }
                    index.set_member(partner, cohort, id, member);
                    if member { members.insert((partner, cohort, id)); } else { members.remove(&(partner, cohort, id)); }
                }
            }
        }
        for raw in filters {
            let filter = Filter::parse(&raw).expect("generated filters are valid");
            let mut expected = BTreeSet::new();
            for (id, p) in &profiles {
                let mut cohorts: BTreeMap<String, Vec<String>> = BTreeMap::new();
                for (partner, cohort, m) in &members {
                    if m == id {
                        cohorts.entry(partner.to_string()).or_default().push(cohort.to_string());
                    }
                }
                if matches(&filter, p, &cohorts, NOW) {
                    expected.insert(*id);
                }
            }
            let got: BTreeSet<u32> = index.eval(&filter, NOW).iter().collect();
            prop_assert_eq!(index.count(&filter, NOW), expected.len() as u64, "count of filter {}", raw);
            prop_assert_eq!(got, expected, "filter {}", raw);
        }
    }
}
