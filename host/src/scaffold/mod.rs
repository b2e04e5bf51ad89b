//! `tt plugin new NAME --lang rust|python|js|c --role worker|reviewer|conductor`: a plugin
//! project that builds with one command (`bash build.sh` -> `NAME/NAME.wasm`) and whose output
//! passes `tt plugin check`.
//!
//! The templates are compiled in, together with the host's own WIT, so a scaffolded project
//! always matches the contract of the `tt` that made it. Where the repository has an example
//! plugin of a role, the template *is* that plugin, so the two cannot drift:
//!
//! - Rust: `plugins/{worker,reviewer,conductor}/src/lib.rs`, with only the WIT path changed,
//!   and the crate they share, `plugins/guest` (`tinytown-guest`), copied unchanged into the
//!   project's `guest/` as a path dependency, so the project builds on its own.
//! - The Python, JavaScript and C reviewers: `plugins/reviewer-{py,js,c}`, unchanged.
//! - The other roles in those languages have no example twin; they live in `templates/`.
//! - `--llm`: the roles that ask a model, `plugins/reviewer-llm` (Rust) and
//!   `plugins/worker-llm-py` (Python), copied as they are.
//!
//! The build scripts go the other way: `templates/{python,js,c}/build.sh` is the one source,
//! and each `plugins/reviewer-*/build.sh` is it rendered for the repository's folders (a test
//! below fails when they differ). Toolchains are pinned to the versions the repository's own
//! plugins use and are installed by `build.sh` into
//! `${TT_TOOLCHAINS:-$HOME/.cache/tinytown/toolchains}`, shared by every project.
//!
//! [`project`] holds the templates and renders a project's files; this file checks the choices
//! and writes them.

mod project;

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::store::error;

/// The languages `--lang` accepts.
pub const LANGS: [&str; 4] = ["rust", "python", "js", "c"];
/// The roles `--role` accepts.
pub const ROLES: [&str; 3] = ["worker", "reviewer", "conductor"];

/// Creates a plugin project `name` under `dir` for `lang` and `role`; returns its folder.
///
/// Refuses a bad name, language or role (usage errors) and an existing folder. The folder
/// holds `build.sh`, the role's source, `wit/agent.wit` and a README; `bash build.sh` in it
/// writes `NAME.wasm` there.
pub fn new_plugin(dir: &Path, name: &str, lang: &str, role: &str) -> Result<PathBuf> {
    new_plugin_with(dir, name, lang, role, false)
}

/// [`new_plugin`], or with `llm` the variant of the role that asks a model through the host's
/// `llm` capability (world agent-llm): a reviewer in Rust (`plugins/reviewer-llm`) or a worker
/// in Python (`plugins/worker-llm-py`). Other combinations are refused as usage errors.
pub fn new_plugin_with(
    dir: &Path,
    name: &str,
    lang: &str,
    role: &str,
    llm: bool,
) -> Result<PathBuf> {
    // The rules of agent names (it names a folder and a file), said about a plugin.
    crate::store::model::validate_name(name).map_err(|e| match error::user_error(&e) {
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
    if llm && !project::LLM_VARIANTS.contains(&(lang, role)) {
        return Err(error::usage(
            format!("there is no --llm variant of a {lang} {role}"),
            "use --llm with --lang rust --role reviewer, or --lang python --role worker",
        ));
    }
    let root = dir.join(name);
    if root.symlink_metadata().is_ok() {
        return Err(error::fail(
            format!("{} already exists", root.display()),
            "pick another plugin name, or remove that folder first",
        ));
    }
    let files = project::project_files_for(name, lang, role, llm);
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

/// What `tt plugin export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Export {
    /// The component only: `DIR/NAME.wasm`.
    Component,
    /// The Rust project it is built from (what `tt plugin new NAME --lang rust --role NAME`
    /// writes) only.
    Source,
    /// Both: the project, and its component where its `build.sh` puts it.
    Both,
}

/// Writes the built-in `b` into `dir` (created; refused when it exists and is not empty) as
/// a starting point for a role of one's own. Returns the files written.
pub fn export(
    dir: &Path,
    b: &crate::store::builtin::Builtin,
    what: Export,
) -> Result<Vec<PathBuf>> {
    if fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
        return Err(error::fail(
            format!("{} exists and is not empty", dir.display()),
            "export into a new or empty directory",
        ));
    }
    let mut files: Vec<(String, String)> = Vec::new();
    if what != Export::Component {
        files = project::project_files(b.name, "rust", b.name);
    }
    fs::create_dir_all(dir).map_err(|e| {
        error::fail(
            format!("cannot create {}: {e}", dir.display()),
            "export into a directory you can write to",
        )
    })?;
    write_files(dir, &files)?;
    let mut written: Vec<PathBuf> = files.iter().map(|(rel, _)| dir.join(rel)).collect();
    if what != Export::Source {
        let wasm = dir.join(format!("{}.wasm", b.name));
        fs::write(&wasm, b.bytes).with_context(|| format!("writing {}", wasm.display()))?;
        written.push(wasm);
    }
    Ok(written)
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
