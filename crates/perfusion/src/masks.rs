//! Brain and vessel masks, and 3D connected components.

use ndarray::{Array2, Array3, ArrayView2, Axis};

use crate::params::MaskParams;

/// Neighbourhood of a voxel in connected-component labelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connectivity {
    /// Face neighbours only.
    Six,
    /// Face, edge and corner neighbours.
    TwentySix,
}

impl Connectivity {
    fn offsets(self) -> Vec<[isize; 3]> {
        let mut offsets = Vec::new();
        for dz in -1..=1isize {
            for dy in -1..=1isize {
                for dx in -1..=1isize {
                    let taxicab = dz.abs() + dy.abs() + dx.abs();
                    let keep = match self {
                        Connectivity::Six => taxicab == 1,
                        Connectivity::TwentySix => taxicab >= 1,
                    };
                    if keep {
                        offsets.push([dz, dy, dx]);
                    }
                }
            }
        }
        offsets
    }
}

/// Labels the connected components of `mask`: component ids start at 1 (0 is background), and
/// `sizes[id - 1]` is the voxel count of component `id`.
pub fn connected_components(
    mask: &Array3<bool>,
    connectivity: Connectivity,
) -> (Array3<u32>, Vec<usize>) {
    let (nz, ny, nx) = mask.dim();
    let mut ids = Array3::<u32>::zeros((nz, ny, nx));
    let mut sizes = Vec::new();
    let offsets = connectivity.offsets();
    let mut stack = Vec::new();

    for ((z, y, x), &inside) in mask.indexed_iter() {
        if !inside || ids[(z, y, x)] != 0 {
            continue;
        }
        let id = sizes.len() as u32 + 1;
        let mut size = 0usize;
        ids[(z, y, x)] = id;
        stack.push((z, y, x));

        while let Some((cz, cy, cx)) = stack.pop() {
            size += 1;
            for off in &offsets {
                let (Some(qz), Some(qy), Some(qx)) = (
                    step(cz, off[0], nz),
                    step(cy, off[1], ny),
                    step(cx, off[2], nx),
                ) else {
                    continue;
                };
                if mask[(qz, qy, qx)] && ids[(qz, qy, qx)] == 0 {
                    ids[(qz, qy, qx)] = id;
                    stack.push((qz, qy, qx));
                }
            }
        }
        sizes.push(size);
    }
    (ids, sizes)
}

fn step(index: usize, offset: isize, len: usize) -> Option<usize> {
    let moved = index.checked_add_signed(offset)?;
    (moved < len).then_some(moved)
}

/// Returns `mask` without components of fewer than `min_voxels` voxels.
pub fn remove_small_components(
    mask: &Array3<bool>,
    min_voxels: usize,
    connectivity: Connectivity,
) -> Array3<bool> {
    let (ids, sizes) = connected_components(mask, connectivity);
    ids.mapv(|id| id != 0 && sizes[id as usize - 1] >= min_voxels)
}

/// Returns the largest connected component of `mask` (6-connectivity), or an empty mask.
pub fn largest_component(mask: &Array3<bool>) -> Array3<bool> {
    let (ids, sizes) = connected_components(mask, Connectivity::Six);
    let Some(best) = (0..sizes.len()).max_by_key(|&i| sizes[i]) else {
        return mask.clone();
    };
    let best = best as u32 + 1;
    ids.mapv(|id| id == best)
}

/// Returns the pixels not reachable from the slice border through pixels where `barrier` is
/// false (4-connectivity). Barrier pixels themselves are never in the result.
pub fn enclosed_2d(barrier: ArrayView2<bool>) -> Array2<bool> {
    let (ny, nx) = barrier.dim();
    let mut outside = Array2::<bool>::from_elem((ny, nx), false);
    let mut stack = Vec::new();

    for y in 0..ny {
        for x in 0..nx {
            let border = y == 0 || x == 0 || y + 1 == ny || x + 1 == nx;
            if border && !barrier[(y, x)] {
                outside[(y, x)] = true;
                stack.push((y, x));
            }
        }
    }
    while let Some((y, x)) = stack.pop() {
        let neighbours = [
            (y.wrapping_sub(1), x),
            (y + 1, x),
            (y, x.wrapping_sub(1)),
            (y, x + 1),
        ];
        for (qy, qx) in neighbours {
            if qy < ny && qx < nx && !barrier[(qy, qx)] && !outside[(qy, qx)] {
                outside[(qy, qx)] = true;
                stack.push((qy, qx));
            }
        }
    }
    ndarray::Zip::from(&outside)
        .and(&barrier)
        .map_collect(|&o, &b| !o && !b)
}

/// Fills, slice by slice, the holes of `mask`: pixels not connected to the slice border
/// through pixels outside the mask.
pub fn fill_holes_2d(mask: &Array3<bool>) -> Array3<bool> {
    let mut filled = mask.clone();
    for (mut out, slice) in filled.axis_iter_mut(Axis(0)).zip(mask.axis_iter(Axis(0))) {
        let holes = enclosed_2d(slice);
        out.zip_mut_with(&holes, |o, &h| *o |= h);
    }
    filled
}

/// Returns the intracranial tissue mask: baseline HU inside the tissue window and enclosed by
/// bone in its slice, the largest 3D component of that, with holes filled per slice.
///
/// A slice with no enclosed tissue (no skull in the field of view, or a skull open at the
/// skull base) keeps all its window pixels, so phantoms without a skull still get a mask.
/// CSF is still in this mask; [`brain_mask`] removes it.
pub fn intracranial_mask(baseline: &Array3<f32>, params: &MaskParams) -> Array3<bool> {
    let window = baseline.mapv(|hu| hu >= params.tissue_min_hu && hu <= params.tissue_max_hu);
    let bone = baseline.mapv(|hu| hu > params.bone_min_hu);
    let mut inside = window.clone();

    for z in 0..baseline.dim().0 {
        let enclosed = enclosed_2d(bone.index_axis(Axis(0), z));
        let slice_window = window.index_axis(Axis(0), z);
        let enclosed_window = ndarray::Zip::from(&enclosed)
            .and(&slice_window)
            .map_collect(|&e, &w| e && w);
        if enclosed_window.iter().any(|&v| v) {
            inside.index_axis_mut(Axis(0), z).assign(&enclosed_window);
        }
    }
    fill_holes_2d(&largest_component(&inside))
}

/// Returns `region` without the voxels within `margin_mm` in-plane (a square neighbourhood of
/// that half-width, rounded to whole voxels) of bone: baseline HU above `bone_min_hu`.
///
/// Input functions are searched here. After head motion, even when it is corrected, the
/// skull's edge lands partly in the voxels near it in the moved frames, and its hundreds of HU
/// look like a strong, wide bolus there.
pub fn away_from_bone(
    region: &Array3<bool>,
    baseline: &Array3<f32>,
    bone_min_hu: f32,
    margin_mm: f64,
    spacing_mm: [f64; 2],
) -> Array3<bool> {
    let (nz, ny, nx) = baseline.dim();
    // The cast saturates, and the reach is capped by the plane, so extreme spacings stay safe.
    let reach = |spacing: f64, n: usize| ((margin_mm / spacing).round().max(0.0) as usize).min(n);
    let (ry, rx) = (reach(spacing_mm[0], ny), reach(spacing_mm[1], nx));
    let mut away = region.clone();

    for z in 0..nz {
        for y in 0..ny {
            for x in 0..nx {
                if !(baseline[[z, y, x]] > bone_min_hu) {
                    continue;
                }
                for yy in y.saturating_sub(ry)..y.saturating_add(ry + 1).min(ny) {
                    for xx in x.saturating_sub(rx)..x.saturating_add(rx + 1).min(nx) {
                        away[[z, yy, xx]] = false;
                    }
                }
            }
        }
    }
    away
}

/// Returns the brain parenchyma: intracranial voxels whose baseline is above the CSF limit and
/// which hold finite values in every frame (`finite`).
pub fn brain_mask(
    intracranial: &Array3<bool>,
    baseline: &Array3<f32>,
    finite: &Array3<bool>,
    params: &MaskParams,
) -> Array3<bool> {
    ndarray::Zip::from(intracranial)
        .and(baseline)
        .and(finite)
        .map_collect(|&inside, &hu, &ok| inside && ok && hu >= params.csf_max_hu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_six_versus_twenty_six() {
        // Two voxels touching only at a corner.
        let mut mask = Array3::from_elem((2, 2, 2), false);
        mask[(0, 0, 0)] = true;
        mask[(1, 1, 1)] = true;

        let (_, six) = connected_components(&mask, Connectivity::Six);
        let (ids, twenty_six) = connected_components(&mask, Connectivity::TwentySix);
        assert_eq!(six, vec![1, 1]);
        assert_eq!(twenty_six, vec![2]);
        assert_eq!(ids[(1, 1, 1)], 1);
    }

    #[test]
    fn input_region_keeps_margin_from_bone() {
        // One slice of 1 x 12 pixels of 1.5 mm: bone at x = 0, tissue after it.
        let mut baseline = Array3::from_elem((1, 1, 12), 35.0f32);
        baseline[(0, 0, 0)] = 1200.0;
        let region = Array3::from_elem((1, 1, 12), true);

        // 3 mm is two pixels of 1.5 mm, so pixels 0 to 2 leave the region.
        let away = away_from_bone(&region, &baseline, 300.0, 3.0, [1.5, 1.5]);
        let in_region: Vec<bool> = away.iter().copied().collect();
        assert_eq!(&in_region[..4], &[false, false, false, true]);
        assert!(in_region[4..].iter().all(|&k| k));

        let unchanged = away_from_bone(&region, &baseline, 300.0, 0.0, [1.5, 1.5]);
        assert_eq!(unchanged.iter().filter(|&&k| !k).count(), 1);
    }

    #[test]
    fn small_components_removed() {
        // A 2x2x2 cube (8 voxels) and a lone voxel far away.
        let mut mask = Array3::from_elem((4, 4, 8), false);
        for z in 0..2 {
            for y in 0..2 {
                for x in 0..2 {
                    mask[(z, y, x)] = true;
                }
            }
        }
        mask[(3, 3, 7)] = true;

        let kept = remove_small_components(&mask, 2, Connectivity::TwentySix);
        assert_eq!(kept.iter().filter(|&&v| v).count(), 8);
        assert!(!kept[(3, 3, 7)]);
    }

    #[test]
    fn holes_filled_per_slice() {
        // A 5x5 ring with a one-pixel hole in the middle.
        let mut mask = Array3::from_elem((1, 5, 5), false);
        for y in 1..4 {
            for x in 1..4 {
                mask[(0, y, x)] = true;
            }
        }
        mask[(0, 2, 2)] = false;

        let filled = fill_holes_2d(&mask);
        assert!(filled[(0, 2, 2)]);
        assert_eq!(filled.iter().filter(|&&v| v).count(), 9);
    }

    fn skull_phantom() -> Array3<f32> {
        // 1 slice of 11x11: air, a bone ring of radius 4-5, brain 30 HU inside with a
        // ventricle of 5 HU at the centre, and a soft-tissue blob outside the skull.
        let mut image = Array3::from_elem((1, 11, 11), -1000.0f32);
        for y in 0..11 {
            for x in 0..11 {
                let r = (((y as f32) - 5.0).powi(2) + ((x as f32) - 5.0).powi(2)).sqrt();
                if r <= 3.5 {
                    image[(0, y, x)] = 30.0;
                } else if r <= 5.0 {
                    image[(0, y, x)] = 1000.0;
                }
            }
        }
        image[(0, 5, 5)] = 5.0;
        image[(0, 0, 0)] = 40.0;
        image
    }

    #[test]
    fn intracranial_mask_inside_skull() {
        let image = skull_phantom();
        let mask = intracranial_mask(&image, &MaskParams::default());

        // Pixels with r <= 3.5 from the centre: 37 of them, ventricle included.
        assert_eq!(mask.iter().filter(|&&v| v).count(), 37);
        assert!(mask[(0, 5, 5)]);
        assert!(!mask[(0, 0, 0)]);
    }

    #[test]
    fn brain_mask_drops_csf_and_nonfinite() {
        let image = skull_phantom();
        let params = MaskParams::default();
        let intracranial = intracranial_mask(&image, &params);
        let mut finite = Array3::from_elem(image.dim(), true);
        finite[(0, 5, 3)] = false;

        let brain = brain_mask(&intracranial, &image, &finite, &params);
        assert!(!brain[(0, 5, 5)]);
        assert!(!brain[(0, 5, 3)]);
        assert_eq!(brain.iter().filter(|&&v| v).count(), 35);
    }

    #[test]
    fn mask_without_skull_keeps_window() {
        let image = Array3::from_elem((2, 3, 3), 35.0f32);
        let mask = intracranial_mask(&image, &MaskParams::default());
        assert!(mask.iter().all(|&v| v));
    }
}
