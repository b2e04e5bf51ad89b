//! `tt plugin new NAME --lang rust|python|js|c --role worker|reviewer|conductor`: a plugin
//! project that builds with one command (`bash build.sh` -> `NAME/NAME.wasm`) and whose output
//! passes `tt plugin check`.
//!
//! The templates live in `templates/` and are compiled in, together with the host's own WIT, so
//! a scaffolded project always matches the contract of the `tt` that made it. Toolchains are
//! pinned to the versions the repository's own plugins use and are installed by `build.sh`
//! into `${TT_TOOLCHAINS:-$HOME/.cache/tinytown/toolchains}`, shared by every project.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::error;

/// The languages `--lang` accepts.
pub const LANGS: [&str; 4] = ["rust", "python", "js", "c"];
/// The roles `--role` accepts.
pub const ROLES: [&str; 3] = ["worker", "reviewer", "conductor"];

/// Toolchain versions, the same as the repository's plugins (see their build.sh).
const COMPONENTIZE_PY_VERSION: &str = "0.25.1";
const WIT_BINDGEN_CLI_VERSION: &str = "0.63.0";

const WIT: &str = include_str!("../../wit/agent.wit");
const README: &str = include_str!("templates/README.md");
const GITIGNORE: &str = include_str!("templates/gitignore");
/// The JS toolchain (componentize-js, jco) locked exactly as for plugins/reviewer-js, so that
/// a shared toolchain folder serves both without reinstalling.
const JS_PACKAGE_JSON: &str = include_str!("../../plugins/reviewer-js/toolchain/package.json");
const JS_PACKAGE_LOCK: &str = include_str!("../../plugins/reviewer-js/toolchain/package-lock.json");

const RUST_CARGO_TOML: &str = include_str!("templates/rust/Cargo.toml.in");
const RUST_BUILD: &str = include_str!("templates/rust/build.sh");
const RUST_WORKER: &str = include_str!("templates/rust/worker.rs");
const RUST_REVIEWER: &str = include_str!("templates/rust/reviewer.rs");
const RUST_CONDUCTOR: &str = include_str!("templates/rust/conductor.rs");

const PY_BUILD: &str = include_str!("templates/python/build.sh");
const PY_WORKER: &str = include_str!("templates/python/worker.py");
const PY_REVIEWER: &str = include_str!("templates/python/reviewer.py");
const PY_CONDUCTOR: &str = include_str!("templates/python/conductor.py");

const JS_BUILD: &str = include_str!("templates/js/build.sh");
const JS_WORKER: &str = include_str!("templates/js/worker.js");
const JS_REVIEWER: &str = include_str!("templates/js/reviewer.js");
const JS_CONDUCTOR: &str = include_str!("templates/js/conductor.js");

const C_BUILD: &str = include_str!("templates/c/build.sh");
const C_PRELUDE: &str = include_str!("templates/c/prelude.c");
const C_RUN_CONFIG: &str = include_str!("templates/c/run_config.c");
const C_WORKER: &str = include_str!("templates/c/worker.c");
const C_REVIEWER: &str = include_str!("templates/c/reviewer.c");
const C_CONDUCTOR: &str = include_str!("templates/c/conductor.c");

/// Creates a plugin project `name` under `dir` for `lang` and `role`; returns its folder.
///
/// Refuses a bad name, language or role (usage errors) and an existing folder. The folder
/// holds `build.sh`, the role's source, `wit/agent.wit` and a README; `bash build.sh` in it
/// writes `NAME.wasm` there.
pub fn new_plugin(dir: &Path, name: &str, lang: &str, role: &str) -> Result<PathBuf> {
    // The rules of agent names (it names a folder and a file), said about a plugin.
    crate::model::validate_name(name).map_err(|e| match error::user_error(&e) {
        Some(u) => error::usage(
            u.message.replace("agent name", "plugin name"),
            u.hint.clone().unwrap_or_default(),
        ),
        None => e,
    })?;
    if !LANGS.contains(&lang) {
        return Err(error::usage(
            format!("unknown plugin language `{lang}`"),
            "use --lang rust, python, js or c",
        ));
    }
    if !ROLES.contains(&role) {
        return Err(error::usage(
            format!("unknown plugin role `{role}`"),
            "use --role worker, reviewer or conductor",
        ));
    }
    let root = dir.join(name);
    if root.symlink_metadata().is_ok() {
        return Err(error::fail(
            format!("{} already exists", root.display()),
            "pick another plugin name, or remove that folder first",
        ));
    }
    let files = project_files(name, lang, role);
    match fs::create_dir(&root) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(error::fail(
                format!("{} already exists", root.display()),
                "pick another plugin name, or remove that folder first",
            ))
        }
        Err(e) => {
            return Err(error::fail(
                format!("cannot create {}: {e}", root.display()),
                "run `tt plugin new` in a folder you can write to",
            ))
        }
    }
    // Half a project is worse than none: remove what we created when a write fails.
    if let Err(e) = write_files(&root, &files) {
        let _ = fs::remove_dir_all(&root);
        return Err(e);
    }
    Ok(root)
}

fn write_files(root: &Path, files: &[(String, String)]) -> Result<()> {
    for (rel, text) in files {
        let path = root.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        if rel.ends_with(".sh") {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
                .with_context(|| format!("making {} executable", path.display()))?;
        }
    }
    Ok(())
}

/// The project's files: (path relative to the project folder, contents). `lang` and `role`
/// must be valid.
fn project_files(name: &str, lang: &str, role: &str) -> Vec<(String, String)> {
    // worker and reviewer run programs (world agent-exec); the conductor only asks questions.
    let world = if role == "conductor" {
        "agent"
    } else {
        "agent-exec"
    };
    let cworld = world.replace('-', "_");
    // A cargo package name must not start with a digit, and a library must not be called
    // `std` or `test`: a prefix avoids both.
    let package = format!("tt-plugin-{}", name.to_ascii_lowercase());
    let krate = package.replace('-', "_");
    let vars: Vec<(&str, &str)> = vec![
        ("name", name),
        ("role", role),
        ("world", world),
        ("cworld", &cworld),
        ("package", &package),
        ("crate", &krate),
        ("cpy_version", COMPONENTIZE_PY_VERSION),
        ("wit_bindgen_version", WIT_BINDGEN_CLI_VERSION),
    ];
    let pick = |worker: &'static str, reviewer: &'static str, conductor: &'static str| match role {
        "worker" => worker,
        "reviewer" => reviewer,
        _ => conductor,
    };

    let mut files: Vec<(String, String)> = Vec::new();
    let (language, source, toolchain) = match lang {
        "rust" => {
            let src = pick(RUST_WORKER, RUST_REVIEWER, RUST_CONDUCTOR);
            files.push(("Cargo.toml".into(), render(RUST_CARGO_TOML, &vars)));
            files.push(("src/lib.rs".into(), render(src, &vars)));
            files.push(("build.sh".into(), render(RUST_BUILD, &vars)));
            (
                "Rust",
                "src/lib.rs",
                "runs `cargo build --release --target wasm32-wasip2`, adding that target with \
                 rustup when it is missing"
                    .to_string(),
            )
        }
        "python" => {
            let src = pick(PY_WORKER, PY_REVIEWER, PY_CONDUCTOR);
            files.push(("app.py".into(), render(src, &vars)));
            files.push(("build.sh".into(), render(PY_BUILD, &vars)));
            (
                "Python",
                "app.py",
                format!(
                    "installs componentize-py {COMPONENTIZE_PY_VERSION} on first use into \
                     `${{TT_TOOLCHAINS:-~/.cache/tinytown/toolchains}}`, shared by every \
                     plugin, and runs it"
                ),
            )
        }
        "js" => {
            let src = pick(JS_WORKER, JS_REVIEWER, JS_CONDUCTOR);
            files.push(("app.js".into(), render(src, &vars)));
            files.push(("build.sh".into(), render(JS_BUILD, &vars)));
            files.extend(js_toolchain());
            (
                "JavaScript",
                "app.js",
                "installs componentize-js 0.23.0 and jco 1.35.0 on first use, with `npm ci` of \
                 `toolchain/package-lock.json` into \
                 `${TT_TOOLCHAINS:-~/.cache/tinytown/toolchains}`, shared by every plugin, \
                 and runs componentize-js"
                    .to_string(),
            )
        }
        _ => {
            let src = pick(C_WORKER, C_REVIEWER, C_CONDUCTOR)
                .replace("{{prelude}}", C_PRELUDE)
                .replace("{{run_config}}", C_RUN_CONFIG);
            files.push(("app.c".into(), render(&src, &vars)));
            files.push(("build.sh".into(), render(C_BUILD, &vars)));
            files.extend(js_toolchain());
            (
                "C",
                "app.c",
                format!(
                    "installs what is missing on first use: clang, lld and wasi-libc with \
                     apt-get, wit-bindgen-cli {WIT_BINDGEN_CLI_VERSION} with `cargo install` \
                     (minutes, unless one is already there or on PATH) and jco 1.35.0 with \
                     `npm ci`, into `${{TT_TOOLCHAINS:-~/.cache/tinytown/toolchains}}`, shared \
                     by every plugin; then it generates the C bindings, compiles with clang \
                     and makes the module a component with `jco new`"
                ),
            )
        }
    };

    let (summary, config) = match role {
        "worker" => (
            "on a `task-assign` it runs a program with the task text on stdin and asks a \
             reviewer to review the output; when the review rejects the work, it runs the \
             program again with the reviewer's feedback appended.",
            "It reads these keys of the agent's `config` table in tinytown.toml: `program` \
             (required: the command it runs for a task), `reviewer` (required: the agent that \
             reviews its work), `args` (optional, whitespace-separated arguments) and \
             `timeout-ms` (optional, for each run); the agent needs an exec grant \
             (`[agents.AGENT.exec]`) whose `allow` lists the program.",
        ),
        "reviewer" => (
            "on a `review-request` it runs a check program with the work on stdin and approves \
             the task only when the check exits 0; it fails closed (a failing, timed-out or \
             unrunnable check rejects, with the check's output as feedback, and what cannot be \
             reviewed at all is escalated), it never approves by default.",
            "It reads these keys of the agent's `config` table in tinytown.toml: `program` \
             (required: the check to run), `args` (optional, whitespace-separated arguments) \
             and `timeout-ms` (optional); the agent needs an exec grant \
             (`[agents.AGENT.exec]`) whose `allow` lists the program.",
        ),
        _ => (
            "whatever message wakes it, it assigns backlog tasks, oldest first, to idle \
             workers (agents of role `worker` with no unfinished task), one task each.",
            "It reads no config keys and needs no grant: it only asks the town questions \
             (`host.list-agents`, `host.backlog`) and returns `assign` actions.",
        ),
    };
    let mut readme_vars = vars.clone();
    readme_vars.extend([
        ("language", language),
        ("source", source),
        ("toolchain", toolchain.as_str()),
        ("summary", summary),
        ("config", config),
    ]);
    files.push(("README.md".into(), render(README, &readme_vars)));
    files.push((".gitignore".into(), GITIGNORE.to_string()));
    files.push(("wit/agent.wit".into(), WIT.to_string()));
    files
}

/// toolchain/package.json and package-lock.json for the JS and C builds.
fn js_toolchain() -> [(String, String); 2] {
    // The same lock as plugins/reviewer-js; only the description is about this project.
    let package_json = match serde_json::from_str::<serde_json::Value>(JS_PACKAGE_JSON) {
        Ok(mut v) => {
            v["description"] = serde_json::Value::from(
                "The guest toolchain of this plugin (componentize-js, jco), installed by \
                 build.sh with `npm ci` into ${TT_TOOLCHAINS:-~/.cache/tinytown/toolchains}/node.",
            );
            serde_json::to_string_pretty(&v).unwrap_or_else(|_| JS_PACKAGE_JSON.to_string()) + "\n"
        }
        Err(_) => JS_PACKAGE_JSON.to_string(),
    };
    [
        ("toolchain/package.json".into(), package_json),
        (
            "toolchain/package-lock.json".into(),
            JS_PACKAGE_LOCK.to_string(),
        ),
    ]
}

/// `template` with every `{{key}}` replaced by its value.
fn render(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = template.to_string();
    for (key, value) in vars {
        out = out.replace(&format!("{{{{{key}}}}}"), value);
    }
    out
}
