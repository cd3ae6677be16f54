//! Preparing recipients on a blocking thread: the profile, eligibility, the control group,
//! the variables, and every message rendered (Connected Content included).

use super::*;

impl Engine {
    pub(super) fn prepare_chunk(
        &self,
        job: &Prepare,
        recipients: Vec<Recipient>,
    ) -> Result<Vec<Prepared>, MessagingError> {
        let scope = job.ws.id.to_string();
        let catalogs = crate::catalogs::StoreCatalogs {
            store: &self.store,
            ws: job.ws.id,
        };
        let fetch = self
            .liquid_http
            .scoped(&scope, &job.rules)
            .with_catalogs(&catalogs);
        let mut out = Vec::with_capacity(recipients.len());
        let now = eddy_model::time::now_ms();
        for recipient in recipients {
            let name = message_name(recipient.id, &job.dispatch.id);
            if u64::from(recipient.id) < job.settled_below
                && self
                    .store
                    .object(job.ws.id, kinds::MESSAGE, &name)?
                    .is_some()
            {
                out.push(Prepared::Settled);
                continue;
            }
            let Some(profile) = self.store.profile(job.ws.id, recipient.id)? else {
                out.push(Prepared::Gone);
                continue;
            };
            let time_zone = profile.fields.get("time_zone").and_then(Value::as_str);
            if job.dispatch.in_local_time {
                let due = local_due(job.dispatch.send_at, time_zone);
                if due > now {
                    out.push(Prepared::Pending(due));
                    continue;
                }
            }
            // A bug that panics while preparing one recipient ends this run with an error
            // (tried again, then parked), never the process nor a thread the runtime needs.
            let prepared = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.prepare_one(job, &recipient, &profile, &fetch, now)
            }));
            let work = match prepared {
                Ok(work) => work?,
                Err(panic) => {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    return Err(MessagingError::internal(format!(
                        "preparing recipient {} panicked: {what}",
                        recipient.id
                    )));
                }
            };
            out.push(Prepared::Ready(Box::new(work)));
        }
        Ok(out)
    }

    pub(super) fn prepare_one(
        &self,
        job: &Prepare,
        recipient: &Recipient,
        profile: &Profile,
        fetch: &dyn eddy_liquid::Fetch,
        now: i64,
    ) -> Result<Work, MessagingError> {
        let dispatch = &job.dispatch;
        let mut work = new_work(job, recipient.id, profile, now);
        let control_key = dispatch.campaign_id.as_deref().unwrap_or(&dispatch.id);
        if in_control(
            control_key,
            &profile.braze_id,
            dispatch.control_group_percent,
        ) {
            work.history.insert("status".into(), json!("control"));
            work.events.push(work.context.event(
                "users.campaigns.EnrollInControl".into(),
                now,
                None,
                Vec::new(),
            ));
            work.counts.control = 1;
            return Ok(work);
        }
        let mut variables = self.variables(job, recipient.id, recipient, profile);
        let mut channels = Map::new();
        // The workspace's custom footer is rendered for the recipient first, so that the
        // message inserts it with `{{${email_footer}}}`; a footer that fails aborts the email.
        let footer_abort = match job.compiled.footer(&variables, Some(fetch)) {
            Some(Ok(footer)) => {
                variables.insert("email_footer".into(), LValue::Str(footer));
                None
            }
            Some(Err(abort)) => Some(abort),
            None => None,
        };
        if let Some(message) = &dispatch.messages.webhook {
            prepare_webhook(
                job,
                message,
                &variables,
                fetch,
                now,
                &mut work,
                &mut channels,
            );
        }
        if let (Some(abort), Some(message)) = (&footer_abort, &dispatch.messages.email) {
            let variation = campaign::variation_id(
                dispatch.campaign_id.as_deref(),
                "email",
                message.message_variation_id.as_deref(),
            );
            channels.insert("email".into(), aborted(abort));
            work.events.push(abort_event(
                &work.context,
                "email",
                variation.as_deref(),
                abort,
                now,
                None,
            ));
            work.counts.aborted += 1;
        } else if let Some(message) = &dispatch.messages.email {
            self.prepare_email(
                job,
                profile,
                message,
                &variables,
                fetch,
                now,
                &mut work,
                &mut channels,
            )?;
        }
        work.history
            .insert("channels".into(), Value::Object(channels));
        Ok(work)
    }

    /// The email of one recipient: the message to deliver, or why it is skipped, or the abort
    /// recorded.
    #[allow(clippy::too_many_arguments)]
    fn prepare_email(
        &self,
        job: &Prepare,
        profile: &Profile,
        message: &campaign::EmailMessage,
        variables: &Object,
        fetch: &dyn eddy_liquid::Fetch,
        now: i64,
        work: &mut Work,
        channels: &mut Map<String, Value>,
    ) -> Result<(), MessagingError> {
        let variation = campaign::variation_id(
            job.dispatch.campaign_id.as_deref(),
            "email",
            message.message_variation_id.as_deref(),
        );
        let to = match self.email_eligibility(job, profile)? {
            Ok(to) => to,
            Err(reason) => {
                channels.insert(
                    "email".into(),
                    json!({"status": "skipped", "reason": reason}),
                );
                work.counts.skipped += 1;
                return Ok(());
            }
        };
        match self.render_email(job, work.id, message, variables, fetch, &to, now) {
            Ok((email, subject)) => {
                channels.insert("email".into(), json!({"to": to, "subject": subject}));
                work.email = Some(EmailWork {
                    variation,
                    extras: message.extras.clone(),
                    ..email
                });
            }
            Err(abort) => {
                channels.insert("email".into(), aborted(&abort));
                work.events.push(abort_event(
                    &work.context,
                    "email",
                    variation.as_deref(),
                    &abort,
                    now,
                    Some(&to),
                ));
                work.counts.aborted += 1;
            }
        }
        Ok(())
    }

    pub(super) fn variables(
        &self,
        job: &Prepare,
        profile_id: u32,
        recipient: &Recipient,
        profile: &Profile,
    ) -> Object {
        let mut variables = eddy_liquid::user_variables(&profile.export(Some(&job.user_fields)));
        // Braze's subscription links are variables of their own, so that every form reads
        // them: `{{${set_user_to_unsubscribed_url}}}`, with filters, in any field.
        if job.compiled.uses_subscription_links() {
            for (name, state) in SUBSCRIPTION_LINKS {
                let url = self.link(job, profile_id, 's', None, Some(state));
                variables.insert(name.to_string(), LValue::Str(url));
            }
        }
        // What every recipient shares is built once per pass; values share their contents.
        for (name, value) in &job.shared {
            variables.insert(name.clone(), value.clone());
        }
        if let Some(own) = &recipient.trigger_properties {
            let mut properties = job.dispatch.trigger_properties.clone();
            for (k, v) in own {
                properties.insert(k.clone(), v.clone());
            }
            let properties = LValue::from_json(&Value::Object(properties));
            // A canvas user's entry properties are read under both of Braze's names.
            let names: &[&str] = if job.dispatch.canvas.is_some() {
                &["canvas_entry_properties", "context"]
            } else {
                &["api_trigger_properties"]
            };
            for name in names {
                variables.insert(name.to_string(), properties.clone());
            }
        }
        variables
    }

    /// A signed link of eddy's for one recipient of this send: an open pixel (`o`), a click
    /// (`c`, to `url`), one-click unsubscribe (`l`) or a subscription change (`s`, to `state`).
    pub(super) fn link(
        &self,
        job: &Prepare,
        profile_id: u32,
        kind: char,
        url: Option<String>,
        state: Option<&str>,
    ) -> String {
        let token = self.signer.token(&Link {
            w: job.ws.id,
            p: profile_id,
            d: job.dispatch.id.clone(),
            k: kind,
            u: url,
            s: state.map(str::to_string),
        });
        let path = match kind {
            'o' => "o",
            'c' => "c",
            'l' => "l",
            _ => "s",
        };
        format!("{}/eddy/t/{path}/{token}", job.base)
    }

    /// The address to send to, or why not.
    pub(super) fn email_eligibility(
        &self,
        job: &Prepare,
        profile: &Profile,
    ) -> Result<Result<String, String>, MessagingError> {
        let Some(to) = profile.email() else {
            return Ok(Err("no email address".into()));
        };
        if !job.has_relay {
            return Ok(Err("the workspace has no SMTP relay".into()));
        }
        let address = self
            .store
            .object(job.ws.id, kinds::EMAIL_ADDRESS, to)?
            .filter(Value::is_object);
        // A state set for the address (`/email/status`) before this user had it applies until
        // the user's own state is set.
        let address_state = address
            .as_ref()
            .and_then(|r| r["subscription_state"].as_str());
        let state = match profile
            .fields
            .get("email_subscribe")
            .and_then(Value::as_str)
        {
            Some(own) => own,
            None => address_state.unwrap_or("subscribed"),
        };
        let wanted = job.dispatch.recipient_subscription_state.as_str();
        let eligible = match wanted {
            "all" => true,
            "opted_in" => state == "opted_in",
            _ => state == "opted_in" || state == "subscribed",
        };
        if !eligible {
            return Ok(Err(format!("email state is {state}")));
        }
        if let Some(group) = &job.dispatch.subscription_group_id
            && profile.subscription_groups.get(group).map(String::as_str) != Some("subscribed")
        {
            return Ok(Err(format!("not subscribed to group {group}")));
        }
        if let Some(record) = &address {
            for (field, reason) in [
                ("hard_bounced_at", "the address hard bounced"),
                ("spam_at", "the address marked email as spam"),
                ("blocklisted_at", "the address is blocklisted"),
            ] {
                if !record[field].is_null() {
                    return Ok(Err(reason.into()));
                }
            }
        }
        Ok(Ok(to.to_string()))
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn render_email(
        &self,
        job: &Prepare,
        profile_id: u32,
        message: &campaign::EmailMessage,
        variables: &Object,
        fetch: &dyn eddy_liquid::Fetch,
        to: &str,
        now: i64,
    ) -> Result<(EmailWork, String), Abort> {
        let c = &job.compiled;
        let render = |field: &str| c.render(field, variables, Some(fetch));
        // Addresses rendered from Liquid or profile data are parsed before they are written
        // anywhere: a recipient whose address does not parse is aborted with the reason.
        let mailbox = |field: &str, text: &str| {
            Mailbox::parse(text).map_err(|e| Abort::Error(format!("email {field}: {e}")))
        };
        let from = mailbox("from", &render("email.from")?)?;
        let to = mailbox("to", to)?;
        let subject = render("email.subject")?;
        let body = render("email.body")?;
        let reply_to = match &message.reply_to {
            Some(_) => Some(mailbox("reply_to", &render("email.reply_to")?)?),
            None => None,
        };
        let bcc = match &message.bcc {
            Some(text) => Some(mailbox("bcc", text)?.address),
            None => None,
        };
        let preheader = match &message.preheader {
            Some(_) => render("email.preheader")?,
            None => String::new(),
        };
        let mut headers = Vec::new();
        for name in message.headers.keys() {
            headers.push((name.clone(), render(&format!("email.headers.{name}"))?));
        }
        let link = |kind: char, url: Option<String>, state: Option<&str>| {
            self.link(job, profile_id, kind, url, state)
        };
        let mut html = body;
        // The bare `${…}` form, outside Liquid's braces, is Braze's too.
        for (name, state) in SUBSCRIPTION_LINKS {
            let placeholder = format!("${{{name}}}");
            if html.contains(&placeholder) {
                html = html.replace(&placeholder, &link('s', None, Some(state)));
            }
        }
        let own_prefix = format!("{}/eddy/t/", job.base);
        html = crate::tracking::rewrite_marked_links(&html, c.link_marker(), |url| {
            if url.starts_with(&own_prefix) {
                None
            } else {
                Some(link('c', Some(url.to_string()), None))
            }
        });
        html = mime::with_preheader(&html, &preheader);
        let pixel = format!(
            "<img src=\"{}\" width=\"1\" height=\"1\" alt=\"\" style=\"display:none\">",
            link('o', None, None)
        );
        html = mime::append_to_body(&html, &pixel);
        let mut text = match &message.plaintext_body {
            Some(_) => render("email.plaintext_body")?,
            None => mime::html_to_text(&html),
        };
        for (name, state) in SUBSCRIPTION_LINKS {
            let placeholder = format!("${{{name}}}");
            if text.contains(&placeholder) {
                text = text.replace(&placeholder, &link('s', None, Some(state)));
            }
        }
        let from_address = from.address.clone();
        let domain = from.domain().to_string();
        let to_address = to.address.clone();
        let mail = Mail {
            from,
            to,
            reply_to,
            subject: subject.clone(),
            html,
            text,
            headers,
            message_id: format!("{}.{profile_id}@{domain}", job.dispatch.id),
            list_unsubscribe: Some(link('l', None, Some("unsubscribed"))),
            date_ms: now,
        };
        let boundary = format!("eddy-{}-{profile_id}", job.dispatch.id);
        let data = mime::format(&mail, &boundary);
        Ok((
            EmailWork {
                to: to_address,
                from_address,
                data,
                bcc,
                variation: None,
                extras: None,
            },
            subject,
        ))
    }
}

/// Variables every recipient of a dispatch shares: its trigger properties, the campaign, and
/// empty Canvas and event properties.
pub(super) fn shared_variables(dispatch: &Dispatch) -> Vec<(String, LValue)> {
    let mut campaign = Map::new();
    campaign.insert("dispatch_id".into(), json!(dispatch.id));
    if let Some(id) = &dispatch.campaign_id {
        campaign.insert("api_id".into(), json!(id));
    }
    if let Some(name) = &dispatch.campaign_name {
        campaign.insert("name".into(), json!(name));
    }
    if let Some(send_id) = &dispatch.send_id {
        campaign.insert("send_id".into(), json!(send_id));
    }
    let properties = Value::Object(dispatch.trigger_properties.clone());
    vec![
        (
            "api_trigger_properties".into(),
            LValue::from_json(&properties),
        ),
        (
            "campaign".into(),
            LValue::from_json(&Value::Object(campaign)),
        ),
        (
            "canvas_entry_properties".into(),
            LValue::from_json(&json!({})),
        ),
        ("context".into(), LValue::from_json(&json!({}))),
        ("canvas".into(), LValue::from_json(&canvas_object(dispatch))),
        ("event_properties".into(), LValue::from_json(&json!({}))),
    ]
}

/// `canvas.${name}`, `canvas.${id}` (and Braze's `api_id`), `canvas.${step_name}` of a canvas
/// send; empty for other sends.
fn canvas_object(dispatch: &Dispatch) -> Value {
    match &dispatch.canvas {
        Some(c) => json!({"id": c.canvas_id, "api_id": c.canvas_id, "name": c.canvas_name,
                          "step_id": c.step_id, "step_name": c.step_name}),
        None => json!({}),
    }
}

/// Whether a recipient falls in the control group: a stable hash of the campaign (or dispatch)
/// and the user, so one user is in or out for every send of a campaign.
pub fn in_control(key: &str, braze_id: &str, percent: u8) -> bool {
    if percent == 0 {
        return false;
    }
    let hash = xxhash_rust::xxh3::xxh3_64(format!("{key}\u{0}{braze_id}").as_bytes());
    (hash % 100) < u64::from(percent)
}

/// The UTC ms at which a wall-clock time (given as if it were UTC) happens in a time zone.
pub fn local_due(naive_ms: i64, time_zone: Option<&str>) -> i64 {
    let Some(tz) = time_zone.and_then(|name| jiff::tz::TimeZone::get(name).ok()) else {
        return naive_ms;
    };
    let Ok(ts) = jiff::Timestamp::from_millisecond(naive_ms) else {
        return naive_ms;
    };
    let civil = ts.to_zoned(jiff::tz::TimeZone::UTC).datetime();
    match civil.to_zoned(tz) {
        Ok(zoned) => zoned.timestamp().as_millisecond(),
        Err(_) => naive_ms,
    }
}

/// A recipient's message record and Currents context before any channel: the send it belongs
/// to, when, and the conversion events it may convert on.
fn new_work(job: &Prepare, id: u32, profile: &Profile, now: i64) -> Work {
    let dispatch = &job.dispatch;
    let context = Context {
        send_id: dispatch.send_id.clone(),
        campaign_id: dispatch.campaign_id.clone(),
        campaign_name: dispatch.campaign_name.clone(),
        canvas: dispatch.canvas.clone(),
        ..Context::of(profile, &job.ws.app_group_id, dispatch.id.clone())
    };
    let mut history = Map::new();
    history.insert("dispatch_id".into(), json!(dispatch.id));
    history.insert("at".into(), json!(eddy_model::time::format_iso(now)));
    if let Some(c) = &dispatch.campaign_id {
        history.insert("campaign_id".into(), json!(c));
    }
    if let Some(c) = &dispatch.campaign_name {
        history.insert("campaign_name".into(), json!(c));
    }
    if let Some(s) = &dispatch.send_id {
        history.insert("send_id".into(), json!(s));
    }
    history.insert("at_ms".into(), json!(now));
    if !dispatch.conversion_events.is_empty() {
        history.insert(
            "conversion_events".into(),
            json!(dispatch.conversion_events),
        );
    }
    Work {
        ws: job.ws.id,
        id,
        context,
        history,
        events: Vec::new(),
        counts: Default::default(),
        webhook: None,
        email: None,
    }
}

/// The webhook of one recipient: the request to deliver, or the abort recorded.
fn prepare_webhook(
    job: &Prepare,
    message: &campaign::WebhookMessage,
    variables: &Object,
    fetch: &dyn eddy_liquid::Fetch,
    now: i64,
    work: &mut Work,
    channels: &mut Map<String, Value>,
) {
    let variation = campaign::variation_id(
        job.dispatch.campaign_id.as_deref(),
        "webhook",
        message.message_variation_id.as_deref(),
    );
    match render_webhook(
        &job.compiled,
        message,
        variables,
        fetch,
        &job.rules.allowed_hosts,
    ) {
        Ok(request) => {
            work.webhook = Some(WebhookWork {
                request,
                variation,
                extras: message.extras.clone(),
            })
        }
        Err(abort) => {
            channels.insert("webhook".into(), aborted(&abort));
            work.events.push(abort_event(
                &work.context,
                "webhook",
                variation.as_deref(),
                &abort,
                now,
                None,
            ));
            work.counts.aborted += 1;
        }
    }
}

pub(super) fn render_webhook(
    compiled: &Compiled,
    message: &campaign::WebhookMessage,
    variables: &Object,
    fetch: &dyn eddy_liquid::Fetch,
    allowed: &eddy_net::AllowedHosts,
) -> Result<webhook::Request, Abort> {
    let url = compiled.render("webhook.url", variables, Some(fetch))?;
    let url = url.trim().to_string();
    let parsed = reqwest::Url::parse(&url)
        .map_err(|e| Abort::Error(format!("'{url}' is not an http(s) URL: {e}")))?;
    // A name is checked again once resolved, by the client's resolver.
    eddy_net::check_url_for(Some(allowed), &parsed, false)
        .map_err(|refused| Abort::Error(format!("webhook url: {refused}")))?;
    let uri = hyper::Uri::try_from(parsed.as_str())
        .map_err(|e| Abort::Error(format!("'{url}' is not an http(s) URL: {e}")))?;
    let body = match &message.body {
        Some(_) => Some(compiled.render("webhook.body", variables, Some(fetch))?),
        None => None,
    };
    let mut headers = hyper::HeaderMap::with_capacity(message.request_headers.len());
    for name in message.request_headers.keys() {
        let value = compiled.render(
            &format!("webhook.request_headers.{name}"),
            variables,
            Some(fetch),
        )?;
        // The host is the URL's: a header naming another would reach a different site on the
        // address that was checked.
        if name.eq_ignore_ascii_case("host") {
            continue;
        }
        let header = hyper::header::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            Abort::Error(format!(
                "webhook header name '{name}' is not a valid header name"
            ))
        })?;
        // A value rendered with a line break would otherwise start a header of its own.
        let value = hyper::header::HeaderValue::from_str(&value).map_err(|_| {
            Abort::Error(format!(
                "webhook header '{name}' rendered to a value a header cannot hold (a line break or a control character)"
            ))
        })?;
        headers.append(header, value);
    }
    let method = hyper::Method::from_bytes(message.request_method.to_ascii_uppercase().as_bytes())
        .map_err(|_| {
            Abort::Error(format!(
                "webhook method '{}' is not an HTTP method",
                message.request_method
            ))
        })?;
    Ok(webhook::Request {
        method,
        url,
        parsed,
        uri,
        headers,
        body: body.map(bytes::Bytes::from),
    })
}

pub(super) fn aborted(abort: &Abort) -> Value {
    match abort {
        Abort::Aborted(reason) => json!({"status": "aborted", "reason": reason}),
        Abort::Error(message) => json!({"status": "aborted", "reason": message}),
    }
}

pub(super) fn abort_event(
    context: &Context,
    channel: &str,
    variation: Option<&str>,
    abort: &Abort,
    now: i64,
    address: Option<&str>,
) -> OutboxEvent {
    let (abort_type, log) = match abort {
        Abort::Aborted(reason) => ("liquid_abort_message", reason.as_str()),
        Abort::Error(message) => ("liquid_error", message.as_str()),
    };
    context.event(
        message_type(channel, "Abort"),
        now,
        variation,
        vec![
            ("abort_type", json!(abort_type)),
            ("abort_log", json!(log)),
            ("email_address", json!(address)),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fields_templates_read_give_the_same_variables_as_the_whole_export() {
        use eddy_model::attrs::AttrValue;
        let mut profile = Profile::new("b-1".into(), 1_700_000_000_000);
        profile.external_id = Some("u1".into());
        for (field, value) in [
            ("first_name", json!("Ada")),
            ("last_name", json!("Lovelace")),
            ("email", json!("ada@example.com")),
            ("phone", json!("+15555550100")),
            ("home_city", json!("London")),
            ("country", json!("GB")),
            ("dob", json!("1815-12-10")),
            ("gender", json!("F")),
            ("language", json!("en")),
            ("time_zone", json!("Europe/London")),
            ("email_subscribe", json!("opted_in")),
            ("push_subscribe", json!("subscribed")),
        ] {
            profile.fields.insert(field.into(), value);
        }
        profile
            .custom
            .insert("tier".into(), AttrValue::String("gold".into()));
        profile.devices.push("device-1".into());
        profile
            .subscription_groups
            .insert("g1".into(), "Subscribed".into());
        profile.record_event("viewed", 1_700_000_000_000);
        profile.record_purchase("sku", 9.5, 2, 1_700_000_000_000);
        let fields: Vec<String> = eddy_liquid::USER_FIELDS
            .iter()
            .map(|f| f.to_string())
            .collect();
        assert_eq!(
            eddy_liquid::user_variables(&profile.export(Some(&fields))),
            eddy_liquid::user_variables(&profile.export(None))
        );
    }

    #[test]
    fn control_groups_are_stable_and_near_their_share() {
        let n = (0..10_000)
            .filter(|i| in_control("camp", &format!("user{i}"), 20))
            .count();
        assert!((1_700..2_300).contains(&n), "{n}");
        // A user's group is fixed by the campaign and the user alone, across restarts and
        // releases: these are the groups users got when the rule was made.
        let groups: Vec<bool> = (0..12)
            .map(|i| in_control("camp", &format!("user{i}"), 20))
            .collect();
        let (f, t) = (false, true);
        assert_eq!(groups, [f, f, f, f, t, f, t, f, f, f, f, f]);
        assert!(!in_control("camp", "u", 0));
        assert!(in_control("camp", "u", 100));
    }

    #[test]
    fn local_time_is_the_wall_clock_of_the_zone() {
        // 2026-12-01 09:00 as a wall-clock time.
        let naive = jiff::civil::date(2026, 12, 1)
            .at(9, 0, 0, 0)
            .to_zoned(jiff::tz::TimeZone::UTC)
            .unwrap()
            .timestamp()
            .as_millisecond();
        assert_eq!(local_due(naive, None), naive);
        assert_eq!(local_due(naive, Some("Europe/Paris")), naive - 3_600_000);
        assert_eq!(
            local_due(naive, Some("America/New_York")),
            naive + 5 * 3_600_000
        );
        assert_eq!(local_due(naive, Some("Not/AZone")), naive);
    }
}
