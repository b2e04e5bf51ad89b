//! Fiber stacks kept for the next instance.
//!
//! Every instance runs its calls on a native stack of its own (wasmtime's async fibers: a guest
//! waiting on the town is a suspended fiber). Wasmtime maps a fresh stack for each new store
//! and unmaps it when the store goes. A big town makes and drops an instance each time an agent
//! gets mail past `[host] max_instances`: at 10,000 busy agents that is 10,000 stacks mapped,
//! faulted in page by page and unmapped per turn, ~5% of the host's CPU (perf: `mmap`,
//! `mprotect`, `munmap` and its TLB shootdowns). A dropped stack goes back to a short free list
//! instead, mapped and with its pages in, and the next instance takes it.
//!
//! A stack is the host's, never the guest's: a guest reaches only its linear memory, so a
//! stack's old contents are as unreachable to the next instance as they are to the last
//! (wasmtime's pooling allocator reuses stacks in the same way). A stack asked for zeroed is
//! never a reused one.

use std::ops::Range;
use std::sync::{Arc, Mutex};

use wasmtime::{StackCreator, StackMemory};

/// Free stacks kept at most: enough for drops and creations that alternate, as they do when
/// agents take turns at the slots; each holds the pages its calls touched.
const KEPT: usize = 32;

/// The free list, shared by the engine's stack creator and every stack it made.
#[derive(Default)]
pub(super) struct Stacks {
    free: Mutex<Vec<Mapping>>,
}

/// One mapping: a guard page, then the stack.
struct Mapping {
    base: *mut u8,
    len: usize,
}

// SAFETY: a mapping is plain memory owned by whoever holds the `Mapping`.
unsafe impl Send for Mapping {}
unsafe impl Sync for Mapping {}

impl Mapping {
    fn new(size: usize) -> anyhow::Result<Mapping> {
        let page = page_size();
        let len = whole_pages(size) + page;
        // SAFETY: a new anonymous mapping, inaccessible until the stack part is opened below.
        unsafe {
            let base = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if base == libc::MAP_FAILED {
                anyhow::bail!("mapping a fiber stack: {}", std::io::Error::last_os_error());
            }
            let stack = (base as *mut u8).add(page).cast();
            if libc::mprotect(stack, len - page, libc::PROT_READ | libc::PROT_WRITE) != 0 {
                let e = std::io::Error::last_os_error();
                libc::munmap(base, len);
                anyhow::bail!("opening a fiber stack: {e}");
            }
            Ok(Mapping {
                base: base.cast(),
                len,
            })
        }
    }

    /// The usable size (without the guard page).
    fn size(&self) -> usize {
        self.len - page_size()
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping is ours and no stack of it is in use any more.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

/// `size` rounded up to whole pages, at least one: a stack's usable size.
fn whole_pages(size: usize) -> usize {
    let page = page_size();
    size.div_ceil(page).max(1) * page
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).max(4096) as usize
}

/// The engine's stack creator (`wasmtime::Config::with_host_stack`).
pub(super) struct Creator(pub(super) Arc<Stacks>);

// SAFETY: every stack it returns is page-aligned, has a guard page below it, and is mapped
// until the `Stack` is dropped (then it is either unmapped or kept for a later `Stack`).
unsafe impl StackCreator for Creator {
    fn new_stack(&self, size: usize, zeroed: bool) -> wasmtime::Result<Box<dyn StackMemory>> {
        let wanted = whole_pages(size);
        let reused = (!zeroed)
            .then(|| {
                let mut free = self.0.free.lock().unwrap_or_else(|p| p.into_inner());
                let at = free.iter().position(|m| m.size() == wanted)?;
                Some(free.swap_remove(at))
            })
            .flatten();
        let mapping = match reused {
            Some(m) => m,
            None => Mapping::new(size).map_err(|e| wasmtime::Error::msg(e.to_string()))?,
        };
        Ok(Box::new(Stack {
            mapping: Some(mapping),
            stacks: self.0.clone(),
        }))
    }
}

/// A stack in use; dropped, its mapping goes back to the free list while that is short.
struct Stack {
    mapping: Option<Mapping>,
    stacks: Arc<Stacks>,
}

impl Stack {
    fn mapping(&self) -> &Mapping {
        self.mapping
            .as_ref()
            .expect("a stack in use has its mapping")
    }
}

// SAFETY: the ranges below lie in the mapping this stack holds until it is dropped.
unsafe impl StackMemory for Stack {
    fn top(&self) -> *mut u8 {
        let m = self.mapping();
        m.base.wrapping_add(m.len)
    }

    fn range(&self) -> Range<usize> {
        let m = self.mapping();
        m.base as usize + page_size()..m.base as usize + m.len
    }

    fn guard_range(&self) -> Range<*mut u8> {
        let m = self.mapping();
        m.base..m.base.wrapping_add(page_size())
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let Some(m) = self.mapping.take() else { return };
        let mut free = self.stacks.free.lock().unwrap_or_else(|p| p.into_inner());
        if free.len() < KEPT {
            free.push(m);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_stack_is_the_next_one_and_the_free_list_stays_short() {
        let stacks = Arc::new(Stacks::default());
        let creator = Creator(stacks.clone());
        let s = creator.new_stack(64 << 10, false).unwrap();
        let (range, top) = (s.range(), s.top());
        assert_eq!(top as usize, range.end);
        assert_eq!(s.guard_range().end as usize, range.start);
        assert!(range.len() >= 64 << 10);
        // Its memory is there to write on, right below the top.
        // SAFETY: inside the stack's writable range.
        unsafe { top.sub(8).write_bytes(0xab, 8) };
        drop(s);
        let again = creator.new_stack(64 << 10, false).unwrap();
        assert_eq!(again.range(), range, "the free stack is taken again");
        // Zeroed stacks and other sizes are new mappings.
        let zeroed = creator.new_stack(64 << 10, true).unwrap();
        assert_ne!(zeroed.range(), range);
        // SAFETY: inside the new stack's writable range.
        assert_eq!(unsafe { zeroed.top().sub(8).read() }, 0);
        drop(again);
        let other = creator.new_stack(128 << 10, false).unwrap();
        assert_ne!(other.range(), range);
        let many: Vec<_> = (0..KEPT + 10)
            .map(|_| creator.new_stack(64 << 10, false).unwrap())
            .collect();
        drop(many);
        assert_eq!(stacks.free.lock().unwrap().len(), KEPT);
    }
}
