//! Presets: what the common coding CLIs need to work confined (`preset = "claude"`).
//!
//! Each names its config directory under `$HOME` (made if missing, writable), the files and
//! install directories it reads if they exist, the HTTPS port, and the environment variables
//! it is passed (when the host has them). The README's "Security" section lists them.

/// One preset. Paths are relative to `$HOME`.
#[derive(Debug)]
pub struct Preset {
    pub name: &'static str,
    /// Directories the CLI keeps its state in: created if missing, then writable.
    pub config_dirs: &'static [&'static str],
    /// Files it rewrites in place, writable when they exist (`tt` never creates them).
    pub write_if_exists: &'static [&'static str],
    /// Install and config locations it reads, when they exist.
    pub read_if_exists: &'static [&'static str],
    /// A Node.js program: the usual Node.js install locations are readable too ([`NODE`]).
    pub node: bool,
    /// Outbound TCP ports it needs.
    pub ports: &'static [u16],
    /// Variables passed through (added to the grant's `env`).
    pub env: &'static [&'static str],
    /// How the built-in worker runs it without a terminal, the task on stdin
    /// (`[town] default_cli = "<name>"`): the program, then its arguments.
    pub command: &'static [&'static str],
    /// How to install it, for the error when it is not found.
    pub install: &'static str,
}

/// Where Node.js and npm-installed CLIs usually live under `$HOME`.
pub const NODE: &[&str] = &[
    ".nvm",
    ".npm-global",
    ".volta",
    ".bun",
    ".local/share/fnm",
    ".local/lib/node_modules",
];

pub static PRESETS: &[Preset] = &[
    Preset {
        name: "claude",
        config_dirs: &[".claude"],
        write_if_exists: &[".claude.json"],
        read_if_exists: &[".local/share/claude", ".gitconfig", ".config/git"],
        node: true,
        ports: &[443],
        env: &["HOME", "PATH", "ANTHROPIC_API_KEY", "CLAUDE_CONFIG_DIR"],
        command: &["claude", "--print", "--permission-mode", "acceptEdits"],
        install: "npm install -g @anthropic-ai/claude-code",
    },
    Preset {
        name: "codex",
        config_dirs: &[".codex"],
        write_if_exists: &[],
        read_if_exists: &[".gitconfig", ".config/git"],
        node: true,
        ports: &[443],
        env: &["HOME", "PATH", "OPENAI_API_KEY", "CODEX_HOME"],
        command: &["codex", "exec", "--full-auto", "-"],
        install: "npm install -g @openai/codex",
    },
    Preset {
        name: "aider",
        config_dirs: &[".aider"],
        write_if_exists: &[],
        read_if_exists: &[
            ".aider.conf.yml",
            ".aider.model.settings.yml",
            ".aider.model.metadata.json",
            ".local/share/pipx",
            ".local/share/uv",
            ".local/lib",
            ".gitconfig",
            ".config/git",
        ],
        node: false,
        ports: &[443],
        env: &[
            "HOME",
            "PATH",
            "OPENAI_API_KEY",
            "ANTHROPIC_API_KEY",
            "GEMINI_API_KEY",
            "OPENROUTER_API_KEY",
        ],
        command: &["aider", "--yes-always", "--message-file", "/dev/stdin"],
        install: "python3 -m pip install aider-install && aider-install",
    },
    Preset {
        name: "gemini",
        config_dirs: &[".gemini"],
        write_if_exists: &[],
        read_if_exists: &[".gitconfig", ".config/git"],
        node: true,
        ports: &[443],
        env: &["HOME", "PATH", "GEMINI_API_KEY", "GOOGLE_API_KEY"],
        command: &["gemini", "--yolo"],
        install: "npm install -g @google/gemini-cli",
    },
];

pub fn by_name(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}

/// The presets named, skipping unknown names ([`super::sandbox::Sandbox::check`] refuses them).
pub fn named(names: &[String]) -> impl Iterator<Item = &'static Preset> + '_ {
    names.iter().filter_map(|n| by_name(n))
}

/// The preset names, for hints.
pub fn names() -> String {
    PRESETS
        .iter()
        .map(|p| format!("\"{}\"", p.name))
        .collect::<Vec<_>>()
        .join(", ")
}
