//! The clock of the stored tables: every timestamp a service writes is RFC 3339 text in UTC with
//! milliseconds, so text order is time order on both backends.

/// The current time as the tables store it.
pub fn now_text() -> String {
    time_text(chrono::Utc::now())
}

/// `at` as the tables store it: what a query compares stored times with.
pub fn time_text(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_are_utc_with_milliseconds_so_text_order_is_time_order() {
        let now = super::now_text();
        assert_eq!(now.len(), "2026-11-29T01:02:03.456Z".len(), "{now}");
        assert!(now.ends_with('Z'));
    }
}
