//! `eddy-bench liquid`: one Braze-style email (2 KB, 15 personalization tags, a `for` over 10
//! catalog items with 5 filters, one cached `connected_content`) rendered for N different users,
//! by eddy (its engine, on `--threads` threads) and, side by side, by liquidjs (Node) and by
//! Shopify's Ruby Liquid 5. The peers have no Connected Content: they get the same catalog as a
//! variable, so every engine renders the same bytes (checked).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use eddy_liquid::http::{HttpClient, Rules};
use eddy_liquid::{Limits, Object, Rendered, Template, Value};
use serde_json::json;

/// Options of `eddy-bench liquid`.
#[derive(clap::Args)]
pub struct LiquidArgs {
    /// Users to render for.
    #[arg(long, default_value_t = 100_000)]
    users: usize,
    /// Threads rendering for eddy.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// A folder whose `node_modules` holds `liquidjs`; without it liquidjs is not measured.
    #[arg(long)]
    liquidjs: Option<PathBuf>,
    /// Ruby with the `liquid` gem (Debian's ruby-liquid); without it Ruby is not measured.
    #[arg(long)]
    ruby: Option<PathBuf>,
}

const BODY: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>Your {{ month }} picks, {{ first_name | default: 'there' }}</title></head>
<body style="font-family: Helvetica, Arial, sans-serif; margin: 0; padding: 0; background: #f4f4f7;">
<table role="presentation" width="100%" cellpadding="0" cellspacing="0"><tr><td align="center">
<table role="presentation" width="600" cellpadding="0" cellspacing="0" style="background: #ffffff;">
<tr><td style="padding: 24px 32px;">
<p style="font-size: 18px;">Hi {{ first_name | default: 'there' }} {{ last_name }},</p>
<p>Thanks for being with us since {{ custom_attribute.signup | date: '%B %-d, %Y' }}. You are on the
<strong>{{ custom_attribute.plan | upcase }}</strong> plan in {{ city | default: 'your city' }}, {{ country }}.</p>
<p>You have {{ custom_attribute.points }} points; one more order brings you to {{ custom_attribute.points | plus: 50 }}.</p>
{% if custom_attribute.vip %}<p style="color: #b8860b;">As a VIP you get free shipping on everything this month.</p>{% else %}<p>Spend {{ custom_attribute.points | minus: 100 | abs }} more points to become a VIP.</p>{% endif %}
<p>Use the code <strong>{{ coupon | upcase }}</strong> before {{ expires | date: '%A %-d %B' }}.</p>
<table role="presentation" width="100%" cellpadding="6" cellspacing="0" style="border-collapse: collapse;">
<tr><th align="left">Item</th><th align="right">Price</th><th align="left">Category</th></tr>
{% for item in catalog.items limit: 10 %}<tr><td>{{ item.title | escape | truncate: 30 }}</td><td align="right">{{ item.price | times: 1.1 | round: 2 }}</td><td>{{ item.category | upcase }}</td></tr>
{% endfor %}</table>
<p style="font-size: 12px; color: #888888;">You receive this email at {{ email }} because you signed up in {{ language | default: 'en' }}.
Update your preferences or unsubscribe at any time; we will miss you, {{ first_name | default: 'friend' }}.</p>
</td></tr></table>
</td></tr></table>
</body></html>
"#;

const CATEGORIES: [&str; 3] = ["kitchen", "garden", "books"];
const COUNTRIES: [&str; 4] = ["PT", "DE", "US", "FR"];
const PLANS: [&str; 3] = ["basic", "pro", "team"];

fn catalog() -> serde_json::Value {
    let items: Vec<_> = (0..10)
        .map(|i| {
            json!({"title": format!("Hand-thrown stoneware mug & saucer no. {i}"),
                   "price": 12.5 + i as f64 * 3.25,
                   "category": CATEGORIES[i % 3]})
        })
        .collect();
    json!({"items": items})
}

fn user(i: usize) -> serde_json::Value {
    json!({
        "first_name": if i.is_multiple_of(7) { serde_json::Value::Null } else { json!(format!("User{i}")) },
        "last_name": format!("Family{}", i % 977),
        "email": format!("user{i}@example.com"),
        "city": if i.is_multiple_of(5) { serde_json::Value::Null } else { json!("Lisbon") },
        "country": COUNTRIES[i % 4],
        "language": if i.is_multiple_of(3) { serde_json::Value::Null } else { json!("pt") },
        "coupon": format!("save{}", i % 50),
        "expires": "2026-12-24",
        "month": "December",
        "custom_attribute": {"plan": PLANS[i % 3], "points": (i * 37) % 500,
                             "vip": i.is_multiple_of(4), "signup": format!("20{:02}-0{}-1{}", 15 + i % 10, 1 + i % 9, i % 10)},
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Runs the benchmark and prints a Markdown table.
pub async fn run(args: LiquidArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let catalog_json = catalog();
    // The catalog server Connected Content calls once; every later render hits the cache.
    let served = catalog_json.clone();
    let app = axum::Router::new().route(
        "/catalog",
        axum::routing::get(move || {
            let body = served.clone();
            async move { axum::Json(body) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    let eddy_template =
        format!("{{% connected_content http://{addr}/catalog :save catalog %}}{BODY}");
    let users: Vec<serde_json::Value> = (0..args.users).map(user).collect();
    println!(
        "template: {} bytes, {} users, eddy on {} threads",
        BODY.len(),
        args.users,
        args.threads
    );

    let http = HttpClient::new(
        tokio::runtime::Handle::current(),
        Duration::from_millis(100),
    )
    .map_err(anyhow::Error::msg)?;
    let rules = Rules {
        allowed_hosts: eddy_net::AllowedHosts::parse(&["127.0.0.1"])?,
        ..Rules::default()
    };
    let variables: Vec<Object> = users
        .iter()
        .map(|u| Value::from_json(u).into_object().unwrap_or_default())
        .collect();
    let eddy_parsed = Template::parse(&eddy_template).context("the template parses")?;
    let (eddy_rate, eddy_p99, eddy_bytes) = tokio::task::block_in_place(|| {
        measure(
            &eddy_parsed,
            &variables,
            args.threads,
            Some((&http, &rules)),
        )
    });
    // Where the time goes: the same email with the catalog given as a variable instead.
    let with_catalog: Vec<Object> = variables
        .iter()
        .map(|v| {
            let mut v = v.clone();
            v.insert("catalog".into(), Value::from_json(&catalog_json));
            v
        })
        .collect();
    let plain = Template::parse(BODY).context("the template parses")?;
    let (plain_rate, plain_p99, _) =
        tokio::task::block_in_place(|| measure(&plain, &with_catalog, args.threads, None));
    drop(with_catalog);

    // The peers read the same users and catalog from NDJSON.
    let data = dir.path().join("users.ndjson");
    let mut text = String::new();
    for u in &users {
        let mut u = u.clone();
        u["catalog"] = catalog_json.clone();
        text.push_str(&u.to_string());
        text.push('\n');
    }
    std::fs::write(&data, text)?;
    let template_file = dir.path().join("email.liquid");
    std::fs::write(&template_file, BODY)?;

    let mut rows = vec![
        (
            format!("eddy ({} threads)", args.threads),
            eddy_rate,
            eddy_p99,
            eddy_bytes,
        ),
        (
            format!("eddy, catalog as a variable ({} threads)", args.threads),
            plain_rate,
            plain_p99,
            eddy_bytes,
        ),
    ];
    if let Some(folder) = &args.liquidjs {
        let script = dir.path().join("bench.js");
        std::fs::write(&script, LIQUIDJS_SCRIPT)?;
        let out = std::process::Command::new("node")
            .arg(&script)
            .arg(&template_file)
            .arg(&data)
            .env("NODE_PATH", folder.join("node_modules"))
            .output()
            .context("run node")?;
        rows.push(peer_row("liquidjs (Node, 1 thread)", &out)?);
    }
    if let Some(ruby) = &args.ruby {
        let script = dir.path().join("bench.rb");
        std::fs::write(&script, RUBY_SCRIPT)?;
        let out = std::process::Command::new(ruby)
            .arg(&script)
            .arg(&template_file)
            .arg(&data)
            .env("TZ", "UTC")
            .output()
            .context("run ruby")?;
        rows.push(peer_row("Ruby Liquid 5 (1 thread)", &out)?);
    }
    println!("\n| engine | renders/s | p99 per render | output bytes |");
    println!("|---|---:|---:|---:|");
    for (name, rate, p99, bytes) in &rows {
        println!(
            "| {name} | {:.0} | {:.1} µs | {bytes} |",
            rate,
            p99.as_secs_f64() * 1e6
        );
    }
    for (name, _, _, bytes) in &rows[2..] {
        if *bytes != eddy_bytes {
            bail!("{name} rendered {bytes} bytes in all, eddy {eddy_bytes}: the outputs differ");
        }
    }
    if let Some((_, js_rate, _, _)) = rows.iter().find(|r| r.0.starts_with("liquidjs")) {
        println!("\neddy / liquidjs: {:.1}×", eddy_rate / js_rate);
    }
    Ok(())
}

fn peer_row(
    name: &str,
    out: &std::process::Output,
) -> anyhow::Result<(String, f64, Duration, usize)> {
    if !out.status.success() {
        bail!("{name} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    // "renders seconds p99_micros bytes"
    let text = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<f64> = text
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    let [renders, seconds, p99, bytes] = fields[..] else {
        bail!("{name} printed {text:?}");
    };
    Ok((
        name.to_string(),
        renders / seconds,
        Duration::from_secs_f64(p99 / 1e6),
        bytes as usize,
    ))
}

const LIQUIDJS_SCRIPT: &str = r#"
const fs = require('fs');
const { Liquid } = require('liquidjs');
const [template, data] = process.argv.slice(2);
const engine = new Liquid();
const parsed = engine.parse(fs.readFileSync(template, 'utf8'));
const users = fs.readFileSync(data, 'utf8').trim().split('\n').map(JSON.parse);
const times = [];
let bytes = 0;
const start = process.hrtime.bigint();
for (const u of users) {
  const t = process.hrtime.bigint();
  const out = engine.renderSync(parsed, u);
  times.push(Number(process.hrtime.bigint() - t) / 1000);
  bytes += Buffer.byteLength(out);
}
const seconds = Number(process.hrtime.bigint() - start) / 1e9;
times.sort((a, b) => a - b);
console.log(users.length, seconds, times[Math.round((times.length - 1) * 0.99)], bytes);
"#;

const RUBY_SCRIPT: &str = r##"
require 'liquid'
require 'json'
template = Liquid::Template.parse(File.read(ARGV[0]))
users = File.readlines(ARGV[1]).map { |l| JSON.parse(l) }
times = []
bytes = 0
start = Process.clock_gettime(Process::CLOCK_MONOTONIC)
users.each do |u|
  t = Process.clock_gettime(Process::CLOCK_MONOTONIC)
  out = template.render(u)
  times << (Process.clock_gettime(Process::CLOCK_MONOTONIC) - t) * 1e6
  bytes += out.bytesize
end
seconds = Process.clock_gettime(Process::CLOCK_MONOTONIC) - start
times.sort!
puts "#{users.size} #{seconds} #{times[((times.size - 1) * 0.99).round]} #{bytes}"
"##;

/// Renders `template` for every variable set on `threads` threads: (renders/s, p99, bytes).
fn measure(
    template: &Template,
    variables: &[Object],
    threads: usize,
    connected: Option<(&HttpClient, &Rules)>,
) -> (f64, Duration, usize) {
    let threads = threads.max(1);
    let chunk = variables.len().div_ceil(threads).max(1);
    let started = Instant::now();
    let results: Vec<(Vec<Duration>, usize)> = std::thread::scope(|scope| {
        let handles: Vec<_> = variables
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    let scoped = connected.map(|(http, rules)| http.scoped("bench", rules));
                    let fetch = scoped.as_ref().map(|f| f as &dyn eddy_liquid::Fetch);
                    let mut times = Vec::with_capacity(part.len());
                    let mut bytes = 0usize;
                    for vars in part {
                        let t = Instant::now();
                        let out = template.render(vars, Limits::default(), fetch);
                        times.push(t.elapsed());
                        if let Ok(Rendered::Output(text)) = out {
                            bytes += text.len();
                        }
                    }
                    (times, bytes)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let elapsed = started.elapsed();
    let mut times: Vec<Duration> = results
        .iter()
        .flat_map(|(t, _)| t.iter().copied())
        .collect();
    let bytes = results.iter().map(|(_, b)| b).sum();
    times.sort_unstable();
    (
        variables.len() as f64 / elapsed.as_secs_f64(),
        percentile(&times, 0.99),
        bytes,
    )
}
