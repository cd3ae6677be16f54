//! Data-point metering, by Braze's rules (<https://www.braze.com/docs/user_guide/data/data_points/>).
//!
//! Braze bills a write whether or not it changes anything. eddy meters the same data points
//! but files a write that changes nothing under non-billable, so the usage report shows what a
//! sender could have saved.

use serde::{Deserialize, Serialize};

/// Data points counted for one workspace and day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Points {
    /// Writes Braze bills that changed the profile.
    pub billable: u64,
    /// Writes Braze does not bill, and billable writes that changed nothing.
    pub non_billable: u64,
}

impl Points {
    /// Counts `n` data points of a field: billable only if the field is billable and changed.
    pub fn record(&mut self, n: u64, billable_field: bool, changed: bool) {
        if billable_field && changed {
            self.billable += n;
        } else {
            self.non_billable += n;
        }
    }

    /// Adds another tally to this one.
    pub fn add(&mut self, other: Points) {
        self.billable += other.billable;
        self.non_billable += other.non_billable;
    }

    /// True when nothing was counted.
    pub fn is_zero(&self) -> bool {
        self.billable == 0 && self.non_billable == 0
    }
}

/// What happened in a workspace on one day besides data points: the overview's figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activity {
    /// Custom events recorded.
    #[serde(default)]
    pub events: u64,
    /// Purchases recorded (a purchase of quantity 3 counts 3, as Currents does).
    #[serde(default)]
    pub purchases: u64,
    /// Profiles created.
    #[serde(default)]
    pub new_profiles: u64,
}

impl Activity {
    /// Adds another tally to this one.
    pub fn add(&mut self, other: Activity) {
        self.events += other.events;
        self.purchases += other.purchases;
        self.new_profiles += other.new_profiles;
    }
}

/// One workspace's day as stored: its data points and its activity, in one record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Day {
    /// Data points.
    #[serde(flatten)]
    pub points: Points,
    /// Events, purchases and new profiles.
    #[serde(flatten)]
    pub activity: Activity,
}

impl Day {
    /// Adds another day's tally to this one.
    pub fn add(&mut self, other: Day) {
        self.points.add(other.points);
        self.activity.add(other.activity);
    }
}

/// Whether Braze bills writes to a standard field.
pub fn standard_field_billable(field: &str) -> bool {
    !matches!(
        field,
        "email_subscribe"
            | "push_subscribe"
            | "subscription_groups"
            | "facebook"
            | "twitter"
            | "email_open_tracking_disabled"
            | "email_click_tracking_disabled"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_billable_writes_are_non_billable() {
        let mut p = Points::default();
        p.record(1, true, true);
        p.record(2, true, false);
        p.record(1, false, true);
        assert_eq!(
            p,
            Points {
                billable: 1,
                non_billable: 3
            }
        );
        assert!(standard_field_billable("first_name"));
    }

    #[test]
    fn days_stored_before_activity_was_counted_still_read() {
        let old: Day = serde_json::from_str(r#"{"billable":2,"non_billable":1}"#).unwrap();
        assert_eq!(old.points.billable, 2);
        assert_eq!(old.activity, Activity::default());
        let mut day = old;
        day.add(Day {
            points: Points::default(),
            activity: Activity {
                events: 3,
                purchases: 1,
                new_profiles: 2,
            },
        });
        let text = serde_json::to_string(&day).unwrap();
        let back: Day = serde_json::from_str(&text).unwrap();
        assert_eq!(back, day);
        // Points alone still read a new record.
        let points: Points = serde_json::from_str(&text).unwrap();
        assert_eq!(points.billable, 2);
        assert!(!standard_field_billable("email_subscribe"));
    }
}
