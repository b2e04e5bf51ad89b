//! Applying a [`Sandbox`] to one program: everything is built in the parent (the Landlock
//! ruleset of [`super::ruleset`], the seccomp filter, the limits), and the child that
//! [`super::spawn`] starts, between clone and exec, only makes syscalls on it: `setrlimit`, `prctl(PR_SET_NO_NEW_PRIVS)`,
//! `landlock_restrict_self`, `prctl(PR_SET_SECCOMP)` and dropping every capability. No
//! allocation and no lock in the child. A Landlock domain, a seccomp filter and the dropped
//! capabilities are inherited by every process the program starts and cannot be undone by it.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use super::ruleset::ruleset;
use super::sandbox::{Network, Sandbox};
use super::seccomp;

/// A sandbox made ready for one program. Keep it alive until the program has been spawned:
/// the child uses its ruleset descriptor.
pub struct Prepared {
    ruleset: Option<Arc<OwnedFd>>,
    filter: Option<Vec<libc::sock_filter>>,
    memory: Option<libc::rlimit>,
    cpu: Option<libc::rlimit>,
}

impl Prepared {
    /// Builds what the child will apply. Err when confinement cannot be had; the program
    /// must then not run.
    pub fn new(sandbox: &Sandbox) -> Result<Prepared, String> {
        let (ruleset, filter) = match &sandbox.confine {
            Some(c) => (
                Some(ruleset(c)?),
                Some(seccomp::filter(c.network == Network::None)?),
            ),
            None => (None, None),
        };
        Ok(Prepared {
            ruleset,
            filter,
            memory: sandbox
                .limits
                .memory_mb
                .map(|mb| limit(libc::RLIMIT_AS, mb.saturating_mul(1 << 20), 0)),
            cpu: sandbox
                .limits
                .cpu_secs
                .map(|s| limit(libc::RLIMIT_CPU, s, 1)),
        })
    }

    /// Applies the sandbox to the calling process: for the child of [`super::spawn`], between
    /// clone and exec. Err names the step that failed and its errno.
    ///
    /// # Safety
    /// Only syscalls, on values built before the clone; nothing allocates or locks, so it may
    /// run in a child that shares the parent's memory.
    pub unsafe fn apply(&self) -> Result<(), (Step, i32)> {
        let check = |step: Step, rc: libc::c_long| {
            if rc == 0 {
                Ok(())
            } else {
                Err((step, *libc::__errno_location()))
            }
        };
        if let Some(r) = &self.memory {
            check(Step::Limits, libc::setrlimit(libc::RLIMIT_AS, r).into())?;
        }
        if let Some(r) = &self.cpu {
            check(Step::Limits, libc::setrlimit(libc::RLIMIT_CPU, r).into())?;
        }
        let fd = self.ruleset.as_ref().map_or(-1, |f| f.as_raw_fd());
        if fd >= 0 {
            check(
                Step::Landlock,
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0).into(),
            )?;
            check(
                Step::Landlock,
                libc::syscall(libc::SYS_landlock_restrict_self, fd, 0u32),
            )?;
        }
        if let Some(f) = &self.filter {
            let prog = libc::sock_fprog {
                len: f.len() as u16,
                filter: f.as_ptr() as *mut libc::sock_filter,
            };
            check(
                Step::Seccomp,
                libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &prog as *const libc::sock_fprog,
                )
                .into(),
            )?;
        }
        if fd >= 0 {
            check(Step::Capabilities, drop_capabilities())?;
        }
        Ok(())
    }
}

/// The step of starting a program that failed, for the error the agent sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Stdio,
    Group,
    Directory,
    Limits,
    Landlock,
    Seccomp,
    Capabilities,
    Exec,
}

impl Step {
    pub fn describe(self) -> &'static str {
        match self {
            Step::Stdio => "connecting its stdin, stdout and stderr",
            Step::Group => "giving it its own process group",
            Step::Directory => "entering its work directory",
            Step::Limits => "setting its resource limits",
            Step::Landlock => "applying the Landlock ruleset",
            Step::Seccomp => "loading the seccomp filter",
            Step::Capabilities => "dropping its capabilities",
            Step::Exec => "executing it",
        }
    }
}

/// `struct __user_cap_header_struct` and `__user_cap_data_struct` (version 3: two of them).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Drops every capability, for good: a host running as root would otherwise hand the program
/// root's capabilities (loading a kernel module, raw sockets), which Landlock does not cover.
/// The bounding set goes first (it needs CAP_SETPCAP; without it, there is nothing to drop and
/// EPERM is ignored, as is EINVAL past the kernel's last capability), so that exec as root
/// gains none back; then the ambient, inheritable, permitted and effective sets.
///
/// # Safety
/// Only syscalls; for the child between clone and exec.
unsafe fn drop_capabilities() -> libc::c_long {
    for cap in 0..64 {
        libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0);
    }
    libc::prctl(
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_CLEAR_ALL,
        0,
        0,
        0,
    );
    let header = CapHeader {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let none = [
        CapData {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        },
        CapData {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        },
    ];
    libc::syscall(libc::SYS_capset, &header as *const CapHeader, none.as_ptr())
}

/// An `RLIMIT_*` constant: glibc gives it a type of its own, musl an `int`.
#[cfg(target_env = "gnu")]
type Resource = libc::__rlimit_resource_t;
#[cfg(not(target_env = "gnu"))]
type Resource = libc::c_int;

/// `resource` at `value` (soft), never above the current hard limit: an unprivileged host
/// cannot raise it, and the lower one already holds.
fn limit(resource: Resource, value: u64, slack: u64) -> libc::rlimit {
    let mut now = libc::rlimit {
        rlim_cur: 0,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    unsafe { libc::getrlimit(resource, &mut now) };
    let hard = now.rlim_max;
    libc::rlimit {
        rlim_cur: value.min(hard),
        rlim_max: value.saturating_add(slack).min(hard),
    }
}
