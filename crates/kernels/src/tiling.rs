//! Work splitting: row tiles sized to keep scratch buffers in cache, and the shared output
//! pointer that lets parallel tasks write disjoint parts of one tensor.

use std::ops::Range;

/// Largest scratch buffer (im2col columns or a gathered gradient) one task allocates, in `f32`
/// elements: 256 Ki elements is 1 MiB, the L2 cache of one AMD Zen 4 core, so the GEMM can read
/// the columns back from L2 right after im2col writes them.
pub(crate) const SCRATCH_ELEMS: usize = 256 * 1024;

/// Tiles per rayon thread for passes that write disjoint output rows.
pub(crate) const FORWARD_TASKS_PER_THREAD: usize = 4;

/// Tiles per rayon thread for weight gradients, which sum over tiles.
pub(crate) const REDUCTION_TASKS_PER_THREAD: usize = 1;

/// One unit of parallel work: image `image` of the batch, rows `rows` of its spatial grid.
#[derive(Debug, Clone)]
pub(crate) struct Tile {
    pub image: usize,
    pub rows: Range<usize>,
}

/// Splits `batch` images of `height` rows into row tiles.
///
/// A tile's scratch is `elems_per_row` elements per row, so the tile height keeps it under
/// `SCRATCH_ELEMS` (at least one row). Tiles are also made short enough that there are about
/// `tasks_per_thread` per rayon thread, so every core stays busy on small batches.
///
/// Forward passes use `FORWARD_TASKS_PER_THREAD`. Weight gradients use
/// `REDUCTION_TASKS_PER_THREAD`, because each of their tiles is one GEMM whose inner dimension
/// is the tile's pixel count, and short tiles turn it into many passes over the accumulator.
pub(crate) fn row_tiles(
    batch: usize,
    height: usize,
    elems_per_row: usize,
    tasks_per_thread: usize,
) -> Vec<Tile> {
    if batch == 0 || height == 0 {
        return Vec::new();
    }

    let by_cache = (SCRATCH_ELEMS / elems_per_row.max(1)).max(1);
    let wanted_tasks = tasks_per_thread.max(1) * rayon::current_num_threads();
    let tiles_per_image = wanted_tasks.div_ceil(batch).max(1);
    let by_balance = height.div_ceil(tiles_per_image).max(1);
    let tile_height = by_cache.min(by_balance).min(height);

    let mut tiles = Vec::new();
    for image in 0..batch {
        let mut start = 0;
        while start < height {
            let end = (start + tile_height).min(height);
            tiles.push(Tile {
                image,
                rows: start..end,
            });
            start = end;
        }
    }
    tiles
}

/// Raw pointer to an output buffer shared by parallel tasks.
///
/// Each task must write a set of elements disjoint from every other task's set, and the buffer
/// must outlive the parallel loop. Every kernel in this crate splits its output by image and by
/// row range, which meets both conditions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SharedOut {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: tasks write disjoint elements, as the type's contract requires.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    pub fn new(buffer: &mut [f32]) -> Self {
        Self {
            ptr: buffer.as_mut_ptr(),
            len: buffer.len(),
        }
    }

    /// Wraps `len` elements from `ptr`, which may still be uninitialized.
    pub fn from_raw(ptr: *mut f32, len: usize) -> Self {
        Self { ptr, len }
    }

    /// Returns the pointer at `offset` and the number of elements from there to the end.
    pub fn at(&self, offset: usize) -> (*mut f32, usize) {
        assert!(offset <= self.len, "output offset exceeds its buffer");
        // SAFETY: offset is within the allocation, checked above.
        (unsafe { self.ptr.add(offset) }, self.len - offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_tiles_cover_every_row_once() {
        let tiles = row_tiles(3, 37, 1000, FORWARD_TASKS_PER_THREAD);
        for image in 0..3 {
            let mut covered = vec![0u32; 37];
            for tile in tiles.iter().filter(|t| t.image == image) {
                for row in tile.rows.clone() {
                    covered[row] += 1;
                }
            }
            assert!(
                covered.iter().all(|&c| c == 1),
                "image {image}: {covered:?}"
            );
        }
    }

    #[test]
    fn row_tiles_respect_scratch_limit() {
        let per_row = SCRATCH_ELEMS / 3;
        let tiles = row_tiles(1, 100, per_row, FORWARD_TASKS_PER_THREAD);
        assert!(tiles
            .iter()
            .all(|t| t.rows.len() * per_row <= SCRATCH_ELEMS));
    }

    #[test]
    fn row_tiles_oversized_row_gets_own_tile() {
        let tiles = row_tiles(1, 4, SCRATCH_ELEMS * 2, FORWARD_TASKS_PER_THREAD);
        assert_eq!(tiles.len(), 4);
    }
}
