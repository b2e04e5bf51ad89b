//! `memcpy`, `memmove` and `memcmp` for the static musl build of `tt`.
//!
//! On x86_64 Linux `tt` ships built against musl and linked statically (`.cargo/config.toml`
//! says why: a command starts in half the time). musl's x86_64 `memcpy` copies with `rep
//! movsq` between byte-at-a-time loops for the unaligned head and the tail, and its `memmove`
//! calls it: cheap in code, slow for the short and medium copies a host makes by the million
//! (Redis replies, JSON, moved values). In a busy 10,000-agent town (`tt bench scale`) it was a
//! quarter of the host's CPU samples, and the host's CPU per message was 51-54 µs against 39-44
//! with glibc. musl's `memcmp` is a byte loop.
//!
//! These replace musl's (a static link takes the first definition, and musl's `memmove` is
//! only linked when nothing else defines it): up to 64 bytes are copied with unaligned loads
//! that all happen before the stores (so overlapping copies are right too), longer ones with
//! `rep movsb`, which CPUs with ERMS/FSRM (Intel since Ivy Bridge, AMD since Zen 3) run at
//! full speed. A backward `memmove` (the destination overlaps the source from above) uses
//! `rep movsb` with the direction flag set, as musl does. `memcmp` compares eight bytes a step
//! where musl compares one.
//!
//! The copies use no loops, so the compiler cannot turn them back into calls to themselves.
//! `memcmp`'s loops are not an idiom LLVM replaces with a call: in the release build it calls
//! nothing (`objdump -d` of `tt`). Were that to change, every comparison would recurse until
//! the stack overflowed, so look there first if an optimised `tt` dies at once.

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
        two::<u128>(dst, src, n);
    } else if n >= 8 {
        two::<u64>(dst, src, n);
    } else if n >= 4 {
        two::<u32>(dst, src, n);
    } else if n >= 2 {
        two::<u16>(dst, src, n);
    } else if n == 1 {
        *dst = *src;
    }
}

/// Copies `n` bytes, `size_of::<T>() <= n <= 2 * size_of::<T>()`, as two `T`s that may
/// overlap, both read before either is written.
#[inline(always)]
unsafe fn two<T>(dst: *mut u8, src: *const u8, n: usize) {
    let k = core::mem::size_of::<T>();
    let (a, b) = (load(src as *const T), load(src.add(n - k) as *const T));
    store(dst as *mut T, a);
    store(dst.add(n - k) as *mut T, b);
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

/// `memcmp`: the first differing byte decides, as unsigned; 0 when the `n` bytes are equal.
/// Eight bytes a step (musl's compares one at a time, ~3% of a busy host's samples).
///
/// # Safety
/// `a` and `b` are readable for `n` bytes.
pub(crate) unsafe fn compare(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i + 8 <= n {
        let (x, y) = (load(a.add(i) as *const u64), load(b.add(i) as *const u64));
        if x != y {
            // Loaded little-endian: swapped, the first byte is the most significant.
            return if x.swap_bytes() < y.swap_bytes() {
                -1
            } else {
                1
            };
        }
        i += 8;
    }
    while i < n {
        let (x, y) = (*a.add(i), *b.add(i));
        if x != y {
            return x as i32 - y as i32;
        }
        i += 1;
    }
    0
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

    /// # Safety
    /// The C contract of `memcmp` (musl's `bcmp` calls it).
    #[no_mangle]
    pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
        super::compare(a, b, n)
    }
}

#[cfg(test)]
mod tests {
    use super::{compare, copy, copy_overlapping};

    /// Every length up to 40 with the first difference at every position and in both
    /// directions, against the slices' own ordering.
    #[test]
    fn compare_orders_by_the_first_differing_byte_as_unsigned() {
        let sign = |o: std::cmp::Ordering| o as i32;
        for n in 0..40usize {
            let a: Vec<u8> = (0..n as u32).map(|i| (i * 31 + 7) as u8).collect();
            assert_eq!(
                unsafe { compare(a.as_ptr(), a.clone().as_ptr(), n) },
                0,
                "n={n}"
            );
            for at in 0..n {
                for delta in [1u8, 0x80, 0xFF] {
                    let mut b = a.clone();
                    b[at] = b[at].wrapping_add(delta);
                    // A later byte differing the other way must not decide.
                    if at + 1 < n {
                        b[at + 1] = b[at + 1].wrapping_sub(1);
                    }
                    let ours = unsafe { compare(a.as_ptr(), b.as_ptr(), n) }.signum();
                    assert_eq!(ours, sign(a.cmp(&b)), "n={n} at={at} delta={delta}");
                    let back = unsafe { compare(b.as_ptr(), a.as_ptr(), n) }.signum();
                    assert_eq!(back, sign(b.cmp(&a)), "n={n} at={at} delta={delta}");
                }
            }
        }
    }

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
