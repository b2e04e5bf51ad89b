//! `memcpy` and `memmove` for the static musl build of `tt`.
//!
//! `tt` is built against musl and linked statically (`.cargo/config.toml` says why: a command
//! starts in half the time). musl's x86_64 `memcpy` copies with `rep movsq` between byte-at-a-
//! time loops for the unaligned head and the tail, and its `memmove` calls it: cheap in code,
//! slow for the short and medium copies a host makes by the million (Redis replies, JSON,
//! moved values). In a busy 10,000-agent town (`tt bench scale`) it was a quarter of the
//! host's CPU samples, and the host's CPU per message was 51-54 µs against 41-43 with glibc.
//!
//! These replace musl's (a static link takes the first definition, and musl's `memmove` is
//! only linked when nothing else defines it): up to 64 bytes are copied with unaligned loads
//! that all happen before the stores (so overlapping copies are right too), longer ones with
//! `rep movsb`, which CPUs with ERMS/FSRM (Intel since Ivy Bridge, AMD since Zen 3) run at
//! full speed. A backward `memmove` (the destination overlaps the source from above) uses
//! `rep movsb` with the direction flag set, as musl does.
//!
//! The bodies use no loops, so the compiler cannot turn them back into calls to themselves.

use core::arch::asm;
use core::ptr::{read_unaligned as load, write_unaligned as store};

/// Copies `n` bytes, `n <= 64`, reading all of them before writing any.
#[inline(always)]
unsafe fn short(dst: *mut u8, src: *const u8, n: usize) {
    if n >= 32 {
        let (a, b) = (load(src as *const u128), load(src.add(16) as *const u128));
        let (c, d) = (
            load(src.add(n - 32) as *const u128),
            load(src.add(n - 16) as *const u128),
        );
        store(dst as *mut u128, a);
        store(dst.add(16) as *mut u128, b);
        store(dst.add(n - 32) as *mut u128, c);
        store(dst.add(n - 16) as *mut u128, d);
    } else if n >= 16 {
        let (a, b) = (
            load(src as *const u128),
            load(src.add(n - 16) as *const u128),
        );
        store(dst as *mut u128, a);
        store(dst.add(n - 16) as *mut u128, b);
    } else if n >= 8 {
        let (a, b) = (load(src as *const u64), load(src.add(n - 8) as *const u64));
        store(dst as *mut u64, a);
        store(dst.add(n - 8) as *mut u64, b);
    } else if n >= 4 {
        let (a, b) = (load(src as *const u32), load(src.add(n - 4) as *const u32));
        store(dst as *mut u32, a);
        store(dst.add(n - 4) as *mut u32, b);
    } else if n >= 2 {
        let (a, b) = (load(src as *const u16), load(src.add(n - 2) as *const u16));
        store(dst as *mut u16, a);
        store(dst.add(n - 2) as *mut u16, b);
    } else if n == 1 {
        *dst = *src;
    }
}

/// Copies `n` bytes from the lowest address up: right unless `dst` overlaps `src` from above.
#[inline(always)]
unsafe fn forward(dst: *mut u8, src: *const u8, n: usize) {
    if n <= 64 {
        short(dst, src, n);
    } else {
        // SAFETY: the caller's buffers; the direction flag is clear on entry (System V ABI).
        asm!(
            "rep movsb",
            inout("rcx") n => _,
            inout("rdi") dst => _,
            inout("rsi") src => _,
            options(nostack, preserves_flags),
        );
    }
}

/// `memcpy`: the buffers do not overlap.
///
/// # Safety
/// `src` is readable and `dst` writable for `n` bytes, and they do not overlap.
pub(crate) unsafe fn copy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    forward(dst, src, n);
    dst
}

/// `memmove`: the buffers may overlap.
///
/// # Safety
/// `src` is readable and `dst` writable for `n` bytes.
pub(crate) unsafe fn copy_overlapping(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if n <= 64 || (dst as usize).wrapping_sub(src as usize) >= n {
        forward(dst, src, n);
    } else {
        // `dst` overlaps `src` from above: copy from the top down, and clear the flag again.
        asm!(
            "std",
            "rep movsb",
            "cld",
            inout("rcx") n => _,
            inout("rdi") dst.add(n - 1) => _,
            inout("rsi") src.add(n - 1) => _,
            options(nostack),
        );
    }
    dst
}

#[cfg(target_env = "musl")]
mod exported {
    /// # Safety
    /// The C contract of `memcpy`.
    #[no_mangle]
    pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
        super::copy(dst, src, n)
    }

    /// # Safety
    /// The C contract of `memmove`.
    #[no_mangle]
    pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
        super::copy_overlapping(dst, src, n)
    }
}

#[cfg(test)]
mod tests {
    use super::{copy, copy_overlapping};

    /// Every length up to 300 at every offset up to 16 of both buffers, against a byte loop.
    #[test]
    fn copies_are_byte_for_byte_at_every_length_and_alignment() {
        let src: Vec<u8> = (0..400u32).map(|i| (i * 7 + 3) as u8).collect();
        for n in 0..300 {
            for so in 0..16 {
                for d_off in 0..16 {
                    let mut dst = vec![0xAAu8; 400];
                    unsafe { copy(dst.as_mut_ptr().add(d_off), src.as_ptr().add(so), n) };
                    assert_eq!(&dst[d_off..d_off + n], &src[so..so + n], "n={n} so={so}");
                    assert!(
                        dst[..d_off].iter().all(|&b| b == 0xAA),
                        "wrote before, n={n}"
                    );
                    assert!(
                        dst[d_off + n..].iter().all(|&b| b == 0xAA),
                        "wrote past, n={n}"
                    );
                }
            }
        }
    }

    /// Overlapping moves in both directions, against a copy through a separate buffer.
    #[test]
    fn overlapping_moves_match_a_byte_loop_in_both_directions() {
        for n in 0..300usize {
            for (from, to) in [
                (0, 1),
                (1, 0),
                (0, 7),
                (7, 0),
                (3, 64),
                (64, 3),
                (5, 5),
                (0, 150),
            ] {
                let mut ours: Vec<u8> = (0..500u32).map(|i| (i * 13 + 1) as u8).collect();
                let mut expected = ours.clone();
                let tmp: Vec<u8> = expected[from..from + n].to_vec();
                for (i, b) in tmp.into_iter().enumerate() {
                    expected[to + i] = b;
                }
                let p = ours.as_mut_ptr();
                unsafe { copy_overlapping(p.add(to), p.add(from), n) };
                assert_eq!(ours, expected, "n={n} from={from} to={to}");
            }
        }
    }
}
