//! The Landlock ruleset of a [`Confinement`]: every access right the kernel knows is handled,
//! and only its rules allow any. A rule holds the inode its path led to when it was added, so
//! a ruleset is reused for the next program only while every path still leads to the same
//! inode (one `stat` each); otherwise it is built again. That keeps a replaced working
//! directory or `/etc/resolv.conf` working, and the cost per exec low.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ::landlock::{
    Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, NetPort, PathBeneath, PathFd,
    Ruleset, RulesetAttr, RulesetCreated, RulesetCreatedAttr, Scope, ABI,
};

use super::sandbox::{Confinement, Network};

/// Readable (and executable) by every confined program, when they exist: the programs and
/// libraries, and the kernel's views of the process and the machine.
pub const SYSTEM: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/opt", "/proc", "/sys",
];

/// The parts of /etc that dynamic linking, name lookups, TLS and basic tools read. Not there:
/// shadow files, ssh host keys, ssl/private, sudoers and the like.
pub const ETC: &[&str] = &[
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "ld.so.preload",
    "passwd",
    "group",
    "nsswitch.conf",
    "hosts",
    "host.conf",
    "resolv.conf",
    "gai.conf",
    "services",
    "protocols",
    "networks",
    "localtime",
    "timezone",
    "ssl/certs",
    "ssl/openssl.cnf",
    "ca-certificates",
    "ca-certificates.conf",
    "pki/tls/certs",
    "crypto-policies",
    "alternatives",
    "environment",
    "profile",
    "profile.d",
    "bash.bashrc",
    "inputrc",
    "terminfo",
    "mime.types",
    "magic",
    "gitconfig",
    "os-release",
    "lsb-release",
    "debian_version",
    "locale.alias",
    "locale.conf",
    "default/locale",
    "shells",
    "login.defs",
    "python3",
    "pip.conf",
    "npmrc",
    "vim",
    "nanorc",
];

/// Devices any program may open for reading and writing.
const DEVICES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
    "/dev/ptmx",
    "/dev/pts",
];

/// The Landlock ABI this kernel offers (0: none), from `landlock_create_ruleset`'s version
/// query.
pub fn kernel_abi() -> u32 {
    // SAFETY: the version query takes no attribute (NULL, size 0) and touches no memory.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            1u32, // LANDLOCK_CREATE_RULESET_VERSION
        )
    };
    u32::try_from(v).unwrap_or(0)
}

/// Each path of `c` with the access it gets, in a fixed order.
fn rules(c: &Confinement, abi: ABI) -> Vec<(PathBuf, BitFlags<AccessFs>)> {
    let all = AccessFs::from_all(abi);
    let read = AccessFs::from_read(abi);
    let dev = read | ((AccessFs::WriteFile | AccessFs::Truncate | AccessFs::IoctlDev) & all);
    let system = SYSTEM.iter().map(|p| (PathBuf::from(p), read));
    let etc = ETC.iter().map(|p| (Path::new("/etc").join(p), read));
    let devices = DEVICES.iter().map(|p| (PathBuf::from(p), dev));
    let listed = c.read.iter().map(|p| (p.clone(), read));
    let writable = c.write.iter().map(|p| (p.clone(), all));
    system
        .chain(etc)
        .chain(devices)
        .chain(listed)
        .chain(writable)
        .collect()
}

/// The inode a path leads to now (symlinks followed, as the rule's descriptor is opened).
type Identity = Option<(u64, u64)>;

fn identity(p: &Path) -> Identity {
    std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()))
}

/// Rulesets built, with the identities of their paths then.
struct Built {
    confinement: Confinement,
    identities: Vec<Identity>,
    fd: Arc<OwnedFd>,
}

static BUILT: Mutex<Vec<Built>> = Mutex::new(Vec::new());

/// The ruleset of `c`, reused while its paths lead where they did. Err when the kernel lacks
/// the ABI `c` needs or Landlock refuses a rule: the program must then not run.
pub fn ruleset(c: &Confinement) -> Result<Arc<OwnedFd>, String> {
    let kernel = kernel_abi();
    if kernel < c.abi {
        return Err(format!(
            "this kernel offers Landlock ABI {kernel}, the grant needs {}",
            c.abi
        ));
    }
    let abi = ABI::from(kernel as i32);
    let rules = rules(c, abi);
    let identities: Vec<Identity> = rules.iter().map(|(p, _)| identity(p)).collect();
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(b) = built
        .iter()
        .find(|b| b.confinement == *c && b.identities == identities)
    {
        return Ok(b.fd.clone());
    }
    let fd = Arc::new(build(c, abi, &rules)?);
    built.retain(|b| b.confinement != *c);
    built.push(Built {
        confinement: c.clone(),
        identities,
        fd: fd.clone(),
    });
    Ok(fd)
}

fn build(
    c: &Confinement,
    abi: ABI,
    rules: &[(PathBuf, BitFlags<AccessFs>)],
) -> Result<OwnedFd, String> {
    let e = |e: ::landlock::RulesetError| format!("landlock: {e}");
    let mut rs = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_all(abi))
        .map_err(e)?;
    if c.network != Network::Full {
        rs = rs.handle_access(AccessNet::from_all(abi)).map_err(e)?;
    }
    let scopes = Scope::from_all(abi);
    if !scopes.is_empty() {
        rs = rs.scope(scopes).map_err(e)?;
    }
    let mut created = rs.create().map_err(e)?;
    for (path, access) in rules {
        created = allow(created, path, *access, abi)?;
    }
    if let Network::Ports(ports) = &c.network {
        for port in ports {
            created = created
                .add_rule(NetPort::new(*port, AccessNet::ConnectTcp))
                .map_err(e)?;
        }
    }
    Option::<OwnedFd>::from(created).ok_or_else(|| "landlock is not available".to_string())
}

/// Allows `access` beneath `path` (the file rights only, for a file). A path that does not
/// exist (any more) is skipped: that is less access, never more.
fn allow(
    created: RulesetCreated,
    path: &Path,
    access: BitFlags<AccessFs>,
    abi: ABI,
) -> Result<RulesetCreated, String> {
    let Ok(fd) = PathFd::new(path) else {
        return Ok(created);
    };
    let access = if is_dir(&fd) {
        access
    } else {
        access & AccessFs::from_file(abi)
    };
    created
        .add_rule(PathBeneath::new(fd, access))
        .map_err(|e| format!("landlock rule for {}: {e}", path.display()))
}

fn is_dir(fd: &PathFd) -> bool {
    // SAFETY: fstat writes into the struct we pass; the descriptor is open (O_PATH allows it).
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstat(fd.as_fd().as_raw_fd(), &mut st) == 0
            && st.st_mode & libc::S_IFMT == libc::S_IFDIR
    }
}
