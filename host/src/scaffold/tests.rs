//! Unit tests of the scaffold: templates identical to the example plugins, rendering.

use std::fs;
use std::path::Path;

use super::*;
use crate::scaffold::ROLES;

/// The example plugins whose build.sh is a template rendered for the repository:
/// (language, folder, world, source file, its build.sh as it is).
const EXAMPLE_BUILDS: [(&str, &str, &str, &str, &str); 4] = [
    (
        "python",
        "reviewer-py",
        "agent-exec",
        "app.py",
        include_str!("../../../plugins/reviewer-py/build.sh"),
    ),
    (
        "python",
        "worker-llm-py",
        "agent-llm",
        "app.py",
        include_str!("../../../plugins/worker-llm-py/build.sh"),
    ),
    (
        "js",
        "reviewer-js",
        "agent-exec",
        "reviewer.js",
        include_str!("../../../plugins/reviewer-js/build.sh"),
    ),
    (
        "c",
        "reviewer-c",
        "agent-exec",
        "reviewer.c",
        include_str!("../../../plugins/reviewer-c/build.sh"),
    ),
];

fn file<'a>(files: &'a [(String, String)], rel: &str) -> &'a str {
    &files
        .iter()
        .find(|(r, _)| r == rel)
        .unwrap_or_else(|| panic!("no {rel}"))
        .1
}

#[test]
fn the_example_plugins_build_sh_are_the_templates() {
    let bless = std::env::var_os("TT_SCAFFOLD_BLESS").is_some_and(|v| v == "1");
    let mut stale = Vec::new();
    for (lang, folder, world, source, text) in EXAMPLE_BUILDS {
        let want = build_script(lang, folder, world, source, Layout::Repository);
        assert!(
            !want.contains("{{"),
            "{folder}: a placeholder is left:\n{want}"
        );
        if want == text {
            continue;
        }
        if bless {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../plugins")
                .join(folder)
                .join("build.sh");
            fs::write(&path, want).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        } else {
            stale.push(format!("plugins/{folder}/build.sh"));
        }
    }
    assert!(
        stale.is_empty(),
        "{} differ from host/src/scaffold/templates/*/build.sh rendered for them; rewrite them with \
         TT_SCAFFOLD_BLESS=1 cargo test -p tinytown --lib scaffold",
        stale.join(", ")
    );
}

#[test]
fn the_rust_templates_are_the_example_plugins() {
    for (role, example) in [
        ("worker", RUST_WORKER),
        ("reviewer", RUST_REVIEWER),
        ("conductor", RUST_CONDUCTOR),
    ] {
        assert_eq!(example.matches(EXAMPLE_WIT_PATH).count(), 1, "{role}");
        let files = project_files("p", "rust", role);
        let src = file(&files, "src/lib.rs");
        assert_eq!(
            src,
            example.replace(EXAMPLE_WIT_PATH, PROJECT_WIT_PATH),
            "{role}"
        );
        assert!(!src.contains("../"), "{role}: a path outside the project");
        assert!(src.contains("tinytown_guest::"), "{role}");
        assert_eq!(file(&files, "guest/src/lib.rs"), RUST_GUEST_LIB);
        assert_eq!(file(&files, "guest/Cargo.toml"), RUST_GUEST_CARGO_TOML);
        // guest/ inherits only what the project's Cargo.toml declares, needs nothing else.
        let cargo = file(&files, "Cargo.toml");
        assert!(cargo.contains("tinytown-guest = { path = \"guest\" }"));
        let (_, package) = cargo
            .split_once("[workspace.package]")
            .expect("the project declares [workspace.package]");
        for line in RUST_GUEST_CARGO_TOML.lines() {
            if let Some(key) = line.strip_suffix(".workspace = true") {
                let declared = package.lines().any(|l| l.starts_with(&format!("{key} =")));
                assert!(declared, "guest/Cargo.toml inherits {key}");
            }
        }
    }
    assert!(!RUST_GUEST_CARGO_TOML.contains("[dependencies]"));
    assert!(!RUST_GUEST_LIB.contains("{{") && !RUST_GUEST_LIB.contains("../"));
}

#[test]
fn the_reviewers_are_the_example_plugins() {
    for (lang, rel, example) in [
        ("python", "app.py", PY_REVIEWER),
        ("js", "app.js", JS_REVIEWER),
        ("c", "app.c", C_REVIEWER),
    ] {
        assert!(!example.contains("{{"), "{lang}");
        assert_eq!(file(&project_files("p", lang, "reviewer"), rel), example);
    }
}

#[test]
fn a_project_build_sh_is_about_the_project() {
    for lang in ["python", "js", "c"] {
        for role in ROLES {
            let files = project_files("my-plugin", lang, role);
            let build = file(&files, "build.sh");
            assert!(
                !build.contains("{{"),
                "{lang} {role}: a placeholder is left"
            );
            assert!(
                build.contains("OUT=\"$HERE/my-plugin.wasm\""),
                "{lang} {role}"
            );
            assert!(build.contains("WIT=\"$HERE/wit\""), "{lang} {role}");
            assert!(!build.contains("PLUGINS"), "{lang} {role}: {build}");
        }
    }
}

#[test]
fn the_llm_variants_are_the_example_plugins() {
    let files = project_files_for("p", "rust", "reviewer", true);
    assert_eq!(
        file(&files, "src/lib.rs"),
        RUST_REVIEWER_LLM
            .replace(EXAMPLE_WIT_PATH, PROJECT_WIT_PATH)
            .replacen(RUST_LLM_VERDICT_PATH, "", 1)
    );
    assert!(file(&files, "src/lib.rs").contains(r#"world: "agent-llm""#));
    // The module it shares with repo-reviewer-llm is a file of the project.
    assert!(RUST_REVIEWER_LLM.contains(RUST_LLM_VERDICT_PATH));
    assert!(file(&files, "src/lib.rs").contains("\nmod verdict;\n"));
    assert_eq!(file(&files, "src/verdict.rs"), RUST_LLM_VERDICT);
    // The example's own dependencies, and nothing the project lacks.
    let cargo = file(&files, "Cargo.toml");
    assert!(cargo.contains("serde_json = \"1\""), "{cargo}");
    assert!(file(&files, "README.md").contains("[agents.AGENT.llm]"));
    let files = project_files_for("p", "python", "worker", true);
    assert_eq!(file(&files, "app.py"), PY_WORKER_LLM);
    let build = file(&files, "build.sh");
    assert!(
        build.contains("-w agent-llm") && !build.contains("{{"),
        "{build}"
    );
}

#[test]
fn an_llm_variant_that_does_not_exist_is_a_usage_error() {
    let tmp = tempfile::tempdir().unwrap();
    let e = crate::scaffold::new_plugin_with(tmp.path(), "p", "js", "reviewer", true).unwrap_err();
    let u = crate::store::error::user_error(&e).unwrap();
    assert!(
        u.usage && u.message.contains("no --llm variant of a js reviewer"),
        "{}",
        u.message
    );
    assert!(!tmp.path().join("p").exists());
}
