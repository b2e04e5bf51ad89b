//! A file's stamp: what tells one version of a file from the next without reading it (size,
//! inode, modification and change times to the nanosecond), as git's index keeps them. Used
//! where reading the file every time costs what the caller is trying to save: the cut of a big
//! `tinytown.toml` (`config_cut.rs`) and a plugin's digest (`runtime::plugin`).
//!
//! The change time is set by the kernel on every write, so a tool that restores the
//! modification time still changes the stamp. But the kernel's clock for file times ticks
//! coarsely (a few milliseconds), so two writes in one tick can share a stamp: a stamp taken
//! within [`SETTLE`] of the file's last change is not `settled`, and callers do not trust it,
//! as git treats "racily clean" files.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long after a change a file's stamp is not trusted (far above a kernel clock tick).
pub const SETTLE: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    /// The stamp as one line of text (it is kept in files too).
    pub text: String,
    /// Unchanged long enough for the stamp to tell it from the next version.
    pub settled: bool,
}

impl Stamp {
    /// The stamp of the file at `path`; `None` when it cannot be read.
    pub fn of(path: &Path) -> Option<Stamp> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        let changed = UNIX_EPOCH + Duration::new(m.ctime().max(0) as u64, m.ctime_nsec() as u32);
        let settled = SystemTime::now()
            .duration_since(changed)
            .is_ok_and(|age| age > SETTLE);
        let text = format!(
            "{} {} {}.{} {}.{}",
            m.len(),
            m.ino(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec()
        );
        Some(Stamp { text, settled })
    }
}

#[cfg(test)]
mod tests {
    use super::{Stamp, SETTLE};

    #[test]
    fn a_write_changes_the_stamp_and_settles_after_a_while() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "one").unwrap();
        let first = Stamp::of(&path).unwrap();
        assert!(!first.settled, "just written");
        std::thread::sleep(SETTLE * 2);
        let settled = Stamp::of(&path).unwrap();
        assert!(settled.settled);
        assert_eq!(settled.text, first.text);
        std::fs::write(&path, "two").unwrap();
        assert_ne!(Stamp::of(&path).unwrap().text, settled.text);
        assert!(Stamp::of(&dir.path().join("missing")).is_none());
    }
}
