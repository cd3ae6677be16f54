//! `eddy-bench messaging`: a broadcast of a personalised webhook (10 tags, one cached Connected
//! Content call) from `eddy serve` to every member of a segment, into a local receiver that only
//! counts, side by side with that receiver's own ceiling (a load generator posting the same
//! bodies); and the same for email into a local SMTP server (aiosmtpd), beside the ceiling of a
//! plain SMTP client sending it the same messages. Deliveries are counted at the receivers:
//! lost or repeated ones are reported.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};

use crate::load::{ADMIN, EddyServer};

/// Options of `eddy-bench messaging`.
#[derive(Args)]
pub struct MessagingArgs {
    /// Members of the segment the webhook is broadcast to.
    #[arg(long, default_value_t = 100_000)]
    users: usize,
    /// Recipients of the email broadcast (a subset of the users).
    #[arg(long, default_value_t = 20_000)]
    email_users: usize,
    /// A Python with aiosmtpd; without it email is not measured.
    #[arg(long)]
    smtp_python: Option<PathBuf>,
    /// Concurrent requests of the receiver's load generator.
    #[arg(long, default_value_t = 256)]
    connections: usize,
    /// Path of the eddy binary [default: next to eddy-bench].
    #[arg(long)]
    eddy: Option<PathBuf>,
    /// TOML appended to eddy's configuration (e.g. `[messaging]` settings to compare).
    #[arg(long, default_value = "")]
    eddy_config: String,
}

/// A receiver that counts requests per path (so repeats and losses show).
#[derive(Default)]
pub(crate) struct Counter {
    pub(crate) total: AtomicU64,
    first_at: Mutex<Option<Instant>>,
    last_at: Mutex<Option<Instant>>,
    paths: Mutex<HashMap<String, u32>>,
}

pub(crate) async fn start_receiver(counter: Arc<Counter>) -> anyhow::Result<String> {
    let app = axum::Router::new()
        .fallback(
            |axum::extract::State(c): axum::extract::State<Arc<Counter>>,
             uri: axum::http::Uri,
             _body: bytes::Bytes| async move {
                let now = Instant::now();
                c.total.fetch_add(1, Ordering::Relaxed);
                c.first_at
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert(now);
                *c.last_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(now);
                *c.paths
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(uri.path().to_string())
                    .or_default() += 1;
                "ok"
            },
        )
        .with_state(counter);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://{addr}"))
}

const WEBHOOK_BODY: &str = r#"{"user": "{{${user_id}}}", "name": "{{${first_name}}} {{${last_name}}}", "email": "{{${email_address}}}", "city": "{{${city}}}", "country": "{{${country}}}", "tier": "{{custom_attribute.${tier} | upcase}}", "points": {{custom_attribute.${points} | plus: 10}}, "vip": {{custom_attribute.${vip} | default: false}}, "coupon": "{{api_trigger_properties.${coupon}}}", "offer": "{{offers.headline}}"}"#;

fn user(i: usize) -> Value {
    let tier = ["basic", "pro", "team"][i % 3];
    json!({"external_id": format!("u{i}"), "first_name": format!("First{i}"), "last_name": "Last",
           "email": format!("user{i}@bench.test"), "home_city": "Lisbon", "country": "PT",
           "tier": tier, "points": i % 1000, "vip": i.is_multiple_of(7), "cohort": "bench", "n": i})
}

/// An admin API call with the harness's token; a non-2xx answer is an error.
pub(crate) async fn admin(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Value,
) -> anyhow::Result<Value> {
    let r = client
        .request(method, url)
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await?;
    let status = r.status();
    let text = r.text().await?;
    anyhow::ensure!(status.is_success(), "{url}: {status} {text}");
    Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn load_users(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    users: usize,
) -> anyhow::Result<()> {
    let bodies: Vec<String> = (0..users)
        .collect::<Vec<_>>()
        .chunks(75)
        .map(|c| json!({"attributes": c.iter().map(|i| user(*i)).collect::<Vec<_>>()}).to_string())
        .collect();
    let url = format!("{base}/users/track");
    let requests = bodies.into_iter().map(|b| (url.clone(), b)).collect();
    crate::cohorts::post_all(client, Some(key), requests, 8).await?;
    Ok(())
}

pub(crate) async fn wait_done(
    client: &reqwest::Client,
    base: &str,
    dispatch: &str,
) -> anyhow::Result<Value> {
    loop {
        let status: Value = client
            .get(format!(
                "{base}/eddy/v1/workspaces/default/dispatches/{dispatch}"
            ))
            .bearer_auth(ADMIN)
            .send()
            .await?
            .json()
            .await?;
        if status["state"] == "done" {
            return Ok(status);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs the benchmark.
pub async fn run(args: MessagingArgs) -> anyhow::Result<()> {
    let eddy = args.eddy.clone().unwrap_or_else(crate::sibling_eddy);
    let server =
        EddyServer::start_with(&eddy, &["users.track", "messages"], None, &args.eddy_config)
            .await?;
    let (base, key) = (server.url.clone(), server.key.clone());
    let client = reqwest::Client::new();
    let ws = format!("{base}/eddy/v1/workspaces/default");
    let counter = Arc::new(Counter::default());
    let receiver = start_receiver(counter.clone()).await?;
    // The Connected Content endpoint: one call, then the cache.
    let offers = axum::Router::new().route(
        "/offers",
        axum::routing::get(|| async { axum::Json(json!({"headline": "Two for one"})) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let offers_addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, offers).await });
    admin(
        &client,
        reqwest::Method::PUT,
        &format!("{ws}/connected-content"),
        // The offers server and the webhook receiver are both on loopback.
        json!({"allowed_hosts": [offers_addr.to_string(), "127.0.0.1"]}),
    )
    .await?;

    let started = Instant::now();
    load_users(&client, &base, &key, args.users).await?;
    println!(
        "{} users loaded in {:.1} s",
        args.users,
        started.elapsed().as_secs_f64()
    );
    let segment = admin(&client, reqwest::Method::POST, &format!("{ws}/segments"),
        json!({"name": "everyone", "filter": {"attribute": "cohort", "op": "equals", "value": "bench"}})).await?;
    let template = format!(
        "{{% connected_content http://{offers_addr}/offers :save offers :cache_max_age 900 %}}{WEBHOOK_BODY}"
    );
    let campaign = admin(&client, reqwest::Method::POST, &format!("{ws}/campaigns"), json!({"name": "bench webhook",
        "messages": {"webhook": {"url": format!("{receiver}/w/{{{{${{user_id}}}}}}"), "body": template,
                                 "request_headers": {"Content-Type": "application/json"}}}})).await?;

    // The receiver's ceiling, measured before and after eddy's broadcast (A B A).
    let before = ceiling(&receiver, args.users, args.connections, "before").await?;
    let ceiling_requests = counter.total.load(Ordering::Relaxed);
    *counter.first_at.lock().unwrap_or_else(|p| p.into_inner()) = None;

    // eddy: the broadcast, from the request to the last delivery.
    let cpu_before = crate::load::cpu_seconds(server.child.id());
    let t0 = Instant::now();
    let sent: Value = client
        .post(format!("{base}/messages/send"))
        .bearer_auth(&key)
        .json(&json!({"segment_id": segment["id"], "broadcast": true, "campaign_id": campaign["id"],
                      "messages": {"webhook": {"url": format!("{receiver}/w/{{{{${{user_id}}}}}}"), "body": template,
                                   "request_headers": {"Content-Type": "application/json"}}}}))
        .send()
        .await?
        .json()
        .await?;
    let dispatch = sent["dispatch_id"]
        .as_str()
        .context("dispatch_id")?
        .to_string();
    let status = wait_done(&client, &base, &dispatch).await?;
    let cpu = crate::load::cpu_seconds(server.child.id()) - cpu_before;
    let first = counter
        .first_at
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .context("no delivery")?;
    let last = counter
        .last_at
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .context("no delivery")?;
    let total = counter.total.load(Ordering::Relaxed) - ceiling_requests;
    let (distinct, repeated) = {
        let paths = counter.paths.lock().unwrap_or_else(|p| p.into_inner());
        let eddys = paths.iter().filter(|(path, _)| path.starts_with("/w/"));
        let (mut distinct, mut repeated) = (0, 0u64);
        for (_, n) in eddys {
            distinct += 1;
            repeated += u64::from(n - 1);
        }
        (distinct, repeated)
    };
    let eddy_rate = total as f64 / (last - t0).as_secs_f64();
    let to_first_ms = (first - t0).as_secs_f64() * 1000.0;
    let lost = args.users.saturating_sub(distinct);
    println!(
        "eddy webhook broadcast: {total} deliveries in {:.2} s = {eddy_rate:.0}/s; first after {to_first_ms:.0} ms; lost {lost}, repeated {repeated}; dispatch counts {}",
        (last - t0).as_secs_f64(),
        status["counts"]
    );
    println!(
        "eddy's CPU during the broadcast: {cpu:.2} s, {:.1} µs per delivery",
        cpu * 1e6 / total.max(1) as f64
    );
    if lost > 0 || repeated > 0 {
        bail!("the receiver counted {lost} lost and {repeated} repeated deliveries");
    }

    let after = ceiling(&receiver, args.users, args.connections, "after").await?;
    let ceiling = (before + after) / 2.0;
    println!(
        "receiver ceiling ({} connections): {before:.0}/s before, {after:.0}/s after; eddy reached {:.0}% of their mean",
        args.connections,
        100.0 * eddy_rate / ceiling
    );
    println!(
        "| webhook broadcast, {} users, 10 tags + cached Connected Content | {eddy_rate:.0}/s | {ceiling:.0}/s | {:.0}% | {to_first_ms:.0} ms | {lost} lost, {repeated} repeated |",
        args.users,
        100.0 * eddy_rate / ceiling
    );

    email_into_sink(&client, &base, &key, &ws, args.email_users).await?;
    if let Some(python) = &args.smtp_python {
        email(&client, &base, &key, &ws, python, args.email_users).await?;
    }
    server.stop();
    Ok(())
}

/// The receiver's ceiling: the bodies eddy sends, pre-rendered, posted by a load generator
/// (each to its own path, as eddy sends each user to theirs).
async fn ceiling(
    receiver: &str,
    users: usize,
    connections: usize,
    run: &str,
) -> anyhow::Result<f64> {
    let bodies: Vec<String> = (0..users).map(|i| {
        let u = user(i);
        format!(r#"{{"user": "u{i}", "name": "{} Last", "email": "{}", "city": "Lisbon", "country": "PT", "tier": "{}", "points": {}, "vip": {}, "coupon": "", "offer": "Two for one"}}"#,
            u["first_name"].as_str().unwrap_or_default(), u["email"].as_str().unwrap_or_default(),
            u["tier"].as_str().unwrap_or_default().to_uppercase(), u["points"].as_u64().unwrap_or(0) + 10, u["vip"])
    }).collect();
    let requests = bodies
        .into_iter()
        .enumerate()
        .map(|(i, b)| (format!("{receiver}/ceiling-{run}/{i}"), b))
        .collect();
    let generator = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .build()?;
    let took = crate::cohorts::post_all(&generator, None, requests, connections).await?;
    Ok(users as f64 / took.as_secs_f64())
}

async fn email(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    ws: &str,
    python: &std::path::Path,
    users: usize,
) -> anyhow::Result<()> {
    use eddy_messaging::smtp::{Pool, Relay, Reply};
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../eddy-testkit/smtp_sink.py");
    let mut sink = std::process::Command::new(python)
        .arg(script)
        .arg("--port")
        .arg(port.to_string())
        .arg("--count-only")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let stderr = sink.stderr.take().context("stderr")?;
    let lines = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    admin(
        client,
        reqwest::Method::PUT,
        &format!("{ws}/email"),
        json!({"smtp_url": format!("smtp://127.0.0.1:{port}")}),
    )
    .await?;
    // Recipients by id: the first `users` users, in requests of 50.
    let t0 = Instant::now();
    let mut dispatches = Vec::new();
    let email = email_message();
    for chunk in (0..users).collect::<Vec<_>>().chunks(50) {
        let ids: Vec<String> = chunk.iter().map(|i| format!("u{i}")).collect();
        let sent: Value = client
            .post(format!("{base}/messages/send"))
            .bearer_auth(key)
            .json(&json!({"external_user_ids": ids, "messages": email}))
            .send()
            .await?
            .json()
            .await?;
        dispatches.push(
            sent["dispatch_id"]
                .as_str()
                .context("dispatch_id")?
                .to_string(),
        );
    }
    let mut sent = 0;
    for d in &dispatches {
        sent += wait_done(client, base, d).await?["counts"]["sent"]
            .as_u64()
            .unwrap_or(0);
    }
    let eddy_secs = t0.elapsed().as_secs_f64();
    // The SMTP ceiling: the same messages through a plain pool of 8 connections.
    let relay =
        Relay::parse(&format!("smtp://127.0.0.1:{port}"), false).map_err(anyhow::Error::msg)?;
    let pool = Arc::new(Pool::new(relay, "bench".into(), 8));
    let message = ceiling_message();
    let t1 = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (pool, next, message) = (pool.clone(), next.clone(), message.clone());
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < users as u64 {
                match pool
                    .send("bench@shop.test", &["x@bench.test"], &message)
                    .await
                {
                    Ok(Reply::Accepted(_)) => {}
                    other => anyhow::bail!("smtp: {other:?}"),
                }
            }
            Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let ceiling = users as f64 / t1.elapsed().as_secs_f64();
    terminate(&mut sink);
    let lines = lines.join().unwrap_or_default();
    let received: u64 = lines
        .iter()
        .find_map(|l| {
            l.strip_prefix("received ")
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0);
    let eddy_rate = sent as f64 / eddy_secs;
    let expected = sent + users as u64;
    println!(
        "eddy email: {sent} delivered in {eddy_secs:.2} s = {eddy_rate:.0}/s (requests of 50 recipients); SMTP ceiling {ceiling:.0}/s; the server counted {received} of {expected}"
    );
    println!(
        "| email, {users} users | {eddy_rate:.0}/s | {ceiling:.0}/s | {:.0}% | | {} lost or repeated |",
        100.0 * eddy_rate / ceiling,
        expected.abs_diff(received)
    );
    Ok(())
}

/// A minimal SMTP server that accepts everything and counts messages per recipient.
#[derive(Default)]
struct SmtpCounter {
    messages: AtomicU64,
    last_at: Mutex<Option<Instant>>,
    recipients: Mutex<HashMap<String, u32>>,
}

async fn start_smtp_sink(counter: Arc<SmtpCounter>) -> anyhow::Result<u16> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                let _ = write.write_all(b"220 sink ESMTP\r\n").await;
                let mut rcpt = Vec::new();
                while let Ok(Some(line)) = lines.next_line().await {
                    let upper = line.to_ascii_uppercase();
                    let reply: &[u8] = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
                        b"250 sink\r\n"
                    } else if upper.starts_with("RCPT TO:") {
                        rcpt.push(line[8..].trim().trim_matches(['<', '>']).to_string());
                        b"250 ok\r\n"
                    } else if upper == "DATA" {
                        let _ = write.write_all(b"354 go on\r\n").await;
                        while let Ok(Some(data)) = lines.next_line().await {
                            if data == "." {
                                break;
                            }
                        }
                        counter.messages.fetch_add(1, Ordering::Relaxed);
                        *counter.last_at.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some(Instant::now());
                        let mut seen = counter.recipients.lock().unwrap_or_else(|p| p.into_inner());
                        for r in rcpt.drain(..) {
                            *seen.entry(r).or_default() += 1;
                        }
                        b"250 queued\r\n"
                    } else if upper == "QUIT" {
                        let _ = write.write_all(b"221 bye\r\n").await;
                        return;
                    } else {
                        if upper == "RSET" {
                            rcpt.clear();
                        }
                        b"250 ok\r\n"
                    };
                    if write.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok(port)
}

/// Email broadcast to a segment of `users` into the in-process SMTP sink, beside the sink's
/// ceiling with eddy's SMTP client sending it the same message.
async fn email_into_sink(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    ws: &str,
    users: usize,
) -> anyhow::Result<()> {
    use eddy_messaging::smtp::{Pool, Relay, Reply};
    let counter = Arc::new(SmtpCounter::default());
    let port = start_smtp_sink(counter.clone()).await?;
    admin(
        client,
        reqwest::Method::PUT,
        &format!("{ws}/email"),
        json!({"smtp_url": format!("smtp://127.0.0.1:{port}")}),
    )
    .await?;
    let segment = admin(client, reqwest::Method::POST, &format!("{ws}/segments"),
        json!({"name": "email sink", "filter": {"attribute": "n", "op": "less_than", "value": users}})).await?;
    let t0 = Instant::now();
    let sent: Value = client
        .post(format!("{base}/messages/send"))
        .bearer_auth(key)
        .json(&json!({"segment_id": segment["id"], "broadcast": true, "messages": email_message()}))
        .send()
        .await?
        .json()
        .await?;
    let dispatch = sent["dispatch_id"]
        .as_str()
        .context("dispatch_id")?
        .to_string();
    let status = wait_done(client, base, &dispatch).await?;
    let last = counter
        .last_at
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .context("no email arrived")?;
    let eddy_rate = counter.messages.load(Ordering::Relaxed) as f64 / (last - t0).as_secs_f64();
    let (distinct, repeated) = {
        let seen = counter.recipients.lock().unwrap_or_else(|p| p.into_inner());
        (
            seen.len(),
            seen.values().map(|n| u64::from(n - 1)).sum::<u64>(),
        )
    };
    let lost = users.saturating_sub(distinct);
    let relay =
        Relay::parse(&format!("smtp://127.0.0.1:{port}"), false).map_err(anyhow::Error::msg)?;
    let pool = Arc::new(Pool::new(relay, "bench".into(), 8));
    let message = ceiling_message();
    let t1 = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (pool, next, message) = (pool.clone(), next.clone(), message.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= users as u64 {
                    return Ok(());
                }
                let to = format!("ceiling{i}@bench.test");
                match pool.send("bench@shop.test", &[to.as_str()], &message).await {
                    Ok(Reply::Accepted(_)) => {}
                    other => anyhow::bail!("smtp: {other:?}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let ceiling = users as f64 / t1.elapsed().as_secs_f64();
    println!(
        "eddy email broadcast into the in-process sink: {eddy_rate:.0}/s; lost {lost}, repeated {repeated}; dispatch counts {}; the sink's ceiling with a plain client: {ceiling:.0}/s",
        status["counts"]
    );
    println!(
        "| email broadcast, {users} users, into an in-process SMTP sink | {eddy_rate:.0}/s | {ceiling:.0}/s | {:.0}% | | {lost} lost, {repeated} repeated |",
        100.0 * eddy_rate / ceiling
    );
    if lost > 0 || repeated > 0 {
        bail!("the sink counted {lost} lost and {repeated} repeated emails");
    }
    Ok(())
}

fn email_message() -> Value {
    json!({"email": {"from": "Bench <bench@shop.test>", "subject": "Hi {{${first_name}}}, {{custom_attribute.${points}}} points",
        "body": "<html><body><p>Hello {{${first_name}}} {{${last_name}}} from {{${city}}}.</p><p><a href=\"https://shop.test/p?u={{${user_id}}}\">Shop</a></p></body></html>"}})
}

/// The same shape eddy sends: both parts, the unsubscribe headers, a tracked link and pixel.
fn ceiling_message() -> String {
    let html = "<html><body><p>Hello First1 Last from Lisbon.</p><p><a href=\"http://127.0.0.1/eddy/t/c/eyJ3IjoxLCJwIjoxLCJkIjoiZGlzcGF0Y2giLCJrIjoiYyIsInUiOiJodHRwczovL3Nob3AudGVzdC9wP3U9dTEifQ.AAAAAAAAAAAAAAAAAAAAAA\">Shop</a></p><img src=\"http://127.0.0.1/eddy/t/o/eyJ3IjoxLCJwIjoxLCJkIjoiZGlzcGF0Y2giLCJrIjoibyJ9.AAAAAAAAAAAAAAAAAAAAAA\" width=\"1\" height=\"1\" alt=\"\" style=\"display:none\"></body></html>";
    use eddy_messaging::address::Mailbox;
    let mailbox = |name: Option<&str>, address: &str| Mailbox {
        name: name.map(str::to_string),
        address: address.to_string(),
    };
    let mail = eddy_messaging::mime::Mail {
        from: mailbox(Some("Bench"), "bench@shop.test"),
        to: mailbox(None, "x@bench.test"),
        reply_to: None,
        headers: Vec::new(),
        subject: "Hi First1, 1 points".into(),
        html: html.into(),
        text: eddy_messaging::mime::html_to_text(html),
        message_id: "dispatch.1@shop.test".into(),
        list_unsubscribe: Some("http://127.0.0.1/eddy/t/l/eyJ3IjoxfQ.AAAA".into()),
        date_ms: 0,
    };
    eddy_messaging::mime::format(&mail, "eddy-dispatch-1")
}

/// SIGTERM, so the sink reports its count.
fn terminate(child: &mut std::process::Child) {
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
}
