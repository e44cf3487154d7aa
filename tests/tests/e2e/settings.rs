//! Settings as the suite's processes read them: one list of every process's own keys, which each
//! of them accepts, so that a typo, and only a typo, stops a process.

use choreo_host::settings::{COMMON_DEFAULTS, SERVICE_KEYS};
use std::collections::BTreeSet;

#[test]
fn the_suites_list_of_service_keys_is_exactly_the_services_own_settings() {
    let common: BTreeSet<&str> = COMMON_DEFAULTS.iter().map(|(key, _)| *key).collect();
    let own: BTreeSet<&str> = [
        orders::SETTINGS,
        billing::SETTINGS,
        shipping::SETTINGS,
        observer::SETTINGS,
    ]
    .iter()
    .flat_map(|settings| settings.iter().map(|(key, _)| *key))
    .filter(|key| !common.contains(key))
    .collect();
    let listed: BTreeSet<&str> = SERVICE_KEYS.iter().copied().collect();
    assert_eq!(own, listed);
}
