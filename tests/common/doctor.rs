//! `tt doctor --json` for the tests that check its lines (tests/anywhere.rs, tests/doctor.rs).

use std::time::Duration;

use serde_json::Value;

use crate::common::{run_timeout, TestTown};

/// `tt doctor --json` in `town` (with `envs`): (exit code, the checks).
pub fn doctor(town: &TestTown, envs: &[(&str, &str)]) -> (i32, Vec<Value>) {
    let mut c = town.command(&["doctor", "--json"]);
    for (k, v) in envs {
        c.env(k, v);
    }
    let out = run_timeout(c, Duration::from_secs(120));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor --json printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let code = out.status.code().unwrap();
    assert_eq!(v["ok"].as_bool(), Some(code == 0), "{v}");
    (code, v["checks"].as_array().unwrap().clone())
}

/// The check whose name starts with `name`.
pub fn check<'a>(checks: &'a [Value], name: &str) -> &'a Value {
    checks
        .iter()
        .find(|c| c["check"].as_str().unwrap().starts_with(name))
        .unwrap_or_else(|| panic!("no check {name:?} in {checks:?}"))
}

pub fn assert_fails(checks: &[Value], name: &str, detail: &str, fix: &str) {
    let c = check(checks, name);
    assert_eq!(c["ok"], false, "{c}");
    assert!(c["detail"].as_str().unwrap().contains(detail), "{c}");
    assert!(c["fix"].as_str().unwrap().contains(fix), "{c}");
}
