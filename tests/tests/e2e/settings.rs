//! Settings as the suite's processes read them: one list of every process's own sections, which
//! each of them accepts, so that a typo, and only a typo, stops a process; and the reference,
//! docs/configuration.md, generated from the same declarations.

use choreo_api_docs::PROCESSES;
use choreo_host::settings::{SERVICE_SECTIONS, sections};
use std::collections::BTreeSet;

#[test]
fn the_suites_list_of_service_sections_is_exactly_the_services_own() {
    let own: BTreeSet<(&str, Vec<&str>)> = PROCESSES
        .iter()
        .filter_map(|process| process.own)
        .map(|own| (own.name, own.keys.iter().map(|key| key.name).collect()))
        .collect();
    let listed: BTreeSet<(&str, Vec<&str>)> = SERVICE_SECTIONS
        .iter()
        .map(|(name, keys)| (*name, keys.to_vec()))
        .collect();

    assert_eq!(own, listed);
}

#[test]
fn every_key_and_section_name_is_unique_across_the_suite() {
    // A variable names no section: two keys of one name would be one variable.
    let sections: Vec<_> = sections::COMMON
        .iter()
        .chain(PROCESSES.iter().filter_map(|process| process.own))
        .collect();
    let keys: Vec<&str> = sections
        .iter()
        .flat_map(|section| section.keys.iter().map(|key| key.name))
        .collect();
    let names: BTreeSet<&str> = sections.iter().map(|section| section.name).collect();

    assert_eq!(keys.iter().collect::<BTreeSet<_>>().len(), keys.len());
    assert_eq!(names.len(), sections.len());
}

#[test]
fn docs_configuration_is_what_the_declarations_generate() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md");
    let committed = std::fs::read_to_string(&path).expect("docs/configuration.md");

    assert!(
        committed == choreo_api_docs::configuration(),
        "{} is out of date with the settings' declarations: run `make api-docs`",
        path.display()
    );
}
