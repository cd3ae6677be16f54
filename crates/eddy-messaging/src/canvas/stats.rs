//! A canvas's figures per UTC day, as Braze's `/canvas/data_series` and `/data_summary` report
//! them: entries are counted in the commits that enter users (`canvas-stats`,
//! `{canvas_id}/{day}`, added by the writer so concurrent triggers lose nothing); what each
//! message step sent comes from its dispatches' counts; conversions are counted in the commits
//! that record them. eddy keeps no revenue for canvases: it is reported as 0.

use std::collections::BTreeMap;

use eddy_store::{CountWrite, Store};
use serde_json::{Map, Value, json};

use super::{Canvas, StepKind};
use crate::dispatch::Dispatch;
use crate::{MessagingError, kinds};

/// Longest series Braze answers, in days.
pub const MAX_DAYS: i64 = 14;

fn stats_name(canvas_id: &str, day: &str) -> String {
    format!("{canvas_id}/{day}")
}

/// The count that adds `n` entries to a canvas's day.
pub(crate) fn entries_count(canvas_id: &str, day: &str, n: usize) -> CountWrite {
    CountWrite {
        kind: kinds::CANVAS_STATS.into(),
        name: stats_name(canvas_id, day),
        field: "entries".into(),
        delta: n as i64,
    }
}

/// The counts of one conversion: on the day it happened and on the day of the entry that
/// converted (Braze's `conversions_by_entry_time`).
pub(crate) fn conversion_counts(canvas_id: &str, at: i64, entered_at: i64) -> Vec<CountWrite> {
    let count = |day: String, field: &str| CountWrite {
        kind: kinds::CANVAS_STATS.into(),
        name: stats_name(canvas_id, &day),
        field: field.into(),
        delta: 1,
    };
    vec![
        count(eddy_model::time::utc_day(at), "conversions"),
        count(
            eddy_model::time::utc_day(entered_at),
            "conversions_by_entry_time",
        ),
    ]
}

/// One day's figures.
#[derive(Debug, Default, Clone)]
struct Day {
    entries: u64,
    conversions: u64,
    conversions_by_entry_time: u64,
    /// Per step id: per channel, what its dispatches counted.
    steps: BTreeMap<String, Counted>,
}

#[derive(Debug, Default, Clone)]
struct Counted {
    sent: u64,
    failed: u64,
    aborted: u64,
}

/// The figures of `days` (UTC dates, oldest first) of a canvas.
fn gather(
    store: &Store,
    ws: u32,
    canvas: &Canvas,
    days: &[String],
) -> Result<BTreeMap<String, Day>, MessagingError> {
    let mut out: BTreeMap<String, Day> = days.iter().map(|d| (d.clone(), Day::default())).collect();
    for day in days {
        if let Some(stats) = store.object(ws, kinds::CANVAS_STATS, &stats_name(&canvas.id, day))? {
            let field = |name: &str| stats.get(name).and_then(Value::as_u64).unwrap_or(0);
            if let Some(d) = out.get_mut(day) {
                d.entries = field("entries");
                d.conversions = field("conversions");
                d.conversions_by_entry_time = field("conversions_by_entry_time");
            }
        }
    }
    for (id, value) in store.objects(ws, kinds::DISPATCH)? {
        if value.pointer("/canvas/canvas_id").and_then(Value::as_str) != Some(&canvas.id) {
            continue;
        }
        let dispatch: Dispatch = serde_json::from_value(value)
            .map_err(|e| MessagingError::internal(format!("stored dispatch '{id}': {e}")))?;
        let (Some(step), day) = (
            dispatch.canvas.as_ref().map(|c| c.step_id.clone()),
            eddy_model::time::utc_day(dispatch.created_at),
        ) else {
            continue;
        };
        if let Some(d) = out.get_mut(&day) {
            let counted = d.steps.entry(step).or_default();
            counted.sent += dispatch.counts.sent;
            counted.failed += dispatch.counts.failed;
            counted.aborted += dispatch.counts.aborted;
        }
    }
    Ok(out)
}

fn total_stats(figures: &Day) -> Value {
    json!({"revenue": 0.0, "conversions": figures.conversions,
           "conversions_by_entry_time": figures.conversions_by_entry_time,
           "entries": figures.entries})
}

/// Braze's `step_stats`: each message step with what it sent, per channel.
fn step_stats(canvas: &Canvas, counted: &BTreeMap<String, Counted>) -> Value {
    let mut steps = Map::new();
    for step in &canvas.steps {
        let StepKind::Message { messages } = &step.kind else {
            continue;
        };
        let c = counted.get(&step.id).cloned().unwrap_or_default();
        let figures = json!([{"sent": c.sent, "failed": c.failed, "aborted": c.aborted}]);
        let mut by_channel = Map::new();
        if messages.webhook.is_some() {
            by_channel.insert("webhook".into(), figures.clone());
        }
        if messages.email.is_some() {
            by_channel.insert("email".into(), figures);
        }
        steps.insert(
            step.id.clone(),
            json!({"name": step.name, "revenue": 0.0, "conversions": 0,
                   "conversions_by_entry_time": 0, "messages": by_channel}),
        );
    }
    Value::Object(steps)
}

/// `/canvas/data_series`: a day at a time.
pub fn series(
    store: &Store,
    ws: u32,
    canvas: &Canvas,
    days: &[String],
    with_steps: bool,
) -> Result<Value, MessagingError> {
    let gathered = gather(store, ws, canvas, days)?;
    let stats: Vec<Value> = gathered
        .iter()
        .map(|(day, figures)| {
            let mut one = json!({"time": day, "total_stats": total_stats(figures)});
            if with_steps {
                one["step_stats"] = step_stats(canvas, &figures.steps);
            }
            one
        })
        .collect();
    Ok(json!({"data": {"name": canvas.name, "stats": stats}, "message": "success"}))
}

/// `/canvas/data_summary`: the days added up.
pub fn summary(
    store: &Store,
    ws: u32,
    canvas: &Canvas,
    days: &[String],
    with_steps: bool,
) -> Result<Value, MessagingError> {
    let gathered = gather(store, ws, canvas, days)?;
    let total = Day {
        entries: gathered.values().map(|d| d.entries).sum(),
        conversions: gathered.values().map(|d| d.conversions).sum(),
        conversions_by_entry_time: gathered.values().map(|d| d.conversions_by_entry_time).sum(),
        steps: BTreeMap::new(),
    };
    let mut steps: BTreeMap<String, Counted> = BTreeMap::new();
    for day in gathered.values() {
        for (step, c) in &day.steps {
            let total = steps.entry(step.clone()).or_default();
            total.sent += c.sent;
            total.failed += c.failed;
            total.aborted += c.aborted;
        }
    }
    let mut data = json!({"name": canvas.name, "total_stats": total_stats(&total)});
    if with_steps {
        data["step_stats"] = step_stats(canvas, &steps);
    }
    Ok(json!({"data": data, "message": "success"}))
}

/// The UTC days of a series: `length` days ending at `ending_at`, or from `starting_at`; at
/// most [`MAX_DAYS`], as Braze bounds them.
pub fn days(
    ending_at: i64,
    starting_at: Option<i64>,
    length: Option<i64>,
) -> Result<Vec<String>, MessagingError> {
    const DAY_MS: i64 = 86_400_000;
    let end_day = ending_at.div_euclid(DAY_MS);
    let count = match (starting_at, length) {
        (_, Some(length)) if !(1..=MAX_DAYS).contains(&length) => {
            return Err(MessagingError::invalid(format!(
                "length is 1 to {MAX_DAYS}"
            )));
        }
        (_, Some(length)) => length,
        (Some(start), None) => {
            let count = end_day - start.div_euclid(DAY_MS) + 1;
            if !(1..=MAX_DAYS).contains(&count) {
                return Err(MessagingError::invalid(format!(
                    "starting_at is 0 to {} days before ending_at",
                    MAX_DAYS - 1
                )));
            }
            count
        }
        (None, None) => {
            return Err(MessagingError::invalid("length or starting_at is required"));
        }
    };
    Ok((0..count)
        .rev()
        .map(|back| eddy_model::time::utc_day((end_day - back) * DAY_MS))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_days_end_at_ending_at_and_are_bounded() {
        let end = 1_700_000_000_000; // 2023-11-14T22:13:20Z
        assert_eq!(
            days(end, None, Some(3)).unwrap(),
            ["2023-11-12", "2023-11-13", "2023-11-14"]
        );
        assert_eq!(
            days(end, Some(end - 86_400_000), None).unwrap(),
            ["2023-11-13", "2023-11-14"]
        );
        assert!(days(end, None, Some(15)).is_err());
        assert!(days(end, None, Some(0)).is_err());
        assert!(days(end, Some(end + 86_400_000), None).is_err());
        assert!(days(end, None, None).is_err());
    }
}
