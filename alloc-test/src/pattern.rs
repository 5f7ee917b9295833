//! The corruption detector: every live block carries bytes derived from a tag (its
//! address at the time it was filled, mixed with the run's random seed), so a block that
//! was moved without its contents, overwritten by a neighbour, handed out twice or never
//! filled shows up as a wrong byte, with the offset where it differs.

use core::ptr::NonNull;

/// A block's tag: its address when filled, mixed with the run's seed.
pub fn tag(address: usize, seed: u64) -> u64 {
    let mut x = (address as u64) ^ seed.rotate_left(17);
    // SplitMix64 finaliser: neighbouring addresses get unrelated tags.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The 8 bytes at `8 * index` of a block tagged `tag`, as a little-endian word.
#[inline]
fn word(tag: u64, index: usize) -> u64 {
    let mut x = tag.wrapping_add((index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    x = (x ^ (x >> 32)).wrapping_mul(0xd6e8_feb8_6659_fd93);
    x ^ (x >> 32)
}

/// The byte at `offset` of a block tagged `tag`.
#[inline]
pub fn byte(tag: u64, offset: usize) -> u8 {
    word(tag, offset / 8).to_le_bytes()[offset % 8]
}

/// Writes the pattern of `tag` over `range` of a block (word by word where it can).
///
/// # Safety
/// - `ptr + range.start .. ptr + range.end` is writable.
pub unsafe fn fill(ptr: NonNull<u8>, range: core::ops::Range<usize>, tag: u64) {
    let mut offset = range.start;
    while offset < range.end {
        if offset.is_multiple_of(8) && offset + 8 <= range.end {
            // SAFETY: eight bytes inside the writable range (caller).
            unsafe {
                ptr.add(offset)
                    .cast::<u64>()
                    .write_unaligned(word(tag, offset / 8).to_le())
            };
            offset += 8;
        } else {
            // SAFETY: inside the writable range (caller).
            unsafe { ptr.add(offset).write(byte(tag, offset)) };
            offset += 1;
        }
    }
}

/// The first offset in `range` whose byte differs from the pattern, with the byte found.
///
/// # Safety
/// - `ptr + range.start .. ptr + range.end` is readable.
pub unsafe fn first_difference(
    ptr: NonNull<u8>,
    range: core::ops::Range<usize>,
    tag: u64,
) -> Option<(usize, u8)> {
    let mut offset = range.start;
    while offset < range.end {
        if offset.is_multiple_of(8) && offset + 8 <= range.end {
            // SAFETY: eight bytes inside the readable range (caller).
            let found = unsafe { ptr.add(offset).cast::<u64>().read_unaligned() };
            if found == word(tag, offset / 8).to_le() {
                offset += 8;
                continue;
            }
        }
        // SAFETY: inside the readable range (caller).
        let found = unsafe { ptr.add(offset).read() };
        if found != byte(tag, offset) {
            return Some((offset, found));
        }
        offset += 1;
    }
    None
}

/// The first offset of `ptr..ptr + len` that is not zero.
///
/// # Safety
/// - `ptr..ptr + len` is readable.
pub unsafe fn first_difference_from_zero(ptr: NonNull<u8>, len: usize) -> Option<usize> {
    let mut offset = 0;
    while offset < len {
        if offset + 8 <= len {
            // SAFETY: eight bytes inside the readable range (caller).
            if unsafe { ptr.add(offset).cast::<u64>().read_unaligned() } == 0 {
                offset += 8;
                continue;
            }
        }
        // SAFETY: inside the readable range (caller).
        if unsafe { ptr.add(offset).read() } != 0 {
            return Some(offset);
        }
        offset += 1;
    }
    None
}
