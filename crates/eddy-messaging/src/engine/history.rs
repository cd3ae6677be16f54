//! History that does not grow without end: sends that ended longer ago than `history` are
//! removed (their message records through their audience, then the dispatch), their counts
//! kept in the workspace's totals.

use super::run::add_counts;
use super::*;

impl Engine {
    /// Every hour (on the leader), removes the records of sends that ended longer ago than
    /// `history`: each recipient's message record (found through the send's audience) and the
    /// dispatch, whose counts are added to the workspace's totals first.
    pub(super) async fn expire_history(self: Arc<Self>) {
        const EVERY: Duration = Duration::from_secs(3600);
        let mut last = tokio::time::Instant::now() - EVERY + Duration::from_secs(60);
        while !self.stopping() {
            let _ = tokio::time::timeout(Duration::from_secs(60), self.wake.notified()).await;
            if self.stopping() || last.elapsed() < EVERY || !self.leading.load(Ordering::SeqCst) {
                continue;
            }
            last = tokio::time::Instant::now();
            if let Err(e) = self.expire_once().await {
                tracing::error!(error = %e, "removing expired message history failed; tried again in an hour");
            }
        }
    }

    /// One pass of [`Engine::expire_history`]; answers how many sends were removed.
    pub async fn expire_once(&self) -> Result<usize, MessagingError> {
        let cutoff = eddy_model::time::now_ms() - self.settings.history.as_millis() as i64;
        let mut removed = 0;
        for ws in self.store.workspaces()? {
            for (id, value) in self.store.objects(ws.id, kinds::DISPATCH)? {
                let Ok(dispatch) = serde_json::from_value::<Dispatch>(value) else {
                    tracing::warn!(dispatch_id = id, "a stored dispatch does not read; kept");
                    continue;
                };
                let ended = matches!(
                    dispatch.state,
                    State::Done | State::Cancelled | State::Failed
                );
                if !ended || dispatch.finished_at.is_none_or(|at| at >= cutoff) {
                    continue;
                }
                self.remove_send(&ws, &dispatch).await?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    pub(super) async fn remove_send(
        &self,
        ws: &Workspace,
        dispatch: &Dispatch,
    ) -> Result<(), MessagingError> {
        let bitmap = dispatch.bitmap()?;
        let names: Vec<String> = bitmap
            .iter()
            .map(|p| message_name(p, &dispatch.id))
            .collect();
        for batch in names.chunks(1000) {
            let mut objects = Vec::with_capacity(batch.len() * 2);
            for name in batch {
                for kind in [kinds::MESSAGE, kinds::CONVERTIBLE] {
                    objects.push(ObjectWrite {
                        kind: kind.into(),
                        name: name.clone(),
                        value: None,
                    });
                }
            }
            self.store.record(ws.id, objects, Vec::new()).await?;
        }
        // The dispatch goes last, with its counts kept in the totals, in one commit.
        let mut totals: crate::dispatch::ExpiredTotals =
            match self.store.object(ws.id, kinds::HISTORY_TOTALS, "expired")? {
                Some(value) => serde_json::from_value(value)
                    .map_err(|e| MessagingError::internal(format!("stored history totals: {e}")))?,
                None => Default::default(),
            };
        totals.sends += 1;
        add_counts(&mut totals.counts, &dispatch.counts);
        let totals = serde_json::to_value(&totals)
            .map_err(|e| MessagingError::internal(format!("history totals: {e}")))?;
        let mut objects = vec![ObjectWrite {
            kind: kinds::HISTORY_TOTALS.into(),
            name: "expired".into(),
            value: Some(totals),
        }];
        if let Some(schedule_id) = &dispatch.schedule_id {
            objects.push(ObjectWrite {
                kind: kinds::SCHEDULE.into(),
                name: schedule_id.clone(),
                value: None,
            });
        }
        for kind in [kinds::DISPATCH, kinds::OPEN_DISPATCH] {
            objects.push(ObjectWrite {
                kind: kind.into(),
                name: dispatch.id.clone(),
                value: None,
            });
        }
        self.store.record(ws.id, objects, Vec::new()).await?;
        Ok(())
    }
}
