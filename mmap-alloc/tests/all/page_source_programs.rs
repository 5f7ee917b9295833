//! Random programs of reserve / commit / write / decommit / release run against every page
//! source, checked against a model: alignment, no overlap, zeroed fresh memory, contents
//! kept until decommitted, zero after a zeroing decommit.

use core::ptr::NonNull;

use pagekeep_mmap::{Contents, Decommit, HeapPages, OsPages, PageSource};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Step {
    Reserve {
        pages: usize,
        align_shift: u32,
        committed: bool,
    },
    Commit {
        which: usize,
    },
    Write {
        which: usize,
        page: usize,
        value: u8,
    },
    Decommit {
        which: usize,
        page: usize,
        zero: bool,
    },
    Release {
        which: usize,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (1..6usize, 0..5u32, any::<bool>()).prop_map(|(pages, align_shift, committed)| {
            Step::Reserve {
                pages,
                align_shift,
                committed,
            }
        }),
        any::<usize>().prop_map(|which| Step::Commit { which }),
        (any::<usize>(), any::<usize>(), 1..=255u8).prop_map(|(which, page, value)| Step::Write {
            which,
            page,
            value
        }),
        (any::<usize>(), any::<usize>(), any::<bool>())
            .prop_map(|(which, page, zero)| Step::Decommit { which, page, zero }),
        any::<usize>().prop_map(|which| Step::Release { which }),
    ]
}

/// What the model knows of one reservation.
struct Reservation {
    ptr: NonNull<u8>,
    len: usize,
    align: usize,
    committed: bool,
    /// The value each page's first byte must hold; `None` when unspecified.
    first_bytes: Vec<Option<u8>>,
}

fn run<S: PageSource>(source: &S, steps: &[Step]) {
    let page = source.page_size();
    let mut live: Vec<Reservation> = Vec::new();
    for step in steps {
        match *step {
            Step::Reserve {
                pages,
                align_shift,
                committed,
            } => {
                let (len, align) = (pages * page, page << align_shift);
                let ptr = if committed {
                    source.reserve_committed(len, align)
                } else {
                    source.reserve(len, align)
                }
                .unwrap();
                assert_eq!(ptr.addr().get() % align, 0, "aligned to {align}");
                let range = ptr.addr().get()..ptr.addr().get() + len;
                for other in &live {
                    let other_start = other.ptr.addr().get();
                    assert!(
                        range.end <= other_start || other_start + other.len <= range.start,
                        "overlap"
                    );
                }
                live.push(Reservation {
                    ptr,
                    len,
                    align,
                    committed,
                    first_bytes: vec![Some(0); pages],
                });
            }
            Step::Commit { which } if !live.is_empty() => {
                let count = live.len();
                let reservation = &mut live[which % count];
                // SAFETY: the whole of a live reservation of this source.
                unsafe { source.commit(reservation.ptr, reservation.len) }.unwrap();
                reservation.committed = true;
            }
            Step::Write {
                which,
                page: index,
                value,
            } if !live.is_empty() => {
                let count = live.len();
                let reservation = &mut live[which % count];
                if reservation.committed {
                    let index = index % reservation.first_bytes.len();
                    // SAFETY: a committed page of a live reservation.
                    unsafe { reservation.ptr.add(index * page).write(value) };
                    reservation.first_bytes[index] = Some(value);
                }
            }
            Step::Decommit {
                which,
                page: index,
                zero,
            } if !live.is_empty() => {
                let count = live.len();
                let reservation = &mut live[which % count];
                let index = index % reservation.first_bytes.len();
                let mode = if zero { Decommit::Zero } else { Decommit::Lazy };
                // SAFETY: one page of a live reservation whose contents the model drops.
                let contents =
                    unsafe { source.decommit(reservation.ptr.add(index * page), page, mode) }
                        .unwrap();
                if zero {
                    assert_eq!(contents, Contents::Zeroed);
                }
                reservation.first_bytes[index] = if contents == Contents::Zeroed {
                    Some(0)
                } else {
                    None
                };
            }
            Step::Release { which } if !live.is_empty() => {
                let reservation = live.swap_remove(which % live.len());
                check(&reservation, page);
                // SAFETY: a whole live reservation, released once.
                unsafe { source.release(reservation.ptr, reservation.len, reservation.align) }
                    .unwrap();
            }
            _ => {}
        }
    }
    for reservation in live {
        check(&reservation, page);
        // SAFETY: as above.
        unsafe { source.release(reservation.ptr, reservation.len, reservation.align) }.unwrap();
    }
}

/// Checks the first byte of every page of a committed reservation against the model.
fn check(reservation: &Reservation, page: usize) {
    if !reservation.committed {
        return;
    }
    for (index, expected) in reservation.first_bytes.iter().enumerate() {
        if let Some(expected) = *expected {
            // SAFETY: a committed page of a live reservation.
            let actual = unsafe { reservation.ptr.add(index * page).read() };
            assert_eq!(actual, expected, "page {index}");
        }
    }
}

/// One more than the longest program's steps: shorter under miri, where these two tests
/// took about a minute of CI's time between them with programs of up to 39 steps.
fn max_steps() -> usize {
    if cfg!(miri) { 20 } else { 40 }
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: if cfg!(miri) { 4 } else { 64 },
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn os_pages_follow_the_model(steps in prop::collection::vec(step(), 1..max_steps())) {
        run(&OsPages, &steps);
    }

    #[test]
    fn heap_pages_follow_the_model(steps in prop::collection::vec(step(), 1..max_steps())) {
        run(&HeapPages, &steps);
    }
}
