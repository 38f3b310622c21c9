//! The memory argon2 hashes in, kept between password checks.
//!
//! Each check with this module's parameters fills 19 MiB. Allocated fresh,
//! that memory is zeroed and faulted in by the kernel on every login and
//! handed back afterwards: about a fifth of a login's CPU in a profile.
//! So spare blocks of the standard size are kept, at most one per hashing
//! slot (the most checks that run at once), and reused; argon2 writes every
//! block before it reads it, so what a previous check left there does not
//! matter. Blocks of any other size (a stored hash with other parameters)
//! are allocated for that check and freed.

use std::sync::{Mutex, MutexGuard};

use argon2::{Block, Params};

use super::pool;

/// The process's spare arrays.
static SPARE: Spares = Spares::new();

/// Runs `hash` with `count` blocks of memory, reused when `count` is the
/// standard size.
pub(super) fn with_blocks<T>(count: usize, hash: impl FnOnce(&mut [Block]) -> T) -> T {
    let keep = pool::permits_in_force().unwrap_or(1);
    SPARE.with_blocks(count, standard_count(), keep, hash)
}

/// The block count of a check with this module's parameters.
fn standard_count() -> usize {
    Params::new(
        super::MEMORY_KIB,
        super::TIME_COST,
        super::PARALLELISM,
        None,
    )
    .map(|p| p.block_count())
    .unwrap_or(0)
}

/// Spare block arrays of one size.
struct Spares {
    arrays: Mutex<Vec<Vec<Block>>>,
}

impl Spares {
    const fn new() -> Spares {
        Spares {
            arrays: Mutex::new(Vec::new()),
        }
    }

    /// Runs `hash` with `count` blocks: a spare array when `count` is
    /// `standard` and one is free, kept afterwards while fewer than `keep`
    /// are; otherwise a fresh array, freed afterwards.
    fn with_blocks<T>(
        &self,
        count: usize,
        standard: usize,
        keep: usize,
        hash: impl FnOnce(&mut [Block]) -> T,
    ) -> T {
        let reusable = count == standard;
        let spare = if reusable { self.lock().pop() } else { None };
        let mut blocks = spare.unwrap_or_else(|| vec![Block::new(); count]);
        let value = hash(&mut blocks);
        if reusable {
            let mut arrays = self.lock();
            if arrays.len() < keep {
                arrays.push(blocks);
            }
        }
        value
    }

    /// A panic while the lock is held leaves only whole arrays behind, so
    /// a poisoned lock is still usable.
    fn lock(&self) -> MutexGuard<'_, Vec<Vec<Block>>> {
        self.arrays.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standard_size_is_this_modules_memory_cost() {
        // One block is 1 KiB.
        assert_eq!(standard_count(), super::super::MEMORY_KIB as usize);
    }

    #[test]
    fn standard_arrays_are_reused_up_to_the_cap_and_others_never() {
        let spares = Spares::new();
        let address = |b: &mut [Block]| (b.as_ptr() as usize, b.len());
        let first = spares.with_blocks(16, 16, 1, address);
        assert_eq!(spares.with_blocks(16, 16, 1, address), first, "reused");
        // Two at once: the second gets a fresh array, which the cap of one
        // does not keep.
        let (outer, inner) = spares.with_blocks(16, 16, 1, |b| {
            let inner = spares.with_blocks(16, 16, 1, address);
            (address(b), inner)
        });
        assert_eq!(outer, first);
        assert_ne!(inner, first);
        assert_eq!(spares.lock().len(), 1);
        // Another size is allocated for the call and not kept.
        assert_eq!(spares.with_blocks(8, 16, 4, address).1, 8);
        assert!(spares.lock().iter().all(|a| a.len() == 16));
    }
}
