//! Running one program for an agent: resolved against the allow-list, in the work directory,
//! with a cleared environment, in its own process group (a timeout kills the whole group),
//! with its output capped, inside the grant's sandbox ([`super::confine`]).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::confine::Prepared;
use super::grant::ExecGrant;
use super::sandbox::Sandbox;
use super::spawn::{spawn, try_wait, wait, Spec};
use crate::runtime::bindings::tinytown::agent::exec as wit;

/// What stderr says when a confined program was refused something.
const DENIALS: [&str; 2] = ["Permission denied", "Operation not permitted"];

impl ExecGrant {
    /// Runs `cmd` for `agent` in the default sandbox ([`Sandbox::default_for`]). `Err` when
    /// the program is not allowed or cannot start.
    pub fn run(&self, agent: &str, cmd: wit::Command) -> Result<wit::Output, String> {
        self.run_in(&Sandbox::default_for(self), agent, cmd)
    }

    /// Runs `cmd` for `agent` inside `sandbox`. `Err` when the program is not allowed, cannot
    /// be confined (it then does not run) or cannot start.
    pub fn run_in(
        &self,
        sandbox: &Sandbox,
        agent: &str,
        cmd: wit::Command,
    ) -> Result<wit::Output, String> {
        let program = resolve(&self.town_dir, &cmd.program).ok_or_else(|| {
            format!(
                "program `{}` not found (looked on PATH and in the town directory)",
                cmd.program
            )
        })?;
        if !self.allow.contains(&program) {
            tracing::warn!(agent, program = %program.display(), "exec refused: not allow-listed");
            return Err(format!(
                "program `{}` (resolved to {}) is not in the exec allow-list of agent `{agent}`",
                cmd.program,
                program.display()
            ));
        }
        let timeout = match cmd.timeout_ms {
            Some(ms) => self.timeout.min(Duration::from_millis(ms.into())),
            None => self.timeout,
        };
        let prepared = Prepared::new(sandbox).map_err(|e| {
            tracing::warn!(agent, program = %program.display(), "exec refused: {e}");
            format!(
                "cannot confine `{}`, so it does not run: {e} ([agents.{agent}.exec] sandbox)",
                program.display()
            )
        })?;
        let child = spawn(Spec {
            program: &program,
            args: &cmd.args,
            env: &self.env,
            cwd: &self.workdir,
            stdin: cmd.stdin.is_some(),
            sandbox: &prepared,
        })
        .map_err(|e| format!("cannot start `{}`: {e}", program.display()))?;
        drop(prepared);
        let pid = child.pid;
        if let (Some(text), Some(mut stdin)) = (cmd.stdin, child.stdin) {
            std::thread::spawn(move || {
                let _ = stdin.write_all(text.as_bytes());
            });
        }
        let cap = self.output_bytes;
        let (stdout, stderr) = (child.stdout, child.stderr);
        let out = std::thread::spawn(move || read_capped(stdout, cap));
        let err = std::thread::spawn(move || read_capped(stderr, cap));
        let started = Instant::now();
        let mut timed_out = false;
        // Short programs are noticed within 50 µs, long ones polled every 2 ms.
        let mut pause = Duration::from_micros(50);
        let status = loop {
            match try_wait(pid) {
                Ok(Some(status)) => break Some(status),
                Ok(None) if started.elapsed() >= timeout => {
                    timed_out = true;
                    unsafe { libc::kill(-pid, libc::SIGKILL) };
                    break wait(pid).ok();
                }
                Ok(None) => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(2));
                }
                Err(e) => return Err(format!("waiting for `{}`: {e}", program.display())),
            }
        };
        // Anything the program left running in its group goes with it.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        let (stdout, t1) = out.join().unwrap_or_default();
        let (mut stderr, t2) = err.join().unwrap_or_default();
        let failed = !status.is_some_and(|s| s.success());
        if failed && sandbox.is_confined() && DENIALS.iter().any(|d| stderr.contains(d)) {
            stderr.push_str(&denial_note(agent, sandbox));
        }
        Ok(wit::Output {
            status: if timed_out {
                None
            } else {
                status.and_then(|s| s.code())
            },
            stdout,
            stderr,
            timed_out,
            truncated: t1 || t2,
        })
    }
}

/// Said after the stderr of a confined program that failed with a permission error: the
/// kernel does not say which rule refused, so the note says what the sandbox allows.
fn denial_note(agent: &str, sandbox: &Sandbox) -> String {
    format!(
        "\n[tinytown] this program ran confined by [agents.{agent}.exec]; a permission error above \
         may be the sandbox refusing a path or a connection. It allows: {}. Grant more with \
         read, write or network.\n",
        sandbox.describe()
    )
}

/// Reads all of `r`, keeping the first `cap` bytes; returns (text, truncated).
fn read_capped(mut r: impl Read, cap: usize) -> (String, bool) {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    let mut truncated = false;
    loop {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = cap.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
                truncated |= n > room;
            }
        }
    }
    (String::from_utf8_lossy(&kept).into_owned(), truncated)
}

/// A bare name through PATH, anything with a `/` relative to `base`; canonical, or None.
pub fn resolve(base: &Path, program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return base
            .join(program)
            .canonicalize()
            .ok()
            .filter(|p| p.is_file());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .and_then(|p| p.canonicalize().ok())
}
