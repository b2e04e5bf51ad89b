//! The seccomp filter beside Landlock: sockets, which Landlock of this kernel does not cover.
//!
//! Landlock restricts TCP (ABI 4) but, before ABI 9, not connecting to a unix socket by path,
//! and before ABI 10 not UDP. So a confined program gets `EACCES` from `socket(AF_UNIX, ...)`
//! always (the town's Redis socket, an ssh or docker agent), and from every `socket` call when
//! its grant allows no network at all. `socketpair` (pipes between a program's own processes)
//! stays allowed. `io_uring_setup` gets `EPERM`, since io_uring could open sockets past the
//! filter. A syscall of another architecture (32-bit, x32) ends the process.

/// `AUDIT_ARCH_*` of the architecture the filter checks against.
#[cfg(target_arch = "x86_64")]
const ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const ARCH: u32 = 0xC000_00B7;
/// x32 syscalls have this bit set in their number (x86_64 only).
const X32_BIT: u32 = 0x4000_0000;

// Offsets into `struct seccomp_data`: nr, arch, then (after the instruction pointer) args.
const NR: u32 = 0;
const ARCH_OFFSET: u32 = 4;
/// The low 32 bits of args[0] (little-endian).
const ARG0: u32 = 16;

const LD: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JGE: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

fn op(code: u16, k: u32) -> libc::sock_filter {
    jump(code, k, 0, 0)
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// The filter; with `no_network`, every `socket` call is refused.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub fn filter(no_network: bool) -> Result<Vec<libc::sock_filter>, String> {
    let kill = libc::SECCOMP_RET_KILL_PROCESS;
    let allow = libc::SECCOMP_RET_ALLOW;
    let refuse = |errno: i32| libc::SECCOMP_RET_ERRNO | (errno as u32 & libc::SECCOMP_RET_DATA);
    let mut f = vec![
        op(LD, ARCH_OFFSET),                              // 0
        jump(JEQ, ARCH, 1, 0),                            // 1: ours -> 3
        op(RET, kill),                                    // 2
        op(LD, NR),                                       // 3
        jump(JGE, X32_BIT, 0, 1),                         // 4: x32 -> 5, else 6
        op(RET, kill),                                    // 5
        jump(JEQ, libc::SYS_io_uring_setup as u32, 0, 1), // 6 -> 7, else 8
        op(RET, refuse(libc::EPERM)),                     // 7
        jump(JEQ, libc::SYS_socket as u32, 1, 0),         // 8: socket -> 10
        op(RET, allow),                                   // 9
        op(LD, ARG0),                                     // 10: the domain
    ];
    if no_network {
        f.push(op(RET, refuse(libc::EACCES))); // 11
    } else {
        f.push(jump(JEQ, libc::AF_UNIX as u32, 0, 1)); // 11: unix -> 12, else 13
        f.push(op(RET, refuse(libc::EACCES))); // 12
        f.push(op(RET, allow)); // 13
    }
    Ok(f)
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub fn filter(_no_network: bool) -> Result<Vec<libc::sock_filter>, String> {
    Err("the exec sandbox's seccomp filter is written for x86_64 and aarch64 only".into())
}
