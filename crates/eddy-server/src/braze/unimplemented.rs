//! Braze REST endpoints eddy does not implement, so that a client calling one learns that
//! instead of suspecting a wrong base URL. From Braze's API reference
//! (<https://www.braze.com/docs/api/endpoints/>); `{}` stands for one path segment.

const ENDPOINTS: &[(&str, &str)] = &[
    // Messaging
    ("POST", "/messages/live_activity/update"),
    ("GET", "/sends/data_series"),
    // User data
    ("POST", "/users/track/sync"),
    ("POST", "/users/export/global_control_group"),
    // Subscriptions
    // Email and SMS
    ("GET", "/sms/invalid_phone_numbers"),
    ("POST", "/sms/invalid_phone_numbers/remove"),
    // Export and analytics
    ("GET", "/campaigns/data_series"),
    ("GET", "/events/list"),
    ("GET", "/events"),
    ("GET", "/events/data_series"),
    ("GET", "/purchases/product_list"),
    ("GET", "/purchases/quantity_series"),
    ("GET", "/purchases/revenue_series"),
    ("GET", "/kpi/new_users/data_series"),
    ("GET", "/kpi/dau/data_series"),
    ("GET", "/kpi/mau/data_series"),
    ("GET", "/kpi/uninstalls/data_series"),
    ("GET", "/sessions/data_series"),
    ("GET", "/segments/data_series"),
    ("GET", "/custom_attributes"),
    ("GET", "/feed/list"),
    ("GET", "/feed/details"),
    ("GET", "/feed/data_series"),
    // Catalogs, content blocks, templates, preference centers
    ("GET", "/preference_center/v1/list"),
    ("GET", "/preference_center/v1/{}"),
    ("POST", "/preference_center/v1"),
    ("PUT", "/preference_center/v1/{}"),
    ("GET", "/preference_center/v1/{}/url/{}"),
];

fn matches(pattern: &str, path: &str) -> bool {
    let mut want = pattern.split('/');
    let mut got = path.trim_end_matches('/').split('/');
    loop {
        match (want.next(), got.next()) {
            (None, None) => return true,
            (Some("{}"), Some(segment)) if !segment.is_empty() => {}
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

/// The documented `METHOD /path` of a Braze endpoint eddy does not implement, if `path` is one
/// (whatever the method: a caller of the right endpoint with the wrong verb learns it too).
pub fn braze_endpoint(method: &str, path: &str) -> Option<String> {
    let candidates: Vec<&(&str, &str)> =
        ENDPOINTS.iter().filter(|(_, p)| matches(p, path)).collect();
    let chosen = candidates
        .iter()
        .find(|(m, _)| *m == method)
        .or_else(|| candidates.first())?;
    Some(format!("{} {}", chosen.0, path.trim_end_matches('/')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_endpoint() {
        assert_eq!(
            braze_endpoint("GET", "/kpi/dau/data_series").as_deref(),
            Some("GET /kpi/dau/data_series")
        );
        assert_eq!(
            braze_endpoint("GET", "/preference_center/v1/pc1").as_deref(),
            Some("GET /preference_center/v1/pc1")
        );
        assert_eq!(
            braze_endpoint("GET", "/preference_center/v1/pc1/url/u1").as_deref(),
            Some("GET /preference_center/v1/pc1/url/u1")
        );
        assert_eq!(braze_endpoint("POST", "/nothing/here"), None);
        assert_eq!(
            braze_endpoint("POST", "/preference_center/v1/a/b/c/d"),
            None
        );
    }
}
