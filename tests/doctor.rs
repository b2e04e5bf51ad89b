//! `tt doctor`: each check failing and passing, one line per check, the exit status. Real
//! `redis-server`s (the town's own, one with a password) and the real components.

mod common;
#[path = "common/doctor.rs"]
mod doctor_lines;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{expect_code, plugin, refusal, run_timeout, ExternalRedis, TestTown};
use doctor_lines::{assert_fails, check, doctor};

#[test]
fn doctor_passes_on_a_healthy_town_and_prints_one_line_per_check() {
    let town = TestTown::new();
    std::fs::write(town.path().join("coder.sh"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(
        town.path().join("coder.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    town.write_config(&format!(
        "{}\n[agents.w]\nrole = \"worker\"\nplugin = \"{}\"\nconfig = {{ program = \"./coder.sh\", reviewer = \"r\" }}\nexec = {{ allow = [\"./coder.sh\"] }}\n",
        town.read_config().replace("default_cli = \"claude\"", "default_cli = \"true\"\ndefault_check = \"true\""),
        plugin("worker")
    ));
    town.ok(&["spawn", "w"]);
    town.ok(&["spawn", "r", "--role", "reviewer"]);
    town.ok(&[
        "plugin",
        "export",
        "worker",
        town.path().join("myrole").to_str().unwrap(),
        "--source",
    ]);
    let (code, checks) = doctor(&town, &[]);
    assert_eq!(code, 0, "{checks:?}");
    for name in [
        "tinytown.toml",
        "redis-server",
        "redis (embedded)",
        "private ",
        "cache",
        "[host] max_instances",
        "[town] default_cli",
        "[town] default_check",
        "[agents.w.exec] allow `./coder.sh`",
        "toolchain of myrole",
        "agent r",
        "agent w",
    ] {
        assert_eq!(check(&checks, name)["ok"], true, "{name}: {checks:?}");
    }
    assert!(check(&checks, "redis-server")["detail"]
        .as_str()
        .unwrap()
        .starts_with("7."));
    let confinement = check(&checks, "agent w: confinement")["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(confinement.starts_with("exec: landlock"), "{confinement}");
    assert!(check(&checks, "agent r")["detail"]
        .as_str()
        .unwrap()
        .contains("builtin:reviewer @"));
    // Text: one line per check.
    let text = town.ok(&["doctor"]);
    assert_eq!(text.lines().count(), checks.len(), "{text}");
    assert!(text.lines().all(|l| l.starts_with("ok  ")), "{text}");
}

#[test]
fn doctor_names_each_failing_check_and_its_fix() {
    let town = TestTown::new();
    town.write_config(&format!(
        "{}\n[agents.w]\nrole = \"worker\"\nplugin = \"{}\"\nconfig = {{ program = \"./gone.sh\", reviewer = \"w\" }}\nexec = {{ allow = [\"./gone.sh\"] }}\n\n[agents.u]\nrole = \"worker\"\nplugin = \"{}\"\nconfig = {{ program = \"true\", reviewer = \"w\" }}\n\n[agents.z]\nrole = \"worker\"\nconfig = {{ program = \"true\", reviewer = \"w\" }}\nexec = {{ allow = [\"true\"], sandbox_abi = 99 }}\n",
        town.read_config().replace("default_cli = \"claude\"", "default_cli = \"no-such-cli\""),
        plugin("worker"),
        plugin("worker"),
    ));
    town.ok(&["spawn", "u"]);
    // A plugin whose init refuses its config, and a check that is not installed.
    town.write_config(&format!(
        "{}\n[agents.y]\nrole = \"worker\"\nplugin = \"{}\"\nconfig = {{ program = \"true\", reviewer = \"w\", timeout-ms = \"soon\" }}\nexec = {{ allow = [\"true\"] }}\n",
        town.read_config()
            .replace("[town]\n", "[town]\ndefault_check = \"no-such-check\"\n")
            .replace("max_instances = 1000\n", "max_instances = 100000000\n"),
        plugin("worker")
    ));
    // The data directory owned by someone else (only root can give it away).
    let data = town.path().join(".tt/data");
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        std::os::unix::fs::chown(&data, Some(12345), None).unwrap();
    }
    // A plugin project whose toolchain is not on PATH (PATH below has no cargo).
    town.ok(&[
        "plugin",
        "export",
        "worker",
        town.path().join("myrole").to_str().unwrap(),
        "--source",
    ]);
    // The embedded server's directory opened to others; the cache not a directory.
    std::fs::set_permissions(
        town.path().join(".tt"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(town.path().join(".tt/cache"), "not a directory").unwrap();
    let (code, checks) = doctor(&town, &[("PATH", "/usr/bin:/bin")]);
    assert_eq!(code, 1);
    let dot_tt = format!("private {}", town.path().join(".tt").display());
    let c = checks
        .iter()
        .find(|c| c["check"] == dot_tt.as_str())
        .unwrap();
    assert_eq!(c["ok"], false, "{c}");
    assert!(c["fix"].as_str().unwrap().contains("chmod go-rwx"), "{c}");
    assert_fails(&checks, "cache", "cannot write", "make it writable");
    assert_fails(
        &checks,
        "[host] max_instances",
        "a host keeps at most",
        "sudo sysctl -w vm.max_map_count=800",
    );
    assert_fails(
        &checks,
        "[town] default_cli",
        "`no-such-cli` is not installed",
        "set [town] default_cli",
    );
    assert_fails(
        &checks,
        "[agents.w.exec] allow `./gone.sh`",
        "not found",
        "install it",
    );
    assert_fails(
        &checks,
        "toolchain of myrole",
        "cargo, rustup not found",
        "install cargo and rustup",
    );
    assert_fails(
        &checks,
        "agent u",
        "imports the `exec` capability, which is not granted",
        "[agents.u.exec]",
    );
    assert_fails(
        &checks,
        "agent w",
        "`./gone.sh` does not exist",
        "list programs",
    );
    assert_fails(&checks, "agent z", "sandbox_abi", "");
    assert_fails(&checks, "agent y", "timeout-ms", "");
    assert_fails(
        &checks,
        "[town] default_check",
        "`no-such-check` is not installed",
        "a command on PATH",
    );
    if root {
        let data_check = format!("private {}", data.display());
        let c = checks
            .iter()
            .find(|c| c["check"] == data_check.as_str())
            .unwrap();
        assert!(
            c["ok"] == false && c["detail"].as_str().unwrap().contains("owned by uid 12345"),
            "{c}"
        );
        std::os::unix::fs::chown(&data, Some(0), None).unwrap();
    }
    for ok in ["tinytown.toml", "redis-server", "redis (embedded)"] {
        assert_eq!(check(&checks, ok)["ok"], true, "{ok}: {checks:?}");
    }
    // The text form: the same lines, exit 1 with a one-line error and a hint.
    let mut c = town.command(&["doctor"]);
    c.env("PATH", "/usr/bin:/bin");
    let out = run_timeout(c, Duration::from_secs(120));
    let stderr = expect_code(&["doctor"], &out, 1);
    refusal(&["doctor"], 1, &stderr, &["checks failed"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("FAIL  cache: ") && l.contains("; fix: ")),
        "{text}"
    );
    std::fs::set_permissions(
        town.path().join(".tt"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
}

#[test]
fn doctor_checks_redis_server_and_the_config_outside_a_town() {
    let town = TestTown::bare();
    // No redis-server on PATH.
    let empty = town.path().join("nobin");
    std::fs::create_dir_all(&empty).unwrap();
    let (code, checks) = doctor(&town, &[("PATH", empty.to_str().unwrap())]);
    assert_eq!(code, 1);
    assert_fails(&checks, "redis-server", "not installed", "apt-get install");
    assert_fails(&checks, "tinytown.toml", "cannot read", "tt init");
    // A redis-server too old.
    let old = town.path().join("redis-server");
    std::fs::write(
        &old,
        "#!/bin/sh\necho 'Redis server v=6.2.14 sha=00000000:0 malloc=libc bits=64'\n",
    )
    .unwrap();
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (_, checks) = doctor(&town, &[("TT_REDIS_SERVER", old.to_str().unwrap())]);
    assert_fails(
        &checks,
        "redis-server",
        "version \"6.2.14\"",
        "Redis 7.0 or newer",
    );
    std::fs::write(&old, "#!/bin/sh\nexit 3\n").unwrap();
    let (_, checks) = doctor(&town, &[("TT_REDIS_SERVER", old.to_str().unwrap())]);
    assert_fails(
        &checks,
        "redis-server",
        "--version exited with",
        "reinstall it",
    );
    // A broken tinytown.toml: the line and the field.
    town.write_config("[town]\nname = \"t\"\nlimits = 5\n");
    let (_, checks) = doctor(&town, &[]);
    assert_fails(&checks, "tinytown.toml", "line 3", "fix the line");
    assert_eq!(check(&checks, "redis-server")["ok"], true);
}

#[test]
fn doctor_checks_a_configured_redis_with_its_password() {
    let redis = ExternalRedis::start(&["--requirepass", "s3cret"]);
    let town = TestTown::bare();
    let head = format!(
        "[town]\nname = \"t\"\n\n[redis]\nurl = \"{}\"\npassword_env = \"TT_TEST_PW\"\n",
        redis.url()
    );
    town.write_config(&head);
    let (code, checks) = doctor(&town, &[("TT_TEST_PW", "s3cret")]);
    assert_eq!(code, 0, "{checks:?}");
    let name = format!("redis ({})", redis.url());
    let c = check(&checks, &name);
    assert!(
        c["detail"].as_str().unwrap().contains("with its password"),
        "{c}"
    );
    assert!(
        checks.iter().all(|c| c["check"] != "redis-server"),
        "not needed with a url: {checks:?}"
    );
    let (code, checks) = doctor(&town, &[("TT_TEST_PW", "wrong")]);
    assert_eq!(code, 1);
    assert_eq!(check(&checks, &name)["ok"], false, "{checks:?}");
    assert!(check(&checks, &name)["fix"]
        .as_str()
        .is_some_and(|f| !f.is_empty()));
    // Nobody listening.
    town.write_config(&head.replace(&redis.port.to_string(), "1"));
    let (code, checks) = doctor(&town, &[("TT_TEST_PW", "s3cret")]);
    assert_eq!(code, 1);
    assert_eq!(
        check(&checks, "redis (redis://127.0.0.1:1)")["ok"],
        false,
        "{checks:?}"
    );
}
