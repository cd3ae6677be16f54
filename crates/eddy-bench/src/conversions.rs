//! `eddy-bench conversions`: `/users/track` while a campaign with conversion events is active,
//! for users who each received 1,000 earlier messages, side by side with users who received
//! none. Conversions read only the messages that may still convert, so the two should match.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use serde_json::{Value, json};

use crate::load::EddyServer;
use crate::messaging::{Counter, admin, start_receiver, wait_done};

/// Options of `eddy-bench conversions`.
#[derive(Args)]
pub struct ConversionsArgs {
    /// Users in each group (with history, without).
    #[arg(long, default_value_t = 200)]
    users: usize,
    /// Earlier messages each user of the first group received.
    #[arg(long, default_value_t = 1_000)]
    history: usize,
    /// Tracked events per user and round.
    #[arg(long, default_value_t = 100)]
    events: usize,
    /// Rounds, alternating the groups (A B A B…).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Path of the eddy binary [default: next to eddy-bench].
    #[arg(long)]
    eddy: Option<std::path::PathBuf>,
}

/// Runs the benchmark.
pub async fn run(args: ConversionsArgs) -> anyhow::Result<()> {
    let eddy = args.eddy.clone().unwrap_or_else(crate::sibling_eddy);
    let server = EddyServer::start(&eddy, &["users.track", "messages"]).await?;
    let (base, key) = (server.url.clone(), server.key.clone());
    let client = reqwest::Client::new();
    let ws = format!("{base}/eddy/v1/workspaces/default");
    let counter = Arc::new(Counter::default());
    let receiver = start_receiver(counter.clone()).await?;
    admin(
        &client,
        reqwest::Method::PUT,
        &format!("{ws}/connected-content"),
        json!({"allowed_hosts": ["127.0.0.1"]}),
    )
    .await?;

    let profiles: Vec<Value> = (0..args.users)
        .flat_map(|i| {
            [
                json!({"external_id": format!("h{i}"), "group": "history"}),
                json!({"external_id": format!("n{i}"), "group": "none"}),
            ]
        })
        .collect();
    let requests = profiles
        .chunks(75)
        .map(|c| {
            (
                format!("{base}/users/track"),
                json!({"attributes": c}).to_string(),
            )
        })
        .collect();
    crate::cohorts::post_all(&client, Some(&key), requests, 4).await?;
    let history_segment = admin(&client, reqwest::Method::POST, &format!("{ws}/segments"),
        json!({"name": "history", "filter": {"attribute": "group", "op": "equals", "value": "history"}})).await?;
    let webhook = json!({"webhook": {"url": format!("{receiver}/w"), "body": "{{${user_id}}}"}});

    // The history: sends without conversion events, as most of a user's past messages are.
    let started = Instant::now();
    let mut dispatches = Vec::new();
    for _ in 0..args.history {
        let sent: Value = client
            .post(format!("{base}/messages/send"))
            .bearer_auth(&key)
            .json(&json!({"segment_id": history_segment["id"], "broadcast": true, "messages": webhook}))
            .send()
            .await?
            .json()
            .await?;
        let id = sent["dispatch_id"].as_str().context("dispatch_id")?;
        dispatches.push(id.to_string());
    }
    for id in &dispatches {
        wait_done(&client, &base, id).await?;
    }
    println!(
        "history: {} messages to each of {} users in {:.1} s",
        args.history,
        args.users,
        started.elapsed().as_secs_f64()
    );

    // The active campaign: every user of both groups got its message and may convert.
    let campaign = admin(&client, reqwest::Method::POST, &format!("{ws}/campaigns"), json!({
        "name": "converting", "messages": webhook,
        "conversion_events": [{"type": "custom_event", "custom_event_name": "bought", "window_seconds": 86_400}]})).await?;
    let everyone = admin(
        &client,
        reqwest::Method::POST,
        &format!("{ws}/segments"),
        json!({"name": "everyone", "filter": {"attribute": "group", "op": "exists"}}),
    )
    .await?;
    let sent: Value = client
        .post(format!("{base}/messages/send"))
        .bearer_auth(&key)
        .json(&json!({"segment_id": everyone["id"], "broadcast": true,
                      "campaign_id": campaign["id"], "messages": webhook}))
        .send()
        .await?
        .json()
        .await?;
    let status = wait_done(
        &client,
        &base,
        sent["dispatch_id"].as_str().context("dispatch_id")?,
    )
    .await?;
    println!("conversion campaign sent: {}", status["counts"]);

    // Tracked events that do not convert: each is checked against the user's sends.
    let mut rates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for round in 0..args.rounds * 2 {
        let group = round % 2;
        let prefix = ["h", "n"][group];
        let events: Vec<Value> = (0..args.events)
            .flat_map(|k| {
                (0..args.users).map(move |i| {
                    json!({"external_id": format!("{prefix}{i}"), "name": "viewed",
                           "time": "2026-12-07T12:00:00Z", "properties": {"k": k}})
                })
            })
            .collect();
        let requests = events
            .chunks(75)
            .map(|c| {
                (
                    format!("{base}/users/track"),
                    json!({"events": c}).to_string(),
                )
            })
            .collect();
        let took: Duration = crate::cohorts::post_all(&client, Some(&key), requests, 8).await?;
        rates[group].push(events.len() as f64 / took.as_secs_f64());
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (with, without) = (median(&mut rates[0]), median(&mut rates[1]));
    println!(
        "| /users/track events, conversion campaign active | users with {} past messages: {with:.0} events/s | users with none: {without:.0} events/s | {:.2}× |",
        args.history,
        with / without
    );
    server.stop();
    Ok(())
}
