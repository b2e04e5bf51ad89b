//! Unit tests of `tinytown.toml` parsing: defaults, errors naming line and field, grants kept.

use super::*;

#[test]
fn minimal_file_parses_with_defaults() {
    let c = Config::parse("[town]\nname = \"demo\"\n").unwrap();
    assert_eq!(c.town.name, "demo");
    assert_eq!(c.limits, Limits::default());
    assert!(c.agents.is_empty());
}

#[test]
fn errors_name_line_and_field() {
    let e = Config::parse("[town]\nname = \"demo\"\n[limits]\ncall_timeout = 5\n").unwrap_err();
    assert!(e.contains("line 4") && e.contains("call_timeout"), "{e}");
    let e = Config::parse("[town]\nname = 5\n").unwrap_err();
    assert!(e.contains("line 2"), "{e}");
    let e = Config::parse("[town]\nname = \"../x\"\n").unwrap_err();
    assert!(e.contains("[town] name"), "{e}");
    let e = Config::parse("[town]\nname=\"a\"\n[redis]\nappendfsync=\"sometimes\"\n").unwrap_err();
    assert!(e.contains("appendfsync"), "{e}");
}

#[test]
fn a_misspelt_agent_field_names_its_line_and_grants_are_kept() {
    let e = Config::parse("[town]\nname = \"t\"\n\n[agents.w]\nrole = \"w\"\nplugn = \"x\"\n")
        .unwrap_err();
    assert!(e.contains("line 6") && e.contains("plugn"), "{e}");
    let c = Config::parse("[town]\nname = \"t\"\n[agents.w.exec]\nallow = [\"sh\"]\n").unwrap();
    assert!(c.agents["w"].grants["exec"].is_table());
}

#[test]
fn a_bad_agent_name_cannot_break_the_error_line() {
    let e = Config::parse("[town]\nname = \"t\"\n[agents.\"a\\nb\\u001b\"]\nrole = \"w\"\n")
        .unwrap_err();
    assert!(!e.contains('\n') && !e.contains('\u{1b}'), "{e:?}");
}

#[test]
fn agent_limits_override_field_by_field() {
    let c = Config::parse(
        "[town]\nname=\"a\"\n[limits]\nmemory_mb=32\n[agents.w.limits]\ncall_timeout_ms=50\n",
    )
    .unwrap();
    let l = c.limits_for("w");
    assert_eq!((l.call_timeout_ms, l.memory_mb), (50, 32));
    let e = Config::parse("[town]\nname=\"a\"\n[agents.w.limits]\nmemroy_mb=1\n").unwrap_err();
    assert!(e.contains("memroy_mb") && e.contains("line 4"), "{e}");
    let e = Config::parse("[town]\nname=\"a\"\n[agents.w]\nlimits = { memory_mb = \"lots\" }\n")
        .unwrap_err();
    assert!(e.contains("line 4") && e.contains("memory_mb"), "{e}");
}
