//! The leader moving canvas users: due entries are taken in batches, grouped by canvas and
//! step, and each group moves in one commit — a delay's users to the next step, a split's
//! matching users on and the others out, a message step's users into one dispatch (committed
//! with their moves, then delivered by the engine as any send) and on.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use eddy_model::time;
use eddy_store::{ObjectWrite, Workspace};
use serde_json::json;

use super::entries::{Entry, canvas_event, due_at, parse_due};
use super::{Canvas, StepKind};
use crate::dispatch::{Audience, CanvasStep, Dispatch, Recipient};
use crate::engine::Engine;
use crate::{MessagingError, kinds, records};

/// Due entries read at a time.
const BATCH: usize = 512;

/// Batches one pass takes at most, so that a pass always ends (a user moves through at most
/// every step of a canvas in one pass).
const MAX_BATCHES_PER_PASS: usize = 10_000;

impl Engine {
    /// On the leader, moves due canvas users about every second (sooner when woken).
    pub(crate) async fn run_canvases(self: Arc<Self>) {
        while !self.stopping_now() {
            let _ = tokio::time::timeout(Duration::from_secs(1), self.woken()).await;
            if self.stopping_now() || !self.leading_now() {
                continue;
            }
            if let Err(e) = self.move_due_canvas_users().await {
                tracing::error!(error = %e, "moving canvas users failed; tried again in a second");
            }
        }
    }

    /// One pass: every workspace's due users moved; answers how many moves were committed.
    pub async fn move_due_canvas_users(self: &Arc<Self>) -> Result<usize, MessagingError> {
        let now = time::now_ms();
        let mut moved = 0;
        for ws in self.store().workspaces()? {
            self.enter_due_schedules(&ws).await?;
            for _ in 0..MAX_BATCHES_PER_PASS {
                let due = self.due_entries(&ws, now).await?;
                if due.is_empty() {
                    break;
                }
                let mut groups: BTreeMap<(String, String), Vec<Entry>> = BTreeMap::new();
                for entry in due {
                    groups
                        .entry((entry.canvas_id.clone(), entry.step_id.clone()))
                        .or_default()
                        .push(entry);
                }
                for ((canvas_id, _), entries) in groups {
                    moved += entries.len();
                    self.move_group(&ws, &canvas_id, entries, now).await?;
                }
            }
        }
        Ok(moved)
    }

    /// Entries due by `now`, at most [`BATCH`], earliest first.
    async fn due_entries(&self, ws: &Workspace, now: i64) -> Result<Vec<Entry>, MessagingError> {
        let mut entries = Vec::new();
        for (name, _) in self
            .store()
            .objects_page(ws.id, kinds::CANVAS_DUE, "", None, BATCH)?
        {
            let Some((wake_at, entry)) = parse_due(&name) else {
                return Err(MessagingError::internal(format!(
                    "canvas due mark '{name}' does not read"
                )));
            };
            if wake_at > now {
                break;
            }
            match self.store().object(ws.id, kinds::CANVAS_ENTRY, entry)? {
                Some(value) => entries.push(serde_json::from_value(value).map_err(|e| {
                    MessagingError::internal(format!("stored canvas entry '{entry}': {e}"))
                })?),
                // Marks and entries are written together, so a mark without its entry is
                // damage: it is removed rather than read again every second.
                None => {
                    tracing::warn!(
                        mark = name,
                        "a canvas due mark without its entry was removed"
                    );
                    let stale = ObjectWrite {
                        kind: kinds::CANVAS_DUE.into(),
                        name,
                        value: None,
                    };
                    self.store().record(ws.id, vec![stale], Vec::new()).await?;
                }
            }
        }
        Ok(entries)
    }

    /// Moves one canvas step's due users, in one commit.
    async fn move_group(
        self: &Arc<Self>,
        ws: &Workspace,
        canvas_id: &str,
        entries: Vec<Entry>,
        now: i64,
    ) -> Result<(), MessagingError> {
        let Some(canvas) = records::canvas(self.store(), ws.id, canvas_id)? else {
            // The canvas was deleted: its users leave it.
            let writes = entries.iter().flat_map(Entry::exit_writes).collect();
            self.store().record(ws.id, writes, Vec::new()).await?;
            return Ok(());
        };
        let step_id = entries[0].step_id.clone();
        let mut writes = Vec::new();
        let mut events = Vec::new();
        let Some(index) = canvas.position(&step_id) else {
            // The step was edited away: its users leave, each with an Abort that says so.
            for entry in &entries {
                writes.extend(entry.exit_writes());
                if let Some(profile) = self.store().profile(ws.id, entry.profile)? {
                    events.push(canvas_event(
                        "users.canvas.Abort",
                        &canvas,
                        usize::MAX,
                        &profile,
                        &ws.app_group_id,
                        now,
                        vec![
                            ("canvas_step_id", json!(step_id)),
                            ("abort_type", json!("step_removed")),
                            (
                                "abort_log",
                                json!("the step the user waited in was removed from the canvas"),
                            ),
                        ],
                    ));
                }
            }
            self.store().record(ws.id, writes, events).await?;
            return Ok(());
        };
        let mut dispatch = None;
        let going_on: Vec<&Entry> = match &canvas.steps[index].kind {
            StepKind::Delay { .. } => entries.iter().collect(),
            StepKind::Split { filter } => {
                let filter = eddy_segments::Filter::parse(filter)
                    .map_err(|e| MessagingError::internal(format!("stored canvas filter: {e}")))?;
                let members = self.members(ws.id, vec![filter]).await?;
                let (on, out): (Vec<&Entry>, Vec<&Entry>) =
                    entries.iter().partition(|e| members.contains(e.profile));
                for entry in out {
                    writes.extend(entry.exit_writes());
                    if let Some(profile) = self.store().profile(ws.id, entry.profile)? {
                        events.push(canvas_event(
                            "users.canvas.exit.MatchedAudience",
                            &canvas,
                            index,
                            &profile,
                            &ws.app_group_id,
                            now,
                            Vec::new(),
                        ));
                    }
                }
                on
            }
            StepKind::Message { messages } => {
                let mut recipients: Vec<Recipient> = entries
                    .iter()
                    .map(|e| Recipient {
                        id: e.profile,
                        trigger_properties: Some(e.properties.clone()),
                    })
                    .collect();
                recipients.sort_by_key(|r| r.id);
                recipients.dedup_by_key(|r| r.id);
                let mut send = Dispatch::new(
                    "canvas",
                    (**messages).clone(),
                    Audience::Recipients(recipients),
                    now,
                );
                send.subscription_group_id = canvas.subscription_group_id.clone();
                send.canvas = Some(CanvasStep {
                    canvas_id: canvas.id.clone(),
                    canvas_name: canvas.name.clone(),
                    step_id: canvas.steps[index].id.clone(),
                    step_name: canvas.steps[index].name.clone(),
                });
                writes.extend(send.writes()?);
                dispatch = Some(send.id.clone());
                entries.iter().collect()
            }
        };
        for entry in going_on {
            self.advance(ws, &canvas, index, entry, now, &mut writes, &mut events)?;
        }
        self.store().record(ws.id, writes, events).await?;
        if let Some(dispatch_id) = dispatch {
            self.submit(ws.clone(), dispatch_id);
        }
        Ok(())
    }

    /// The writes and the Progression event that move a user from step `index` to the next
    /// (out of the canvas after the last).
    #[allow(clippy::too_many_arguments)]
    fn advance(
        &self,
        ws: &Workspace,
        canvas: &Canvas,
        index: usize,
        entry: &Entry,
        now: i64,
        writes: &mut Vec<ObjectWrite>,
        events: &mut Vec<eddy_model::currents::OutboxEvent>,
    ) -> Result<(), MessagingError> {
        let next = index + 1;
        let Some(next_step) = canvas.steps.get(next) else {
            writes.extend(entry.exit_writes());
            return Ok(());
        };
        let profile = self.store().profile(ws.id, entry.profile)?;
        let mut moved = entry.clone();
        moved.step_id = next_step.id.clone();
        moved.wake_at = due_at(canvas, next, now, profile.as_ref());
        writes.extend(moved.writes(Some(entry.wake_at))?);
        if let Some(profile) = &profile {
            events.push(canvas_event(
                "users.canvasstep.Progression",
                canvas,
                index,
                profile,
                &ws.app_group_id,
                now,
                vec![
                    ("progression_type", json!("step")),
                    ("is_canvas_entry", json!(false)),
                    ("canvas_entry_id", json!(entry.id)),
                    ("next_step_id", json!(next_step.id)),
                ],
            ));
        }
        Ok(())
    }
}
