//! The size classes of [`SlabHeap`](crate::SlabHeap).
//!
//! Steps of 8 bytes up to 32, of 16 up to 128, then four classes per power of two up to
//! [`MAX_SMALL`] (128 KiB), 50 classes in all. Internal fragmentation is bounded:
//! - a request of at most 128 bytes wastes at most 15 bytes;
//! - a larger request `n` gets a block smaller than `1.25 n` (it lies above some power of
//!   two `p` and the next class is at most `p / 4` above `p`), so at most 20 % of a block
//!   is waste.
//!
//! A class's objects are aligned to the largest power of two dividing its size (capped
//! at 4096); a request with a larger alignment moves up to the first class that has it.
//!
//! The classes above 16 KiB (as mimalloc's medium and jemalloc's largest small classes)
//! keep blocks that programs allocate and free over and over off the system calls of
//! `MmapAlloc`: their objects come from slabs and per-thread magazines like all others.
//! Their slabs are bigger (see `heap_class_geometry` in the slab module: 512 KiB to 2 MiB,
//! at least eight objects each), and, carved lazily, commit only the objects used.
//! Requests above [`MAX_SMALL`] get a mapping of their own, which `realloc` grows with
//! `mremap` instead of copying.

/// The largest class of the small and medium tables; the classes above it (to
/// [`MAX_SMALL`]) are the large classes, with bigger slabs and smaller caches.
pub const MAX_MEDIUM: usize = 16 * 1024;

/// The largest request served by size classes; larger ones go to `MmapAlloc`.
pub const MAX_SMALL: usize = 128 * 1024;

/// Every class size, ascending.
pub const CLASS_SIZES: [usize; CLASS_COUNT] = [
    8, 16, 24, 32, 48, 64, 80, 96, 112, 128, // steps of 8, then 16
    160, 192, 224, 256, 320, 384, 448, 512, 640, 768, 896, 1024, // four per doubling
    1280, 1536, 1792, 2048, 2560, 3072, 3584, 4096, 5120, 6144, 7168, 8192, 10240, 12288, 14336,
    16384, 20480, 24576, 28672, 32768, 40960, 49152, 57344, 65536, 81920, 98304, 114688, 131072,
];

/// Number of size classes.
pub const CLASS_COUNT: usize = 50;

/// The alignment every object of class `index` has.
pub const fn class_align(index: usize) -> usize {
    let size = CLASS_SIZES[index];
    let natural = 1 << size.trailing_zeros();
    if natural > 4096 { 4096 } else { natural }
}

/// Class of sizes 1..=1024, indexed by `(size + 7) / 8`: for alignments up to 8 (row
/// 0) and for 16 (row 1, the classes of 8 and 24 bytes skipped).
static SMALL_TABLE: [[u8; 129]; 2] = [build_table::<129>(8, 8), build_table::<129>(8, 16)];
/// Class of sizes 1025..=16384, indexed by `(size + 127) / 128` (rows as above).
static MEDIUM_TABLE: [[u8; 129]; 2] = [build_table::<129>(128, 8), build_table::<129>(128, 16)];
/// Class of sizes 16385..=131072, indexed by `(size + 1023) / 1024` (rows as above).
static LARGE_TABLE: [[u8; 129]; 2] = [build_table::<129>(1024, 8), build_table::<129>(1024, 16)];

/// The smallest class of objects aligned to at least `align` for each size `index *
/// step`.
const fn build_table<const N: usize>(step: usize, align: usize) -> [u8; N] {
    let mut table = [0u8; N];
    let mut index = 0;
    while index < N {
        let size = index * step;
        let mut class = 0;
        while CLASS_SIZES[class] < size || class_align(class) < align {
            class += 1;
        }
        table[index] = class as u8;
        index += 1;
    }
    table
}

/// The smallest class whose objects hold `size` bytes and are aligned to 16, for sizes
/// up to 1024 (0 included: the class of 16 bytes); `None` above. What
/// [`class_for`]`(size.max(1), 16)` gives, in one table lookup with no other test: the
/// fast path of C's `malloc`, whose blocks are all aligned to 16.
///
/// # Examples
///
/// ```
/// use pagekeep_slab::size_class::{CLASS_SIZES, class_for, class_up_to_1024_aligned_16};
///
/// assert_eq!(class_up_to_1024_aligned_16(24).map(|class| CLASS_SIZES[usize::from(class)]), Some(32));
/// assert_eq!(class_up_to_1024_aligned_16(0), class_for(1, 16).map(|class| class as u8));
/// assert_eq!(class_up_to_1024_aligned_16(1025), None);
/// ```
#[inline(always)]
pub fn class_up_to_1024_aligned_16(size: usize) -> Option<u8> {
    if size > 1024 {
        return None;
    }
    Some(SMALL_TABLE[1][(size + 7) >> 3])
}

/// The smallest class whose size holds `size` bytes and whose objects are aligned to
/// `align`, or `None` for large requests (above [`MAX_SMALL`] or aligned to more than a
/// page).
///
/// Alignments up to 16 (every block of the C ABI, most Rust types) take one table
/// lookup; larger ones then walk up to the first class aligned enough.
#[inline(always)]
pub fn class_for(size: usize, align: usize) -> Option<usize> {
    let row = usize::from(align > 8);
    let mut class = if size <= 1024 {
        SMALL_TABLE[row][(size + 7) >> 3] as usize
    } else {
        // Off the straight line: without the hint the three table lookups became
        // conditional moves, which every small request paid for (a C `malloc` of a
        // size unknown at compile time).
        core::hint::cold_path();
        if size <= MAX_MEDIUM {
            MEDIUM_TABLE[row][(size + 127) >> 7] as usize
        } else if size <= MAX_SMALL {
            LARGE_TABLE[row][(size + 1023) >> 10] as usize
        } else {
            return None;
        }
    };
    if align > 16 {
        if align > 4096 {
            return None;
        }
        while class_align(class) < align {
            class += 1;
            if class == CLASS_COUNT {
                return None;
            }
        }
    }
    Some(class)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_size_gets_the_smallest_fitting_class_within_the_bound() {
        for size in 1..=MAX_SMALL {
            let class = class_for(size, 1).unwrap();
            let block = CLASS_SIZES[class];
            assert!(block >= size);
            assert!(class == 0 || CLASS_SIZES[class - 1] < size);
            if size <= 128 {
                assert!(block - size <= 15, "{size} -> {block}");
            } else {
                assert!(block * 4 < size * 5, "{size} -> {block}");
            }
        }
        assert_eq!(class_for(MAX_SMALL + 1, 1), None);
        assert_eq!(class_for(usize::MAX, 1), None);
        assert_eq!(class_for(0, 1), Some(0));
    }

    #[test]
    fn the_table_ascends_to_max_small_with_four_classes_per_doubling() {
        assert!(CLASS_SIZES.windows(2).all(|pair| pair[0] < pair[1]));
        assert_eq!(CLASS_SIZES[CLASS_COUNT - 1], MAX_SMALL);
        for power in 8..MAX_SMALL.trailing_zeros() {
            let (low, high) = (1usize << power, 2usize << power);
            let between = CLASS_SIZES
                .iter()
                .filter(|&&size| size > low && size <= high)
                .count();
            assert_eq!(between, 4, "classes in ({low}, {high}]");
        }
        // The classes above 16 KiB, exactly.
        assert_eq!(
            CLASS_SIZES[38..],
            [
                20480, 24576, 28672, 32768, 40960, 49152, 57344, 65536, 81920, 98304, 114688,
                131072
            ]
        );
    }

    #[test]
    fn requests_between_16_and_128_kib_get_their_class_bound() {
        for (size, block) in [
            (MAX_MEDIUM + 1, 20480),
            (20480, 20480),
            (20481, 24576),
            (40 * 1024, 40960),
            (40 * 1024 + 1, 49152),
            (64 * 1024, 65536),
            (64 * 1024 + 1, 81920),
            (100_000, 114688),
            (114689, 131072),
            (MAX_SMALL, MAX_SMALL),
        ] {
            let class = class_for(size, 8).unwrap();
            assert_eq!(CLASS_SIZES[class], block, "request of {size}");
            assert!(block * 4 < size * 5 || size == block, "{size} -> {block}");
            assert_eq!(class_align(class), 4096);
            assert_eq!(class_for(size, 4096), Some(class));
        }
        assert_eq!(class_for(MAX_SMALL + 1, 8), None);
        assert_eq!(class_for(20000, 8192), None);
    }

    #[test]
    fn every_class_has_a_slab_of_at_least_eight_objects_and_little_slack() {
        use crate::slab::{
            Geometry, MAX_SLAB_BYTES, MIN_OBJECTS_PER_SLAB, SLAB_BYTES, heap_class_geometry,
        };
        for (index, &size) in CLASS_SIZES.iter().enumerate() {
            let align = class_align(index);
            let geometry = heap_class_geometry(size, align).unwrap();
            let slab_bytes = geometry.slab_bytes;
            // (Debug builds give a free object a second word, its free tag.)
            let word = size_of::<*mut u8>();
            assert_eq!(geometry.slot_size, size.max(crate::slab::FREE_WORDS * word));
            assert!(
                geometry.capacity >= MIN_OBJECTS_PER_SLAB,
                "{size}: {geometry:?}"
            );
            assert!(slab_bytes <= MAX_SLAB_BYTES);
            if size <= MAX_MEDIUM {
                // The small classes keep their slabs.
                assert_eq!(slab_bytes, SLAB_BYTES, "{size}");
            }
            // The slab is the smallest that holds eight: half of it would not.
            if slab_bytes > SLAB_BYTES {
                let half = Geometry::with_slab_bytes(size, align, false, slab_bytes / 2);
                assert!(half.is_none_or(|half| half.capacity < MIN_OBJECTS_PER_SLAB));
            }
            // Space after the last object (never touched, so never resident) is less
            // than one object plus the header page.
            let slot = geometry.slot_size;
            let used = geometry.first_offset + geometry.capacity * slot;
            assert!(slab_bytes - used < slot, "{size}: {geometry:?}");
        }
    }

    #[test]
    fn the_tables_for_16_byte_alignment_give_the_smallest_class_aligned_to_16() {
        for size in 1..=MAX_SMALL {
            let class = class_for(size, 16).unwrap();
            assert!(
                class_align(class) >= 16 && CLASS_SIZES[class] >= size,
                "{size}"
            );
            let smaller = (0..class).find(|&c| CLASS_SIZES[c] >= size && class_align(c) >= 16);
            assert_eq!(smaller, None, "{size}");
        }
    }

    #[test]
    fn the_c_table_gives_what_class_for_gives_for_16_byte_alignment() {
        for size in 0..=2048 {
            let expected = (size <= 1024).then(|| class_for(size.max(1), 16).unwrap() as u8);
            assert_eq!(class_up_to_1024_aligned_16(size), expected, "{size}");
        }
    }

    #[test]
    fn aligned_requests_get_aligned_classes() {
        for align in [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096] {
            for size in [1, 7, 24, 100, 1000, 5000, 20000, 40000, 100_000, MAX_SMALL] {
                if let Some(class) = class_for(size, align) {
                    assert!(class_align(class) >= align && CLASS_SIZES[class] >= size);
                }
            }
        }
        assert_eq!(class_for(8, 8192), None);
    }
}
