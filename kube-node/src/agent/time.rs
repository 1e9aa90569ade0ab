//! Kubernetes timestamps from system time.

use std::time::{SystemTime, UNIX_EPOCH};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// `t` as a Kubernetes `Time`, truncated to whole seconds: that is all the wire format keeps,
/// so a status computed now compares equal to the same status read back from the store.
pub(crate) fn to_time(t: SystemTime) -> Time {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    Time(Timestamp::from_second(secs).unwrap_or_default())
}

/// The current time as a Kubernetes `Time`.
pub(crate) fn now() -> Time {
    to_time(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn truncates_to_seconds_and_round_trips() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_750);
        let time = to_time(t);
        let json = serde_json::to_value(&time).unwrap();
        assert_eq!(json, serde_json::json!("2023-11-14T22:13:20Z"));
        let back: Time = serde_json::from_value(json).unwrap();
        assert_eq!(back, time);
    }
}
