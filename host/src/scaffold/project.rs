//! The templates (compiled in) and the files of a new project, rendered from them.

/// Toolchain versions, the same as the repository's plugins (see their build.sh).
const COMPONENTIZE_PY_VERSION: &str = "0.25.1";
const WIT_BINDGEN_CLI_VERSION: &str = "0.63.0";

const WIT: &str = include_str!("../../../wit/agent.wit");
const README: &str = include_str!("templates/README.md");
const GITIGNORE: &str = include_str!("templates/gitignore");
/// The JS toolchain (componentize-js, jco) locked exactly as for plugins/reviewer-js, so that
/// a shared toolchain folder serves both without reinstalling.
const JS_PACKAGE_JSON: &str = include_str!("../../../plugins/reviewer-js/toolchain/package.json");
const JS_PACKAGE_LOCK: &str =
    include_str!("../../../plugins/reviewer-js/toolchain/package-lock.json");

const RUST_CARGO_TOML: &str = include_str!("templates/rust/Cargo.toml.in");
const RUST_BUILD: &str = include_str!("templates/rust/build.sh");
// The example plugins themselves; `rust_source` points them at the project's WIT.
const RUST_WORKER: &str = include_str!("../../../plugins/worker/src/lib.rs");
const RUST_REVIEWER: &str = include_str!("../../../plugins/reviewer/src/lib.rs");
const RUST_CONDUCTOR: &str = include_str!("../../../plugins/conductor/src/lib.rs");
/// The reviewer that asks a model (`--llm`), and the line its Cargo.toml adds.
const RUST_REVIEWER_LLM: &str = include_str!("../../../plugins/reviewer-llm/src/lib.rs");
const RUST_LLM_DEPENDENCY: &str = "# Reads the model's JSON answer.\nserde_json = \"1\"\n";
/// What it shares with `repo-reviewer-llm` (the verdict, the request, the judging): in the
/// repository a file included by path, in a project its own module `src/verdict.rs`.
const RUST_LLM_VERDICT: &str = include_str!("../../../plugins/llm-common/verdict.rs");
const RUST_LLM_VERDICT_PATH: &str = "#[path = \"../../llm-common/verdict.rs\"]\n";
/// How the example plugins name the WIT (the repository's `wit/`), and how a project does.
const EXAMPLE_WIT_PATH: &str = r#"path: "../../wit""#;
const PROJECT_WIT_PATH: &str = r#"path: "wit""#;
/// The crate the Rust roles share, written unchanged into the project's `guest/`. Its
/// Cargo.toml inherits package fields that `templates/rust/Cargo.toml.in` declares.
const RUST_GUEST_CARGO_TOML: &str = include_str!("../../../plugins/guest/Cargo.toml");
const RUST_GUEST_LIB: &str = include_str!("../../../plugins/guest/src/lib.rs");

const PY_BUILD: &str = include_str!("templates/python/build.sh");
const PY_WORKER: &str = include_str!("templates/python/worker.py");
const PY_REVIEWER: &str = include_str!("../../../plugins/reviewer-py/app.py");
const PY_CONDUCTOR: &str = include_str!("templates/python/conductor.py");
/// The worker that drafts with a model (`--llm`).
const PY_WORKER_LLM: &str = include_str!("../../../plugins/worker-llm-py/app.py");

const JS_BUILD: &str = include_str!("templates/js/build.sh");
const JS_WORKER: &str = include_str!("templates/js/worker.js");
const JS_REVIEWER: &str = include_str!("../../../plugins/reviewer-js/reviewer.js");
const JS_CONDUCTOR: &str = include_str!("templates/js/conductor.js");

const C_BUILD: &str = include_str!("templates/c/build.sh");
const C_PRELUDE: &str = include_str!("templates/c/prelude.c");
const C_RUN_CONFIG: &str = include_str!("templates/c/run_config.c");
const C_WORKER: &str = include_str!("templates/c/worker.c");
const C_REVIEWER: &str = include_str!("../../../plugins/reviewer-c/reviewer.c");
const C_CONDUCTOR: &str = include_str!("templates/c/conductor.c");

/// What `templates/{js,c}/build.sh` say at `{{node_toolchain}}`: installing componentize-js
/// and jco from the lock.
const NODE_TOOLCHAIN: &str = include_str!("templates/node_toolchain.sh");

/// Where a `build.sh` of Python, JavaScript or C runs: in a project of `tt plugin new`, which
/// has everything in its folder, or in one of the repository's example plugins
/// (`plugins/reviewer-{py,js,c}`), which share `wit/`, `plugins/.toolchains` and the JS lock of
/// `plugins/reviewer-js`, and write to `plugins/dist/`. Only these lines differ.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Layout {
    Project,
    /// Only the tests render this: they check the example plugins' build.sh against it.
    #[cfg(test)]
    Repository,
}

impl Layout {
    /// The values of the build scripts' layout placeholders; they may use `{{name}}` and
    /// `{{lang}}` themselves.
    fn vars(self) -> [(&'static str, &'static str); 6] {
        match self {
            Layout::Project => [
                (
                    "header",
                    "# Builds the {{name}} plugin: bash build.sh  ->  {{name}}.wasm (next to this script).",
                ),
                (
                    "where",
                    "TOOLCHAINS=\"${TT_TOOLCHAINS:-$HOME/.cache/tinytown/toolchains}\"\n\
                     WIT=\"$HERE/wit\"\n\
                     OUT=\"$HERE/{{name}}.wasm\"",
                ),
                ("toolchains_doc", "${TT_TOOLCHAINS:-~/.cache/tinytown/toolchains}"),
                ("lock", "$HERE/toolchain"),
                ("lock_doc", "toolchain"),
                ("cwarnings", "-Wall"),
            ],
            #[cfg(test)]
            Layout::Repository => [
                (
                    "header",
                    "# Builds the example plugin {{name}}: bash build.sh  ->  plugins/dist/{{name}}.wasm.\n\
                     # This is what `tt plugin new --lang {{lang}}` writes (host/src/scaffold/templates/{{lang}}/build.sh),\n\
                     # rendered for this folder; a test in host/src/scaffold/ fails when the two differ. Edit\n\
                     # the template, then rewrite this: TT_SCAFFOLD_BLESS=1 cargo test -p tinytown --lib scaffold",
                ),
                (
                    "where",
                    "PLUGINS=\"$(dirname \"$HERE\")\"\n\
                     TOOLCHAINS=\"${TT_TOOLCHAINS:-$PLUGINS/.toolchains}\" # CI keeps them outside the clone\n\
                     WIT=\"$(dirname \"$PLUGINS\")/wit\"\n\
                     OUT=\"$PLUGINS/dist/{{name}}.wasm\"",
                ),
                ("toolchains_doc", "${TT_TOOLCHAINS:-plugins/.toolchains}"),
                ("lock", "$PLUGINS/reviewer-js/toolchain"),
                ("lock_doc", "plugins/reviewer-js/toolchain"),
                ("cwarnings", "-Wall -Werror"),
            ],
        }
    }
}

/// The `build.sh` of a Python, JavaScript or C plugin `name` of `world`, built from `source`.
fn build_script(lang: &str, name: &str, world: &str, source: &str, layout: Layout) -> String {
    let template = match lang {
        "python" => PY_BUILD,
        "js" => JS_BUILD,
        _ => C_BUILD,
    };
    let mut blocks = layout.vars().to_vec();
    blocks.push(("node_toolchain", NODE_TOOLCHAIN.trim_end()));
    let cworld = world.replace('-', "_");
    render(
        &render(template, &blocks),
        &[
            ("name", name),
            ("lang", lang),
            ("world", world),
            ("cworld", &cworld),
            ("source", source),
            ("cpy_version", COMPONENTIZE_PY_VERSION),
            ("wit_bindgen_version", WIT_BINDGEN_CLI_VERSION),
        ],
    )
}

/// An example plugin's `src/lib.rs` as a project's: its WIT is `wit/`, not `../../wit`.
fn rust_source(example: &str) -> String {
    example.replacen(EXAMPLE_WIT_PATH, PROJECT_WIT_PATH, 1)
}

/// The project's files: (path relative to the project folder, contents). `lang` and `role`
/// must be valid.
pub(super) fn project_files(name: &str, lang: &str, role: &str) -> Vec<(String, String)> {
    project_files_for(name, lang, role, false)
}

/// The variants that ask a model (`tt plugin new --llm`): (language, role). Each is an example
/// plugin of the repository, copied as it is.
pub(super) const LLM_VARIANTS: [(&str, &str); 2] = [("rust", "reviewer"), ("python", "worker")];

/// [`project_files`], or with `llm` the variant of [`LLM_VARIANTS`] that asks a model (world
/// agent-llm); `(lang, role)` must be one of them then.
pub(super) fn project_files_for(
    name: &str,
    lang: &str,
    role: &str,
    llm: bool,
) -> Vec<(String, String)> {
    // worker and reviewer run programs (world agent-exec); the conductor only asks questions;
    // the --llm variants ask a model instead.
    let world = if llm {
        "agent-llm"
    } else if role == "conductor" {
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
    // A template is rendered; an example plugin (the reviewer) is copied as it is.
    let role_source =
        |worker: &'static str, reviewer: &'static str, conductor: &'static str| match role {
            "reviewer" => reviewer.to_string(),
            _ => render(pick(worker, reviewer, conductor), &vars),
        };

    let mut files: Vec<(String, String)> = Vec::new();
    let (language, source, toolchain) = match lang {
        "rust" => {
            let src = if llm {
                RUST_REVIEWER_LLM
            } else {
                pick(RUST_WORKER, RUST_REVIEWER, RUST_CONDUCTOR)
            };
            let mut cargo = render(RUST_CARGO_TOML, &vars);
            if llm {
                cargo = cargo.replacen(
                    "tinytown-guest = { path = \"guest\" }\n",
                    &format!("tinytown-guest = {{ path = \"guest\" }}\n{RUST_LLM_DEPENDENCY}"),
                    1,
                );
            }
            files.push(("Cargo.toml".into(), cargo));
            files.push((
                "src/lib.rs".into(),
                rust_source(src).replacen(RUST_LLM_VERDICT_PATH, "", 1),
            ));
            if llm {
                files.push(("src/verdict.rs".into(), RUST_LLM_VERDICT.to_string()));
            }
            files.push(("build.sh".into(), render(RUST_BUILD, &vars)));
            files.push(("guest/Cargo.toml".into(), RUST_GUEST_CARGO_TOML.to_string()));
            files.push(("guest/src/lib.rs".into(), RUST_GUEST_LIB.to_string()));
            (
                "Rust",
                "src/lib.rs",
                "runs `cargo build --release --target wasm32-wasip2`, adding that target with \
                 rustup when it is missing"
                    .to_string(),
            )
        }
        "python" => {
            let app = if llm {
                PY_WORKER_LLM.to_string()
            } else {
                role_source(PY_WORKER, PY_REVIEWER, PY_CONDUCTOR)
            };
            files.push(("app.py".into(), app));
            let build = build_script(lang, name, world, "app.py", Layout::Project);
            files.push(("build.sh".into(), build));
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
            files.push((
                "app.js".into(),
                role_source(JS_WORKER, JS_REVIEWER, JS_CONDUCTOR),
            ));
            let build = build_script(lang, name, world, "app.js", Layout::Project);
            files.push(("build.sh".into(), build));
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
            let src = match role {
                "reviewer" => C_REVIEWER.to_string(),
                _ => {
                    let template = pick(C_WORKER, C_REVIEWER, C_CONDUCTOR)
                        .replace("{{prelude}}", C_PRELUDE)
                        .replace("{{run_config}}", C_RUN_CONFIG);
                    render(&template, &vars)
                }
            };
            files.push(("app.c".into(), src));
            let build = build_script(lang, name, world, "app.c", Layout::Project);
            files.push(("build.sh".into(), build));
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

    let (summary, config) = if llm {
        readme_llm_text(role)
    } else {
        readme_role_text(lang, role)
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

/// What the README says the role does, and which config keys and grant it needs. The Rust
/// worker and conductor are the example plugins, which do more than the other languages'.
fn readme_role_text(lang: &str, role: &str) -> (&'static str, &'static str) {
    match (lang, role) {
        ("rust", "worker") => (
            "on a `task-assign` it runs a program with the task text on stdin and asks a \
             reviewer to review the output; when the review rejects the work, it runs the \
             program again with the reviewer's feedback appended. It answers a `query` with an \
             `info` message.",
            "It reads these keys of the agent's `config` table in tinytown.toml: `program` \
             (required: the command it runs for a task), `reviewer` (required: the agent that \
             reviews its work), `args` (optional, whitespace-separated arguments, in which \
             `{task}` and `{attempt}` become the task id and the attempt number) and \
             `timeout-ms` (optional, for each run); the agent needs an exec grant \
             (`[agents.AGENT.exec]`) whose `allow` lists the program. `guest/` is the crate \
             `tinytown-guest` that reads the config table and implements `Guest`.",
        ),
        (_, "worker") => (
            "on a `task-assign` it runs a program with the task text on stdin and asks a \
             reviewer to review the output; when the review rejects the work, it runs the \
             program again with the reviewer's feedback appended.",
            "It reads these keys of the agent's `config` table in tinytown.toml: `program` \
             (required: the command it runs for a task), `reviewer` (required: the agent that \
             reviews its work), `args` (optional, whitespace-separated arguments) and \
             `timeout-ms` (optional, for each run); the agent needs an exec grant \
             (`[agents.AGENT.exec]`) whose `allow` lists the program.",
        ),
        (_, "reviewer") => (
            "on a `review-request` it runs a check program with the work on stdin and approves \
             the task only when the check exits 0; it fails closed (a failing, timed-out or \
             unrunnable check rejects, with the check's output as feedback, and what cannot be \
             reviewed at all is escalated), it never approves by default.",
            if lang == "rust" {
                "It reads these keys of the agent's `config` table in tinytown.toml: `program` \
                 (required: the check to run), `args` (optional, whitespace-separated \
                 arguments, in which `{task}` becomes the task id), `notify` (optional: an \
                 agent sent an `info` message with each verdict) and `timeout-ms` (optional); \
                 the agent needs an exec grant (`[agents.AGENT.exec]`) whose `allow` lists the \
                 program. `guest/` is the crate `tinytown-guest` that reads the config table \
                 and implements `Guest`."
            } else {
                "It reads these keys of the agent's `config` table in tinytown.toml: `program` \
                 (required: the check to run), `args` (optional, whitespace-separated \
                 arguments, in which `{task}` becomes the task id), `notify` (optional: an \
                 agent sent an `info` message with each verdict) and `timeout-ms` (optional); \
                 the agent needs an exec grant (`[agents.AGENT.exec]`) whose `allow` lists the \
                 program."
            },
        ),
        ("rust", _) => (
            "whatever message wakes it, it tells a human once when a task completes, escalates \
             once a task that reviews keep rejecting, and assigns backlog tasks, oldest first, \
             to idle workers (agents of role `worker` with no unfinished task), one task each.",
            "It needs no config keys; it reads two optional ones of the agent's `config` table \
             in tinytown.toml: `max-rejections` (a whole number, default 3: the rejections of \
             one task after which it escalates) and `human` (the agent told of completed \
             tasks, default `conductor`). It needs no grant: it only asks the town questions \
             (`host.get-task`, `host.get-state`, `host.list-agents`, `host.backlog`) and \
             returns `assign`, `send`, `escalate`, `set-state` and `log` actions. `guest/` is \
             the crate `tinytown-guest` that reads the config table and implements `Guest`.",
        ),
        _ => (
            "whatever message wakes it, it assigns backlog tasks, oldest first, to idle \
             workers (agents of role `worker` with no unfinished task), one task each.",
            "It reads no config keys and needs no grant: it only asks the town questions \
             (`host.list-agents`, `host.backlog`) and returns `assign` actions.",
        ),
    }
}

/// What the README says of an `--llm` variant.
fn readme_llm_text(role: &str) -> (&'static str, &'static str) {
    if role == "reviewer" {
        (
            "on a `review-request` it asks a model, through the host's `llm` capability, for a \
             structured verdict (`{\"verdict\": \"approve\"|\"reject\", \"reason\": ...}`) on \
             the work against the task's description. It fails closed: any model error, an \
             exhausted budget or an answer that is not exactly an approving verdict rejects, \
             with the reason, and what a human must fix is escalated.",
            "It reads these keys of the agent's `config` table in tinytown.toml: `model` \
             (required: a model alias), `max-tokens`, `notify` and `instructions` (optional); \
             the agent needs an llm grant (`[agents.AGENT.llm] models = [\"ALIAS\"]`) of an \
             alias of `[llm.models]`. `guest/` is the crate `tinytown-guest` that reads the \
             config table and implements `Guest`.",
        )
    } else {
        (
            "on a `task-assign` it asks a model, through the host's `llm` capability, to do the \
             task and asks a reviewer to review the draft; on a rejection it drafts again with \
             the feedback. A model error that may pass is retried by the host; one that will \
             not fails the task and escalates.",
            "It reads these keys of the agent's `config` table in tinytown.toml: `model` \
             (required: a model alias), `reviewer` (required), `max-tokens` and \
             `instructions` (optional); the agent needs an llm grant (`[agents.AGENT.llm] \
             models = [\"ALIAS\"]`).",
        )
    }
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
pub(super) fn render(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = template.to_string();
    for (key, value) in vars {
        out = out.replace(&format!("{{{{{key}}}}}"), value);
    }
    out
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
