//! Starting one program without copying the host: `clone(CLONE_VM | CLONE_VFORK)`, as glibc's
//! `posix_spawn` does, with the sandbox ([`super::confine`]) applied in the child before exec.
//!
//! std's `pre_exec`, the usual way to run a step in the child, forks, and fork copies the page
//! tables of a host that holds hundreds of MiB of compiled plugins: 52 ms per program at
//! 364 MiB RSS, where starting `/bin/true` costs under a millisecond. Here the child borrows
//! the parent's memory and the calling thread waits until the child has exec'd or exited, so
//! the cost does not depend on the host's size.
//!
//! The child shares the parent's memory, so it only makes syscalls on values built before the
//! clone (argv, envp, descriptors, the prepared sandbox) and reports a failure through a word
//! of that memory, then exits 127. Signals are blocked across the clone and every handler the
//! host installed is reset in the child before they are unblocked, so no handler of the host
//! runs on the borrowed memory.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::ExitStatus;

use super::confine::{Prepared, Step};

/// What to start.
pub struct Spec<'a> {
    pub program: &'a Path,
    pub args: &'a [String],
    pub env: &'a [(String, String)],
    pub cwd: &'a Path,
    /// A pipe to the program's stdin; otherwise it reads /dev/null.
    pub stdin: bool,
    pub sandbox: &'a Prepared,
}

/// A started program, in its own process group (its pid is the group's id).
pub struct Child {
    pub pid: libc::pid_t,
    pub stdin: Option<File>,
    pub stdout: File,
    pub stderr: File,
}

/// Why a program did not start: the step that failed and the error.
#[derive(Debug)]
pub struct SpawnError {
    pub step: Step,
    pub error: io::Error,
}

impl std::fmt::Display for SpawnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} failed: {}", self.step.describe(), self.error)
    }
}

/// Everything the child reads, built before the clone.
struct Plan<'a> {
    path: CString,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    cwd: CString,
    /// (source, target) descriptors for 0, 1 and 2.
    stdio: [(RawFd, RawFd); 3],
    sandbox: &'a Prepared,
    /// Set by the child when it fails: the step and its errno.
    failed: Option<(Step, i32)>,
}

/// Starts `spec`. The child is reaped by [`wait`] or [`try_wait`].
pub fn spawn(spec: Spec) -> Result<Child, SpawnError> {
    let io_err = |step| move |error| SpawnError { step, error };
    let c = |s: &OsStr| CString::new(s.as_bytes()).map_err(|_| nul(Step::Exec));
    let path = c(spec.program.as_os_str())?;
    let mut args = vec![path.clone()];
    for a in spec.args {
        args.push(c(OsStr::new(a))?);
    }
    let env = spec
        .env
        .iter()
        .map(|(k, v)| c(OsStr::new(&format!("{k}={v}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let cwd = CString::new(spec.cwd.as_os_str().as_bytes()).map_err(|_| nul(Step::Directory))?;
    let (stdin_read, stdin_write) = if spec.stdin {
        let (r, w) = pipe().map_err(io_err(Step::Stdio))?;
        (r, Some(w))
    } else {
        let null = File::open("/dev/null").map_err(io_err(Step::Stdio))?;
        (OwnedFd::from(null), None)
    };
    let (stdout_read, stdout_write) = pipe().map_err(io_err(Step::Stdio))?;
    let (stderr_read, stderr_write) = pipe().map_err(io_err(Step::Stdio))?;
    let pointers = |v: &[CString]| {
        let mut p: Vec<_> = v.iter().map(|s| s.as_ptr()).collect();
        p.push(std::ptr::null());
        p
    };
    let mut plan = Plan {
        argv: pointers(&args),
        envp: pointers(&env),
        path,
        cwd,
        stdio: [
            (stdin_read.as_raw_fd(), 0),
            (stdout_write.as_raw_fd(), 1),
            (stderr_write.as_raw_fd(), 2),
        ],
        sandbox: spec.sandbox,
        failed: None,
    };
    // The child's stack; 64 KiB is ample for a few syscalls.
    let mut stack = vec![0u8; 64 << 10];
    // SAFETY: the stack and the plan outlive the child's use of them (CLONE_VFORK suspends
    // this thread until the child execs or exits), and the child only runs `child`.
    let pid = unsafe {
        let top = stack.as_mut_ptr().add(stack.len()) as usize & !15;
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut before: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut before);
        let pid = libc::clone(
            child,
            top as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            &mut plan as *mut Plan as *mut libc::c_void,
        );
        let error = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &before, std::ptr::null_mut());
        if pid < 0 {
            return Err(SpawnError {
                step: Step::Exec,
                error,
            });
        }
        pid
    };
    drop(stack);
    drop((stdin_read, stdout_write, stderr_write));
    // SAFETY: written by the child, which has exec'd or exited by now.
    if let Some((step, errno)) = unsafe { std::ptr::read_volatile(&plan.failed) } {
        let _ = wait(pid);
        return Err(SpawnError {
            step,
            error: io::Error::from_raw_os_error(errno),
        });
    }
    Ok(Child {
        pid,
        stdin: stdin_write.map(File::from),
        stdout: File::from(stdout_read),
        stderr: File::from(stderr_read),
    })
}

fn nul(step: Step) -> SpawnError {
    SpawnError {
        step,
        error: io::Error::new(io::ErrorKind::InvalidInput, "an argument holds a NUL byte"),
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors, which we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The child: stdio, process group, directory, signals, sandbox, exec. Only syscalls.
extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's plan, alive and untouched while this thread runs.
    let plan = unsafe { &mut *(arg as *mut Plan) };
    let result = unsafe { prepare(plan) };
    match result {
        Ok(()) => unsafe {
            libc::execve(plan.path.as_ptr(), plan.argv.as_ptr(), plan.envp.as_ptr());
            plan.failed = Some((Step::Exec, *libc::__errno_location()));
        },
        Err((step, errno)) => plan.failed = Some((step, errno)),
    }
    unsafe { libc::_exit(127) }
}

unsafe fn prepare(plan: &Plan) -> Result<(), (Step, i32)> {
    let errno = || *libc::__errno_location();
    for &(from, to) in &plan.stdio {
        let rc = if from == to {
            // Already in place (the host had it closed): only keep it across exec.
            libc::fcntl(from, libc::F_SETFD, 0)
        } else {
            libc::dup2(from, to)
        };
        if rc < 0 {
            return Err((Step::Stdio, errno()));
        }
    }
    if libc::setpgid(0, 0) != 0 {
        return Err((Step::Group, errno()));
    }
    if libc::chdir(plan.cwd.as_ptr()) != 0 {
        return Err((Step::Directory, errno()));
    }
    plan.sandbox.apply()?;
    // Every signal at its default: no handler of the host may run on the borrowed memory, and
    // a program expects none ignored (Rust ignores SIGPIPE, glibc reserves 32 and 33, which
    // its wrapper refuses to touch, hence the raw syscall; both layouts of the kernel's
    // sigaction start with the handler and are all zeros for SIG_DFL).
    for sig in 1..=libc::SIGRTMAX() {
        let mut old = [0usize; 4];
        let dfl = [0usize; 4];
        let sigsetsize = std::mem::size_of::<u64>();
        let rc = libc::syscall(
            libc::SYS_rt_sigaction,
            sig,
            std::ptr::null::<usize>(),
            old.as_mut_ptr(),
            sigsetsize,
        );
        if rc == 0 && old[0] != libc::SIG_DFL && sig != libc::SIGKILL && sig != libc::SIGSTOP {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                dfl.as_ptr(),
                std::ptr::null_mut::<usize>(),
                sigsetsize,
            );
        }
    }
    let mut none: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut none);
    libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
    Ok(())
}

/// The program's status once it has ended, or None while it runs.
pub fn try_wait(pid: libc::pid_t) -> io::Result<Option<ExitStatus>> {
    waitpid(pid, libc::WNOHANG)
}

/// Waits for the program to end.
pub fn wait(pid: libc::pid_t) -> io::Result<ExitStatus> {
    loop {
        match waitpid(pid, 0) {
            Ok(Some(s)) => return Ok(s),
            Ok(None) => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

fn waitpid(pid: libc::pid_t, flags: libc::c_int) -> io::Result<Option<ExitStatus>> {
    use std::os::unix::process::ExitStatusExt;
    let mut status = 0;
    // SAFETY: waitpid writes the status we pass.
    match unsafe { libc::waitpid(pid, &mut status, flags) } {
        0 => Ok(None),
        p if p == pid => Ok(Some(ExitStatus::from_raw(status))),
        _ => Err(io::Error::last_os_error()),
    }
}
