//! Running one program for an agent: resolved against the allow-list, in the work directory,
//! with a cleared environment, in its own process group (a timeout kills the whole group),
//! with its output capped, inside the grant's sandbox ([`super::confine`]).

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::unix::pipe;

use super::confine::Prepared;
use super::grant::ExecGrant;
use super::sandbox::Sandbox;
use super::spawn::{spawn, try_wait, wait, Spec};
use crate::runtime::bindings::tinytown::agent::exec as wit;

/// What stderr says when a confined program was refused something.
const DENIALS: [&str; 2] = ["Permission denied", "Operation not permitted"];

impl ExecGrant {
    /// Runs `cmd` for `agent` in the default sandbox ([`Sandbox::default_for`]), in `dir`
    /// (inside the work directory) or the work directory itself. `Err` when the program is
    /// not allowed, the directory is refused, or the program cannot start.
    pub async fn run(
        &self,
        agent: &str,
        dir: Option<&str>,
        cmd: wit::Command,
    ) -> Result<wit::Output, String> {
        self.run_in(&Sandbox::default_for(self), agent, dir, cmd)
            .await
    }

    /// Runs `cmd` for `agent` inside `sandbox`. `Err` when the program is not allowed, the
    /// directory is refused, the program cannot be confined (it then does not run) or cannot
    /// start. Waiting holds no thread: the exit is a pidfd and the pipes are tokio's.
    pub async fn run_in(
        &self,
        sandbox: &Sandbox,
        agent: &str,
        dir: Option<&str>,
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
        let cwd = self.work_dir(agent, dir)?;
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
            cwd: &cwd,
            stdin: cmd.stdin.is_some(),
            sandbox: &prepared,
        })
        .map_err(|e| format!("cannot start `{}`: {e}", program.display()))?;
        drop(prepared);
        let pid = child.pid;
        // Owns the child from here: whatever happens below, it is killed and reaped.
        let exit = Exit::new(pid);
        let cap = self.output_bytes;
        let piped = |f: std::fs::File| pipe::Receiver::from_file(f);
        let (out, err) = match (piped(child.stdout), piped(child.stderr)) {
            (Ok(o), Ok(e)) => (
                tokio::spawn(read_capped(o, cap)),
                tokio::spawn(read_capped(e, cap)),
            ),
            (Err(e), _) | (_, Err(e)) => {
                return Err(format!(
                    "cannot read the output of `{}`: {e}",
                    program.display()
                ))
            }
        };
        if let (Some(text), Some(stdin)) = (cmd.stdin, child.stdin) {
            if let Ok(mut tx) = pipe::Sender::from_file(stdin) {
                tokio::spawn(async move {
                    let _ = tx.write_all(text.as_bytes()).await;
                });
            }
        }
        let (status, timed_out) = match tokio::time::timeout(timeout, exit.wait()).await {
            Ok(status) => (status, false),
            Err(_) => {
                exit.kill_group();
                (exit.wait().await, true)
            }
        };
        let status = status.map_err(|e| format!("waiting for `{}`: {e}", program.display()))?;
        // Anything the program left running in its group goes with it, and its pipes close.
        exit.kill_group();
        let drained = |h: tokio::task::JoinHandle<(String, bool)>| async move {
            tokio::time::timeout(Duration::from_secs(2), h)
                .await
                .ok()
                .and_then(|r| r.ok())
                .unwrap_or_default()
        };
        let ((stdout, t1), (mut stderr, t2)) = tokio::join!(drained(out), drained(err));
        let failed = !status.success();
        if failed && sandbox.is_confined() && DENIALS.iter().any(|d| stderr.contains(d)) {
            stderr.push_str(&denial_note(agent, sandbox));
        }
        Ok(wit::Output {
            status: if timed_out { None } else { status.code() },
            stdout,
            stderr,
            timed_out,
            truncated: t1 || t2,
        })
    }

    /// Where a program runs: the work directory, or `dir` inside it (relative to it or
    /// absolute). Symlinks and `..` are resolved first, so nothing outside can be reached
    /// through them.
    pub fn work_dir(&self, agent: &str, dir: Option<&str>) -> Result<PathBuf, String> {
        let Some(dir) = dir else {
            return Ok(self.workdir.clone());
        };
        let root = self
            .workdir
            .canonicalize()
            .map_err(|e| format!("the work directory of agent `{agent}`: {e}"))?;
        let wanted = root.join(dir);
        let resolved = wanted.canonicalize().map_err(|e| {
            format!(
                "directory `{dir}` for agent `{agent}`: {e} (run-in takes an existing directory)"
            )
        })?;
        if !resolved.starts_with(&root) {
            tracing::warn!(agent, dir, "exec refused: directory outside the work area");
            return Err(format!(
                "directory `{dir}` (resolved to {}) is outside the work area of agent `{agent}` \
                 ({}); run-in takes a directory inside it ([agents.{agent}.exec] workdir)",
                resolved.display(),
                root.display()
            ));
        }
        if !resolved.is_dir() {
            return Err(format!(
                "`{dir}` (resolved to {}) is not a directory",
                resolved.display()
            ));
        }
        Ok(resolved)
    }
}

/// A started program until it is reaped: its exit is awaited on a pidfd (a file descriptor
/// that becomes readable when the process ends), so waiting costs no thread. Dropped before
/// the program ended (the handling was abandoned), it kills the group and reaps the child.
struct Exit {
    pid: libc::pid_t,
    pidfd: Option<AsyncFd<OwnedFd>>,
    reaped: AtomicBool,
}

impl Exit {
    fn new(pid: libc::pid_t) -> Exit {
        // SAFETY: pidfd_open returns a new descriptor we own, or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        let pidfd = (fd >= 0)
            .then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
            // SAFETY: the AsyncFd owns the descriptor for its whole life.
            .and_then(|fd| unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.ok());
        Exit {
            pid,
            pidfd,
            reaped: AtomicBool::new(false),
        }
    }

    async fn wait(&self) -> std::io::Result<ExitStatus> {
        let mut pause = Duration::from_micros(50);
        loop {
            if let Some(status) = try_wait(self.pid)? {
                self.reaped.store(true, Ordering::Relaxed);
                return Ok(status);
            }
            match &self.pidfd {
                Some(fd) => {
                    let mut ready = fd.readable().await?;
                    ready.clear_ready();
                }
                // No pidfd (a kernel before 5.3): poll, on a timer rather than a thread.
                None => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(2));
                }
            }
        }
    }

    fn kill_group(&self) {
        // SAFETY: signals the program's own process group (it is its leader).
        unsafe { libc::kill(-self.pid, libc::SIGKILL) };
    }
}

impl Drop for Exit {
    fn drop(&mut self) {
        if !self.reaped.load(Ordering::Relaxed) {
            self.kill_group();
            let _ = wait(self.pid);
        }
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
async fn read_capped(mut r: pipe::Receiver, cap: usize) -> (String, bool) {
    let mut kept = Vec::new();
    let mut buf = vec![0u8; 8192];
    let mut truncated = false;
    loop {
        match r.read(&mut buf).await {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(workdir: &Path) -> ExecGrant {
        ExecGrant {
            allow: vec![],
            env: vec![],
            workdir: workdir.to_path_buf(),
            town_dir: workdir.to_path_buf(),
            timeout: Duration::from_secs(1),
            output_bytes: 1024,
        }
    }

    #[test]
    fn run_in_stays_inside_the_work_area() {
        let root = tempfile::tempdir().unwrap();
        let work = root.path().join("work");
        std::fs::create_dir_all(work.join("task-1/src")).unwrap();
        std::fs::create_dir_all(root.path().join("outside")).unwrap();
        std::os::unix::fs::symlink(root.path().join("outside"), work.join("escape")).unwrap();
        let g = grant(&work);
        let canon = work.canonicalize().unwrap();
        assert_eq!(g.work_dir("w", None).unwrap(), work);
        assert_eq!(
            g.work_dir("w", Some("task-1/src")).unwrap(),
            canon.join("task-1/src")
        );
        let abs = canon.join("task-1");
        assert_eq!(g.work_dir("w", Some(abs.to_str().unwrap())).unwrap(), abs);
        for outside in ["..", "task-1/../../outside", "escape", "/etc"] {
            let e = g.work_dir("w", Some(outside)).unwrap_err();
            assert!(
                e.contains("outside the work area of agent `w`"),
                "{outside}: {e}"
            );
        }
        let e = g.work_dir("w", Some("nope")).unwrap_err();
        assert!(
            e.contains("directory `nope`") && e.contains("existing directory"),
            "{e}"
        );
        std::fs::write(work.join("file"), "x").unwrap();
        let e = g.work_dir("w", Some("file")).unwrap_err();
        assert!(e.contains("is not a directory"), "{e}");
    }

    #[test]
    fn a_program_runs_in_the_directory_it_names() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("sub")).unwrap();
        let mut g = grant(root.path());
        g.allow = vec![resolve(root.path(), "pwd").unwrap()];
        let cmd = wit::Command {
            program: "pwd".into(),
            args: vec![],
            stdin: None,
            timeout_ms: None,
        };
        let sandbox = Sandbox::default_for(&g);
        let out = crate::runtime::block_on(g.run_in(&sandbox, "w", Some("sub"), cmd)).unwrap();
        let here = root.path().join("sub").canonicalize().unwrap();
        assert_eq!(out.stdout.trim(), here.to_str().unwrap(), "{}", out.stderr);
    }
}
