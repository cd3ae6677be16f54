//! One dispatch from start to end: waiting for its schedule, visiting its audience chunk by
//! chunk (prepared, delivered and committed in a pipeline), cancellation, and parking a send
//! whose runs keep failing.

use super::conversions::reached;
use super::deliver::Channels;
use super::prepare::shared_variables;
use super::*;

impl Engine {
    pub(super) fn load(&self, ws: u32, id: &str) -> Result<Option<Dispatch>, MessagingError> {
        crate::records::dispatch(&self.store, ws, id)
    }

    pub(super) async fn run(
        self: &Arc<Self>,
        ws: &Workspace,
        id: &str,
    ) -> Result<(), MessagingError> {
        // Wait for the schedule, re-reading it whenever a schedule changes.
        let mut dispatch = loop {
            let Some(dispatch) = self.load(ws.id, id)? else {
                return Ok(());
            };
            let open = matches!(dispatch.state, State::Scheduled | State::Sending);
            if open && self.cancel_requested(ws.id, id)? {
                return self.finish_cancelled(ws, dispatch).await;
            }
            match dispatch.state {
                State::Done | State::Cancelled | State::Failed => {
                    // A schedule deleted before it was due leaves its request behind.
                    if self.cancel_requested(ws.id, id)? {
                        self.store
                            .delete_object(ws.id, kinds::DISPATCH_CANCEL, id.to_string())
                            .await?;
                    }
                    return Ok(());
                }
                State::Sending => break dispatch,
                State::Scheduled => {}
            }
            let now = eddy_model::time::now_ms();
            let first_due = if dispatch.in_local_time {
                dispatch.send_at - 14 * 3_600_000
            } else {
                dispatch.send_at
            };
            if first_due <= now {
                let mut started = dispatch;
                started.state = State::Sending;
                self.save(ws.id, &started, Vec::new(), Vec::new()).await?;
                break started;
            }
            let wait = Duration::from_millis((first_due - now).min(60_000) as u64);
            let _ = tokio::time::timeout(wait, self.wake.notified()).await;
            if self.stopping() {
                return Ok(());
            }
        };
        if dispatch.starts_without_progress >= MAX_STARTS_WITHOUT_PROGRESS {
            return self.park(ws, dispatch).await;
        }
        dispatch.starts_without_progress += 1;
        self.save(ws.id, &dispatch, Vec::new(), Vec::new()).await?;
        loop {
            match self.pass(ws, &mut dispatch).await? {
                PassEnd::Done => break,
                PassEnd::Stopped => return Ok(()),
                PassEnd::Cancelled => return self.finish_cancelled(ws, dispatch).await,
                PassEnd::PendingUntil(due) => {
                    // Recipients in later time zones: sleep until the next one is due, then
                    // visit the audience again (recipients already settled are skipped).
                    loop {
                        let wait = (due - eddy_model::time::now_ms()).clamp(0, 3_600_000);
                        if wait == 0 {
                            break;
                        }
                        let _ = tokio::time::timeout(
                            Duration::from_millis(wait as u64),
                            self.wake.notified(),
                        )
                        .await;
                        if self.stopping() {
                            return Ok(());
                        }
                        if self.cancel_requested(ws.id, id)? {
                            return self.finish_cancelled(ws, dispatch).await;
                        }
                    }
                    dispatch.next = 0;
                    dispatch.claimed = 0;
                }
            }
        }
        dispatch.state = State::Done;
        dispatch.finished_at = Some(eddy_model::time::now_ms());
        self.save(ws.id, &dispatch, Vec::new(), Vec::new()).await?;
        tracing::info!(
            dispatch_id = id,
            workspace = ws.name,
            sent = dispatch.counts.sent,
            failed = dispatch.counts.failed,
            "dispatch finished"
        );
        Ok(())
    }

    /// Asks a dispatch to stop: the engine running it stops before its next chunk (or before
    /// it starts, when it waits for its schedule), counts what was not sent, and marks it
    /// cancelled; a restart never resumes it. Works from any node: the request is stored.
    pub async fn request_cancel(&self, ws: u32, id: &str) -> Result<(), MessagingError> {
        self.store
            .put_object(
                ws,
                kinds::DISPATCH_CANCEL,
                id.to_string(),
                json!({"at": eddy_model::time::now_ms()}),
            )
            .await?;
        self.wake();
        Ok(())
    }

    pub(super) fn cancel_requested(&self, ws: u32, id: &str) -> Result<bool, MessagingError> {
        Ok(self.store.object(ws, kinds::DISPATCH_CANCEL, id)?.is_some())
    }

    /// Ends a dispatch as cancelled, in one commit with the request's removal.
    pub(super) async fn finish_cancelled(
        &self,
        ws: &Workspace,
        mut dispatch: Dispatch,
    ) -> Result<(), MessagingError> {
        let c = &dispatch.counts;
        let settled = c.sent + c.aborted + c.failed + c.control + c.skipped;
        dispatch.counts.cancelled = dispatch.audience_size()?.saturating_sub(settled);
        dispatch.state = State::Cancelled;
        dispatch.finished_at = Some(eddy_model::time::now_ms());
        let request = ObjectWrite {
            kind: kinds::DISPATCH_CANCEL.into(),
            name: dispatch.id.clone(),
            value: None,
        };
        self.save(ws.id, &dispatch, vec![request], Vec::new())
            .await?;
        tracing::info!(
            dispatch_id = dispatch.id,
            workspace = ws.name,
            sent = dispatch.counts.sent,
            not_sent = dispatch.counts.cancelled,
            "dispatch cancelled"
        );
        Ok(())
    }

    /// Gives a dispatch up: what was not settled is never sent, and the reason is kept.
    pub(super) async fn park(
        &self,
        ws: &Workspace,
        mut dispatch: Dispatch,
    ) -> Result<(), MessagingError> {
        let reason = format!(
            "its last {} runs ended without delivering a chunk (an error each time, or the process stopped while sending); it is not tried again",
            dispatch.starts_without_progress
        );
        tracing::error!(
            dispatch_id = dispatch.id,
            workspace = ws.name,
            reason,
            "dispatch parked as failed"
        );
        dispatch.state = State::Failed;
        dispatch.failure = Some(reason);
        dispatch.finished_at = Some(eddy_model::time::now_ms());
        self.save(ws.id, &dispatch, Vec::new(), Vec::new()).await?;
        self.stats.dispatches_failed.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Saves a dispatch with what it settled, in one commit; a dispatch that is no longer
    /// open leaves the list resumed at start.
    pub(super) async fn save(
        &self,
        ws: u32,
        dispatch: &Dispatch,
        mut objects: Vec<ObjectWrite>,
        events: Vec<OutboxEvent>,
    ) -> Result<(), MessagingError> {
        objects.extend(dispatch.writes()?);
        self.store.record(ws, objects, events).await?;
        Ok(())
    }

    /// One visit of the audience from `dispatch.next`; answers the earliest time a recipient
    /// left for later (local-time sends) is due.
    pub(super) async fn pass(
        self: &Arc<Self>,
        ws: &Workspace,
        dispatch: &mut Dispatch,
    ) -> Result<PassEnd, MessagingError> {
        let bitmap = dispatch.bitmap()?;
        let in_doubt_until = dispatch.claimed;
        let (job, channels) = self.pass_setup(ws, dispatch)?;
        let mut pending_until: Option<i64> = None;
        let mut chunk = dispatch.recipients_from(Some(&bitmap), dispatch.next, self.settings.chunk);
        // A chunk's outcomes commit while the next chunk is delivered, so what is claimed runs
        // two chunks ahead of what is settled.
        let ahead = 2 * self.settings.chunk;
        if let Some(claim) = claim_through(dispatch, &bitmap, dispatch.next, ahead)
            && dispatch.claimed < claim
        {
            dispatch.claimed = claim;
            self.save(ws.id, dispatch, Vec::new(), Vec::new()).await?;
        }
        let mut committing: Option<tokio::task::JoinHandle<Result<(), MessagingError>>> = None;
        // The chunk being delivered, and where it ends: the next chunk starts delivering beside
        // its last requests instead of after them.
        let mut delivering: Option<(DeliveryTask, u64)> = None;
        let mut end = PassEnd::Done;
        // The next chunk is prepared (read, rendered) while the current one is delivered.
        let mut preparing = Some(self.spawn_prepare(&job, std::mem::take(&mut chunk)));
        while let Some(current) = preparing.take() {
            let (chunk_end, prepared) = current
                .await
                .map_err(|e| MessagingError::internal(format!("prepare: {e}")))??;
            if let Some(upcoming_from) = chunk_end {
                let next_chunk =
                    dispatch.recipients_from(Some(&bitmap), upcoming_from, self.settings.chunk);
                if !next_chunk.is_empty() {
                    preparing = Some(self.spawn_prepare(&job, next_chunk));
                }
            }
            let Some(chunk_end) = chunk_end else {
                break;
            };
            let cancelled = self.cancel_requested(ws.id, &dispatch.id)?;
            if self.stopping() || cancelled {
                // Stopping: what was claimed and not delivered is sent after the restart.
                // Cancelled: it is never sent. Either way the chunk being prepared is let
                // finish so that nothing holds the store afterwards; the chunk being delivered
                // finishes and is committed below.
                if let Some(next) = preparing.take() {
                    let _ = next.await;
                }
                end = if cancelled {
                    PassEnd::Cancelled
                } else {
                    PassEnd::Stopped
                };
                break;
            }
            let mut works = Vec::with_capacity(prepared.len());
            for p in prepared {
                match p {
                    Prepared::Settled | Prepared::Gone => {}
                    Prepared::Pending(due) => {
                        pending_until = Some(pending_until.map_or(due, |d: i64| d.min(due)));
                    }
                    Prepared::Ready(work) => works.push(work),
                }
            }
            // This chunk is sent only under a durable claim: the commit before the previous
            // chunk's claimed through it.
            if let Some(previous) = committing.take() {
                previous
                    .await
                    .map_err(|e| MessagingError::internal(format!("commit: {e}")))??;
            }
            let started = self.spawn_deliver(works, &channels, in_doubt_until);
            if let Some((previous, previous_end)) = delivering.replace((started, chunk_end)) {
                committing = Some(
                    self.settle(ws, dispatch, &bitmap, previous, previous_end)
                        .await?,
                );
            }
        }
        if let Some((last, last_end)) = delivering.take() {
            if let Some(previous) = committing.take() {
                previous
                    .await
                    .map_err(|e| MessagingError::internal(format!("commit: {e}")))??;
            }
            committing = Some(self.settle(ws, dispatch, &bitmap, last, last_end).await?);
        }
        if let Some(last) = committing.take() {
            last.await
                .map_err(|e| MessagingError::internal(format!("commit: {e}")))??;
        }
        if !matches!(end, PassEnd::Done) {
            return Ok(end);
        }
        Ok(match pending_until {
            Some(due) => PassEnd::PendingUntil(due),
            None => PassEnd::Done,
        })
    }

    /// What a pass needs once: the parsed messages and the workspace's rules for preparing
    /// recipients, and the channels (webhook client, SMTP pool, pacer) for delivering them.
    fn pass_setup(
        &self,
        ws: &Workspace,
        dispatch: &Dispatch,
    ) -> Result<(Arc<Prepare>, Channels), MessagingError> {
        let blocks = crate::templates::content_blocks(&self.store, ws.id)?;
        let email_settings = crate::records::email_settings(&self.store, ws.id)?;
        let custom_footer = email_settings
            .as_ref()
            .and_then(|settings| settings.custom_footer.as_deref());
        let compiled = Arc::new(Compiled::new(
            &dispatch.messages,
            blocks,
            self.settings.liquid,
            custom_footer,
        )?);
        let rules = Arc::new(crate::templates::rules(&self.store, ws.id)?);
        let pool = match &dispatch.messages.email {
            Some(_) => self.pool(ws.id)?,
            None => None,
        };
        let channels = Channels {
            http: self.webhook_client(&rules.allowed_hosts)?,
            pool,
            pacer: dispatch.messages_per_minute.map(Pacer::new).map(Arc::new),
        };
        let job = Arc::new(Prepare {
            ws: ws.clone(),
            dispatch: dispatch.clone(),
            compiled,
            rules,
            base: tracking_base(&self.store, ws.id, &self.settings.public_url)?,
            has_relay: channels.pool.is_some(),
            // Only recipients claimed before this run (or any, for local-time sends visited
            // again) can have an outcome already.
            settled_below: if dispatch.in_local_time {
                u64::MAX
            } else {
                dispatch.claimed
            },
            shared: shared_variables(dispatch),
            user_fields: eddy_liquid::USER_FIELDS
                .iter()
                .map(|field| field.to_string())
                .collect(),
        });
        Ok((job, channels))
    }

    /// Delivers a chunk's prepared recipients, `concurrency` at a time: as many tasks, each
    /// taking the next recipient when it is done with one, so that the runtime's threads share
    /// the requests (one task polling every request would keep them to one thread at a time).
    // The work arrives boxed from preparing and stays boxed, so each recipient's future (one
    // allocation per recipient) holds a pointer rather than 700 bytes.
    #[allow(clippy::vec_box)]
    fn spawn_deliver(
        self: &Arc<Self>,
        works: Vec<Box<Work>>,
        channels: &Channels,
        in_doubt_until: u64,
    ) -> DeliveryTask {
        let recipients = works.len();
        let workers = self.settings.concurrency.clamp(1, recipients.max(1));
        let queue = Arc::new(std::sync::Mutex::new(works.into_iter()));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..workers {
            let (engine, via, queue) = (self.clone(), channels.clone(), queue.clone());
            tasks.spawn(async move {
                let mut finished = Vec::new();
                loop {
                    let next = queue.lock().unwrap_or_else(|p| p.into_inner()).next();
                    let Some(work) = next else {
                        return finished;
                    };
                    let in_doubt = u64::from(work.id) < in_doubt_until;
                    finished.push(engine.clone().deliver(work, via.clone(), in_doubt).await);
                }
            });
        }
        DeliveryTask(tokio::spawn(async move {
            let mut all = Vec::with_capacity(recipients);
            while let Some(done) = tasks.join_next().await {
                let finished =
                    done.map_err(|e| MessagingError::internal(format!("deliver: {e}")))?;
                all.extend(finished);
            }
            Ok(all)
        }))
    }

    /// Once a chunk is delivered: its outcomes and the dispatch's progress, committed in a task
    /// of its own (the caller awaits the one before first), with the claim moved two chunks
    /// past it.
    async fn settle(
        self: &Arc<Self>,
        ws: &Workspace,
        dispatch: &mut Dispatch,
        bitmap: &roaring::RoaringBitmap,
        delivered: DeliveryTask,
        chunk_end: u64,
    ) -> Result<tokio::task::JoinHandle<Result<(), MessagingError>>, MessagingError> {
        let finished = delivered.finish().await?;
        let (objects, events) = outcome_writes(dispatch, finished);
        dispatch.next = chunk_end;
        dispatch.starts_without_progress = 0;
        if let Some(claim) = claim_through(dispatch, bitmap, chunk_end, 2 * self.settings.chunk) {
            dispatch.claimed = dispatch.claimed.max(claim);
        }
        let (engine, ws_id, snapshot) = (self.clone(), ws.id, dispatch.clone());
        Ok(tokio::spawn(async move {
            engine.save(ws_id, &snapshot, objects, events).await
        }))
    }

    /// Prepares a chunk on a blocking thread; answers where it ends (none when empty).
    pub(super) fn spawn_prepare(
        self: &Arc<Self>,
        job: &Arc<Prepare>,
        recipients: Vec<Recipient>,
    ) -> tokio::task::JoinHandle<Result<PreparedChunk, MessagingError>> {
        let engine = self.clone();
        let job = job.clone();
        tokio::task::spawn_blocking(move || {
            let end = recipients.last().map(|r| u64::from(r.id) + 1);
            let prepared = engine.prepare_chunk(&job, recipients)?;
            Ok((end, prepared))
        })
    }

    /// The SMTP pool of a workspace's relay (made again when the settings change).
    pub(super) fn pool(&self, ws: u32) -> Result<Option<Arc<Pool>>, MessagingError> {
        let Some(relay) = relay_of(&self.store, ws)? else {
            return Ok(None);
        };
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((known, pool)) = pools.get(&ws)
            && *known == relay
        {
            return Ok(Some(pool.clone()));
        }
        let helo = self
            .settings
            .public_url
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split(['/', ':']).next())
            .unwrap_or("localhost")
            .to_string();
        let pool = Arc::new(Pool::new(
            relay.clone(),
            helo,
            self.settings.smtp_connections,
        ));
        pools.insert(ws, (relay, pool.clone()));
        Ok(Some(pool))
    }
}

/// What a delivered chunk writes: each recipient's message record (and an entry in the index of
/// messages that may convert, when the send has conversion events and the message reached them),
/// what delivery wrote beside, and the Currents events; the dispatch's counts move with it.
pub(super) fn outcome_writes(
    dispatch: &mut Dispatch,
    finished: Vec<Finished>,
) -> (Vec<ObjectWrite>, Vec<OutboxEvent>) {
    let mut objects = Vec::with_capacity(finished.len());
    let mut events = Vec::with_capacity(finished.iter().map(|f| f.events.len()).sum());
    // The longest conversion window of the send: how long a delivered message stays in the
    // index of those that may convert.
    let window_ms = dispatch
        .conversion_events
        .iter()
        .map(|c| c.window_seconds.max(0) * 1000)
        .max();
    for done in finished {
        add_counts(&mut dispatch.counts, &done.counts);
        let name = message_name(done.id, &dispatch.id);
        if let Some(window_ms) = window_ms
            && reached(&done.history).is_some()
        {
            let at = done
                .history
                .get("at_ms")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            objects.push(ObjectWrite {
                kind: kinds::CONVERTIBLE.into(),
                name: name.clone(),
                value: Some(json!({"until": at.saturating_add(window_ms)})),
            });
        }
        objects.push(ObjectWrite {
            kind: kinds::MESSAGE.into(),
            name,
            value: Some(Value::Object(done.history)),
        });
        objects.extend(done.extra);
        events.extend(done.events);
    }
    (objects, events)
}

/// A chunk being delivered. Dropped before it finishes (a dispatch stopped at shutdown past its
/// deadline), it stops its requests: nothing outlives the engine, and what was not settled is
/// sent again after the restart, as after a crash.
struct DeliveryTask(tokio::task::JoinHandle<Result<Vec<Finished>, MessagingError>>);

impl DeliveryTask {
    /// How each recipient's delivery ended, once all have.
    async fn finish(mut self) -> Result<Vec<Finished>, MessagingError> {
        (&mut self.0)
            .await
            .map_err(|e| MessagingError::internal(format!("deliver: {e}")))?
    }
}

impl Drop for DeliveryTask {
    fn drop(&mut self) {
        // Aborting a finished task does nothing; its set of request tasks is dropped with it.
        self.0.abort();
    }
}

/// How one visit of a dispatch's audience ended.
pub(super) enum PassEnd {
    /// Every recipient is settled.
    Done,
    /// Some recipients are due later (local time): at this UTC ms.
    PendingUntil(i64),
    /// The engine is shutting down; the dispatch resumes at the next start.
    Stopped,
    /// A cancellation was asked for: nothing more is sent.
    Cancelled,
}

pub(super) fn add_counts(total: &mut crate::dispatch::Counts, add: &crate::dispatch::Counts) {
    total.sent += add.sent;
    total.aborted += add.aborted;
    total.failed += add.failed;
    total.control += add.control;
    total.skipped += add.skipped;
    total.resent_after_restart += add.resent_after_restart;
    total.cancelled += add.cancelled;
}

/// The id just past the `n` recipients from `from` (none when there are none).
pub(super) fn claim_through(
    dispatch: &Dispatch,
    bitmap: &roaring::RoaringBitmap,
    from: u64,
    n: usize,
) -> Option<u64> {
    dispatch
        .recipients_from(Some(bitmap), from, n)
        .last()
        .map(|r| u64::from(r.id) + 1)
}
