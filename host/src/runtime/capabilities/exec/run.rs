//! Running one program for an agent: resolved against the allow-list, in the work directory,
//! with a cleared environment, in its own process group (a timeout kills the whole group),
//! with its output capped.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::grant::ExecGrant;
use crate::runtime::bindings::tinytown::agent::exec as wit;

impl ExecGrant {
    /// Runs `cmd` for `agent`. `Err` when the program is not allowed or cannot start.
    pub fn run(&self, agent: &str, cmd: wit::Command) -> Result<wit::Output, String> {
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
        let mut child = Command::new(&program)
            .args(&cmd.args)
            .current_dir(&self.workdir)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(if cmd.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start `{}`: {e}", program.display()))?;
        let pid = child.id() as i32;
        if let (Some(text), Some(mut stdin)) = (cmd.stdin, child.stdin.take()) {
            std::thread::spawn(move || {
                let _ = stdin.write_all(text.as_bytes());
            });
        }
        let cap = self.output_bytes;
        let out = child
            .stdout
            .take()
            .map(|s| std::thread::spawn(move || read_capped(s, cap)));
        let err = child
            .stderr
            .take()
            .map(|s| std::thread::spawn(move || read_capped(s, cap)));
        let started = Instant::now();
        let mut timed_out = false;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if started.elapsed() >= timeout => {
                    timed_out = true;
                    unsafe { libc::kill(-pid, libc::SIGKILL) };
                    break child.wait().ok();
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(2)),
                Err(e) => return Err(format!("waiting for `{}`: {e}", program.display())),
            }
        };
        // Anything the program left running in its group goes with it.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        let (stdout, t1) = out.and_then(|h| h.join().ok()).unwrap_or_default();
        let (stderr, t2) = err.and_then(|h| h.join().ok()).unwrap_or_default();
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
pub(super) fn resolve(base: &Path, program: &str) -> Option<PathBuf> {
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
