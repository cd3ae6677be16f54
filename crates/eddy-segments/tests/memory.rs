//! What each profile costs the segment index, attribute by attribute: profiles shaped like
//! `eddy-bench memory`'s (20 custom attributes), indexed, then the index's own estimate of its
//! heap. Run with `cargo test --release -p eddy-segments --test memory -- --ignored --nocapture`.

use eddy_model::attrs::AttrValue;
use eddy_model::profile::Profile;
use eddy_segments::Index;

fn profile(i: u64) -> Profile {
    let r = i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut p = Profile::new(format!("{:024x}", r ^ 0x5bd1_e995), 1_700_000_000_000);
    p.external_id = Some(format!("mem-{i:09}"));
    let s = |v: String| AttrValue::String(v);
    let attrs = [
        (
            "plan",
            s(["free", "pro", "team", "enterprise"][(r % 4) as usize].into()),
        ),
        (
            "city",
            s(["Seattle", "Paris", "Lisbon", "Tokyo", "Berlin"][((r >> 8) % 5) as usize].into()),
        ),
        ("score", AttrValue::Int(((r >> 16) % 1000) as i64)),
        ("visits", AttrValue::Int(((r >> 26) % 500) as i64)),
        (
            "ltv",
            AttrValue::Float(((r >> 30) % 100_000) as f64 / 100.0),
        ),
        ("vip", AttrValue::Bool((r >> 40).is_multiple_of(10))),
        ("churn_risk", AttrValue::Bool((r >> 44).is_multiple_of(3))),
        ("newsletter", AttrValue::Bool((r >> 46).is_multiple_of(2))),
        ("segment_a", AttrValue::Int(((r >> 48) % 7) as i64)),
        ("segment_b", AttrValue::Int(((r >> 50) % 11) as i64)),
        ("cohort_week", AttrValue::Int(((r >> 52) % 52) as i64)),
        ("referrer", s(format!("ref-{}", (r >> 20) % 2000))),
        ("campaign", s(format!("c-{}", (r >> 24) % 300))),
        (
            "device",
            s(["ios", "android", "web"][((r >> 34) % 3) as usize].into()),
        ),
        (
            "locale_hint",
            s(["en", "fr", "pt", "ja"][((r >> 36) % 4) as usize].into()),
        ),
        (
            "last_order_at",
            AttrValue::Time(1_700_000_000_000 + ((r >> 38) % 365) as i64 * 86_400_000),
        ),
        (
            "signup_at",
            AttrValue::Time(1_680_000_000_000 + ((r >> 54) % 365) as i64 * 86_400_000),
        ),
        ("orders", AttrValue::Int(((r >> 12) % 40) as i64)),
        (
            "avg_basket",
            AttrValue::Float(((r >> 14) % 20_000) as f64 / 100.0),
        ),
        ("nps", AttrValue::Int(((r >> 18) % 11) as i64)),
    ];
    for (name, value) in attrs {
        p.custom.insert(name.to_string(), value);
    }
    p
}

#[test]
#[ignore]
fn bytes_per_profile_by_attribute() {
    let n: u32 = std::env::var("EDDY_INDEX_PROFILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let mut index = Index::default();
    let ws = index.workspace_mut(0);
    for id in 0..n {
        ws.upsert(id, &profile(u64::from(id)));
    }
    let (total, columns) = ws.heap_bytes();
    println!(
        "{n} profiles: {:.1} MiB, {:.0} bytes per profile",
        total as f64 / 1048576.0,
        total as f64 / f64::from(n)
    );
    println!("| attribute | bytes per profile |");
    println!("|---|---:|");
    for (name, bytes) in columns {
        println!("| {name} | {:.1} |", bytes as f64 / f64::from(n));
    }
}
