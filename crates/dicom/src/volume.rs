//! The slices of one series sorted into a `(t, z, y, x)` volume.
//!
//! Each slice (a single-frame instance, or one frame of an Enhanced multi-frame instance) has a
//! position projected on the slice normal. Slices at repeated positions are split into time
//! points by the first of TemporalPositionIndex, TemporalPositionIdentifier, AcquisitionNumber
//! and acquisition time that is present on every slice and puts each position at most once in a
//! time point. Slice spacing comes from the projected positions, never from SliceThickness.

use dicom_core::Tag;
use ndarray::{s, Array4};
use penumbra_imaging::{Geometry, Volume};

use crate::dataset::DataSet;
use crate::pixels::decode_pixels;
use crate::read::{Instance, ReadError};
use crate::series::SourceInstance;
use crate::tags;

/// Positions closer than this along the normal are the same slice position (mm).
const POSITION_TOLERANCE_MM: f64 = 0.01;

/// Direction cosines differing by more than this are a different orientation.
const ORIENTATION_TOLERANCE: f64 = 1e-3;

/// Failure to assemble a series into a volume. Messages name the value and the fix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SeriesError {
    #[error("{what} is missing or invalid on {image}; the series has no usable geometry")]
    MissingGeometry { what: &'static str, image: String },
    #[error("PixelSpacing is missing or empty on {image}; geometry-dependent stages cannot use this series")]
    MissingPixelSpacing { image: String },
    #[error("{image} has {what} different from the first slice; the series mixes acquisitions")]
    Inconsistent { what: &'static str, image: String },
    #[error("cannot tell time points apart: {count} slices at {positions} positions and no temporal attribute separates them")]
    AmbiguousTime { count: usize, positions: usize },
    #[error("time point {time_point} ({key} {value}) has no slice at {position_mm:.2} mm along the normal; the series is incomplete")]
    MissingSlice { time_point: usize, key: &'static str, value: String, position_mm: f64 },
    #[error("time point {time_point} ({key} {value}) has {count} slices where {expected} positions exist; the series is incomplete")]
    IncompleteTimePoint { time_point: usize, key: &'static str, value: String, count: usize, expected: usize },
    #[error("slice spacing varies from {min_mm:.3} to {max_mm:.3} mm; a slice is missing or the stack is irregular")]
    UnevenSpacing { min_mm: f64, max_mm: f64 },
    #[error("single-slice series has no SpacingBetweenSlices or SliceThickness; its slice spacing is unknown")]
    UnknownSliceSpacing,
    #[error("dynamic series has no acquisition times (AcquisitionTime, FrameAcquisitionDateTime, ContentTime, TriggerTime); frame times are unknown")]
    NoFrameTimes,
    #[error("frame times do not increase with {key} (time point {time_point}); the timing attributes are inconsistent")]
    FrameTimesNotIncreasing { key: &'static str, time_point: usize },
    #[error("instance {file} of this series was rejected: {reason}")]
    RejectedInstance { file: String, reason: ReadError },
    #[error("series has no image instances")]
    NoImages,
}

/// One 2-D image of the series.
#[derive(Debug, Clone)]
pub(crate) struct Slice {
    /// Index of the instance in the series.
    pub instance: usize,
    /// Frame index (0-based) within the instance.
    pub frame: usize,
    pub multi_frame: bool,
    pub position: [f64; 3],
    pub orientation: [f64; 6],
    pub pixel_spacing: [f64; 2],
    pub keys: [Option<f64>; 4],
    /// Acquisition time in seconds (any epoch shared by the series).
    pub time_s: Option<f64>,
    pub rows: usize,
    pub columns: usize,
}

/// The temporal keys in order of preference.
const KEY_NAMES: [&str; 4] = ["TemporalPositionIndex", "TemporalPositionIdentifier", "AcquisitionNumber", "AcquisitionTime"];

/// A series' headers with where each instance's file is, to be decoded slice by slice.
pub(crate) struct SeriesHeaders<'a> {
    pub instances: &'a [Instance],
    /// Names for messages (file paths), one per instance.
    pub names: &'a [String],
}

/// The assembled series before pixels are read.
pub(crate) struct Layout {
    pub slices: Vec<Slice>,
    /// `grid[t][z]` is an index into `slices`.
    pub grid: Vec<Vec<usize>>,
    pub geometry: Geometry,
    pub frame_times_s: Vec<f64>,
    pub warnings: Vec<String>,
}

/// Lists the slices of a series from its headers.
pub(crate) fn slices(headers: &SeriesHeaders<'_>, warnings: &mut Vec<String>) -> Result<Vec<Slice>, SeriesError> {
    let mut out = Vec::new();
    for (index, instance) in headers.instances.iter().enumerate() {
        let name = &headers.names[index];
        let set = &instance.data_set;
        let rows = usize::from(set.u16(tags::ROWS).unwrap_or(0));
        let columns = usize::from(set.u16(tags::COLUMNS).unwrap_or(0));
        if rows == 0 || columns == 0 {
            return Err(SeriesError::MissingGeometry { what: "Rows/Columns", image: name.clone() });
        }
        let per_frame = set.items(tags::PER_FRAME_FUNCTIONAL_GROUPS);
        let frames = match set.get(tags::NUMBER_OF_FRAMES) {
            Some(_) => set.integer(tags::NUMBER_OF_FRAMES, "NumberOfFrames", warnings).filter(|&n| n > 0).unwrap_or(1) as usize,
            None => 1,
        };
        if frames > 1 && per_frame.len() != frames {
            return Err(SeriesError::MissingGeometry { what: "PerFrameFunctionalGroupsSequence (one item per frame)", image: name.clone() });
        }
        for frame in 0..frames {
            let source = if frames > 1 { format!("{name} frame {}", frame + 1) } else { name.clone() };
            let groups = FrameGroups { top: set, per_frame: per_frame.get(frame), shared: set.items(tags::SHARED_FUNCTIONAL_GROUPS).first() };
            out.push(slice(&groups, index, frame, frames > 1, rows, columns, &source, warnings)?);
        }
    }
    Ok(out)
}

/// Attribute sources of one frame, searched in order: per-frame group, shared group, top level.
struct FrameGroups<'a> {
    top: &'a DataSet,
    per_frame: Option<&'a DataSet>,
    shared: Option<&'a DataSet>,
}

impl<'a> FrameGroups<'a> {
    /// Returns the item of functional group `sequence` that contains `tag`, else the top level if
    /// it contains `tag`.
    fn holder(&self, sequence: Tag, tag: Tag) -> Option<&'a DataSet> {
        [self.per_frame, self.shared]
            .into_iter()
            .flatten()
            .filter_map(|group| group.items(sequence).first())
            .find(|item| item.get(tag).is_some())
            .or_else(|| self.top.get(tag).is_some().then_some(self.top))
    }
}

#[allow(clippy::too_many_arguments)]
fn slice(
    groups: &FrameGroups<'_>,
    instance: usize,
    frame: usize,
    multi_frame: bool,
    rows: usize,
    columns: usize,
    source: &str,
    warnings: &mut Vec<String>,
) -> Result<Slice, SeriesError> {
    let missing = |what| SeriesError::MissingGeometry { what, image: source.to_string() };
    let position = groups
        .holder(tags::PLANE_POSITION_SEQUENCE, tags::IMAGE_POSITION_PATIENT)
        .and_then(|set| set.decimals(tags::IMAGE_POSITION_PATIENT, "ImagePositionPatient", 3, warnings))
        .ok_or_else(|| missing("ImagePositionPatient"))?;
    let orientation = groups
        .holder(tags::PLANE_ORIENTATION_SEQUENCE, tags::IMAGE_ORIENTATION_PATIENT)
        .and_then(|set| set.decimals(tags::IMAGE_ORIENTATION_PATIENT, "ImageOrientationPatient", 6, warnings))
        .ok_or_else(|| missing("ImageOrientationPatient"))?;
    let spacing = groups
        .holder(tags::PIXEL_MEASURES_SEQUENCE, tags::PIXEL_SPACING)
        .and_then(|set| set.decimals(tags::PIXEL_SPACING, "PixelSpacing", 2, warnings))
        .filter(|v| v.iter().all(|&s| s > 0.0))
        .ok_or_else(|| SeriesError::MissingPixelSpacing { image: source.to_string() })?;
    let orientation = unit_orientation(&orientation).ok_or_else(|| missing("ImageOrientationPatient"))?;
    let keys = temporal_keys(groups, warnings);
    Ok(Slice {
        instance,
        frame,
        multi_frame,
        position: [position[0], position[1], position[2]],
        orientation,
        pixel_spacing: [spacing[0], spacing[1]],
        keys,
        time_s: keys[3].or_else(|| fallback_time(groups.top)),
        rows,
        columns,
    })
}

/// Normalises both direction cosines; `None` when they are degenerate or not orthogonal.
fn unit_orientation(v: &[f64]) -> Option<[f64; 6]> {
    let row = normalise([v[0], v[1], v[2]])?;
    let col = normalise([v[3], v[4], v[5]])?;
    (dot(row, col).abs() < 0.01).then_some([row[0], row[1], row[2], col[0], col[1], col[2]])
}

/// Reads the temporal keys of a frame, in [`KEY_NAMES`] order.
fn temporal_keys(groups: &FrameGroups<'_>, warnings: &mut Vec<String>) -> [Option<f64>; 4] {
    let mut integer = |sequence: Tag, tag: Tag, name: &str| {
        groups.holder(sequence, tag).and_then(|set| set.integer(tag, name, warnings)).map(|v| v as f64)
    };
    let tpi = integer(tags::FRAME_CONTENT_SEQUENCE, tags::TEMPORAL_POSITION_INDEX, "TemporalPositionIndex");
    let tpid = integer(Tag(0, 0), tags::TEMPORAL_POSITION_IDENTIFIER, "TemporalPositionIdentifier");
    let number = integer(Tag(0, 0), tags::ACQUISITION_NUMBER, "AcquisitionNumber");
    let frame_dt = groups
        .holder(tags::FRAME_CONTENT_SEQUENCE, tags::FRAME_ACQUISITION_DATE_TIME)
        .and_then(|set| set.string(tags::FRAME_ACQUISITION_DATE_TIME))
        .and_then(|dt| datetime_s(&dt));
    let time = frame_dt.or_else(|| acquisition_time(groups.top));
    [tpi, tpid, number, time]
}

/// AcquisitionDateTime, else AcquisitionDate + AcquisitionTime, else AcquisitionTime, in seconds.
fn acquisition_time(set: &DataSet) -> Option<f64> {
    if let Some(dt) = set.string(tags::ACQUISITION_DATE_TIME).and_then(|dt| datetime_s(&dt)) {
        return Some(dt);
    }
    let time = time_s(&set.string(tags::ACQUISITION_TIME)?)?;
    let day = set.string(tags::ACQUISITION_DATE).and_then(|d| days(&d)).unwrap_or(0);
    Some(day as f64 * 86_400.0 + time)
}

/// ContentDate + ContentTime, else TriggerTime (ms), in seconds.
fn fallback_time(set: &DataSet) -> Option<f64> {
    if let Some(time) = set.string(tags::CONTENT_TIME).and_then(|t| time_s(&t)) {
        let day = set.string(tags::CONTENT_DATE).and_then(|d| days(&d)).unwrap_or(0);
        return Some(day as f64 * 86_400.0 + time);
    }
    set.decimal(tags::TRIGGER_TIME, "TriggerTime", &mut Vec::new()).map(|ms| ms / 1000.0)
}

/// Parses a DICOM TM value (`HHMMSS.FFFFFF`, parts optional, colons tolerated) into seconds.
pub(crate) fn time_s(tm: &str) -> Option<f64> {
    let tm: String = tm.trim().chars().filter(|&c| c != ':').collect();
    let (whole, fraction) = tm.split_once('.').unwrap_or((tm.as_str(), ""));
    if whole.len() < 2 || whole.len() % 2 != 0 || whole.len() > 6 || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let part = |i: usize| whole.get(i..i + 2).map_or(Some(0.0), |p| p.parse::<f64>().ok());
    let (h, m, s) = (part(0)?, part(2)?, part(4)?);
    let frac = if fraction.is_empty() { 0.0 } else { format!("0.{fraction}").parse::<f64>().ok()? };
    (h < 24.0 && m < 60.0 && s < 61.0).then_some(h * 3600.0 + m * 60.0 + s + frac)
}

/// Parses a DICOM DA value (`YYYYMMDD`) into days since 1970-01-01.
pub(crate) fn days(da: &str) -> Option<i64> {
    let da = da.trim();
    if da.len() != 8 || !da.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (y, m, d): (i64, i64, i64) = (da[0..4].parse().ok()?, da[4..6].parse().ok()?, da[6..8].parse().ok()?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    // Days from civil date (proleptic Gregorian), counting years from March.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

/// Parses a DICOM DT value (`YYYYMMDDHHMMSS.FFFFFF`, offset ignored) into seconds since 1970.
pub(crate) fn datetime_s(dt: &str) -> Option<f64> {
    let dt = dt.trim();
    let dt = dt.split(['+', '-']).next()?;
    let day = days(dt.get(0..8)?)?;
    let time = match dt.get(8..) {
        Some(rest) if !rest.is_empty() => time_s(rest)?,
        _ => 0.0,
    };
    Some(day as f64 * 86_400.0 + time)
}

/// Sorts the slices into time points and positions and derives the geometry.
pub(crate) fn layout(slices: Vec<Slice>, headers: &SeriesHeaders<'_>) -> Result<Layout, SeriesError> {
    let first = slices.first().ok_or(SeriesError::NoImages)?.clone();
    let mut warnings = Vec::new();
    check_consistent(&slices, &first, headers)?;
    let row = [first.orientation[0], first.orientation[1], first.orientation[2]];
    let col = [first.orientation[3], first.orientation[4], first.orientation[5]];
    let normal = normalise(cross(row, col)).ok_or(SeriesError::MissingGeometry { what: "ImageOrientationPatient", image: headers.names[0].clone() })?;
    let depth: Vec<f64> = slices.iter().map(|s| dot(s.position, normal)).collect();
    let positions = unique_positions(&depth);
    let (grid, key) = split_time(&slices, &depth, &positions)?;
    let spacing_z = slice_spacing(&positions, headers, &mut warnings)?;
    let frame_times_s = frame_times(&slices, &grid, key)?;
    let origin = slices[grid[0][0]].position;
    let geometry = Geometry {
        origin_mm: origin,
        row_dir: row,
        col_dir: col,
        normal,
        spacing_mm: [spacing_z, first.pixel_spacing[0], first.pixel_spacing[1]],
    };
    Ok(Layout { slices, grid, geometry, frame_times_s, warnings })
}

fn check_consistent(slices: &[Slice], first: &Slice, headers: &SeriesHeaders<'_>) -> Result<(), SeriesError> {
    for slice in slices {
        let source = || headers.names[slice.instance].clone();
        if (slice.rows, slice.columns) != (first.rows, first.columns) {
            return Err(SeriesError::Inconsistent { what: "Rows/Columns", image: source() });
        }
        if slice.orientation.iter().zip(first.orientation).any(|(a, b)| (a - b).abs() > ORIENTATION_TOLERANCE) {
            return Err(SeriesError::Inconsistent { what: "ImageOrientationPatient", image: source() });
        }
        if slice.pixel_spacing.iter().zip(first.pixel_spacing).any(|(a, b)| (a - b).abs() > 1e-4 * b.max(1.0)) {
            return Err(SeriesError::Inconsistent { what: "PixelSpacing", image: source() });
        }
    }
    Ok(())
}

/// Returns the distinct positions along the normal, ascending.
fn unique_positions(depth: &[f64]) -> Vec<f64> {
    let mut sorted = depth.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mut unique: Vec<f64> = Vec::new();
    for d in sorted {
        if unique.last().is_none_or(|&last| d - last > POSITION_TOLERANCE_MM) {
            unique.push(d);
        }
    }
    unique
}

fn position_index(positions: &[f64], d: f64) -> usize {
    positions.iter().position(|&p| (p - d).abs() <= POSITION_TOLERANCE_MM * 2.0).unwrap_or(0)
}

/// Splits slices into time points; returns `grid[t][z]` and the key used (`None` for one time
/// point).
fn split_time(slices: &[Slice], depth: &[f64], positions: &[f64]) -> Result<(Vec<Vec<usize>>, Option<usize>), SeriesError> {
    let z_of: Vec<usize> = depth.iter().map(|&d| position_index(positions, d)).collect();
    if slices.len() == positions.len() {
        let mut column: Vec<usize> = (0..slices.len()).collect();
        column.sort_by_key(|&i| z_of[i]);
        return Ok((vec![column], None));
    }
    // The first key that fills every time point wins. When none does, the first key that at
    // least keeps positions apart names the incomplete time point.
    let mut first_error = None;
    for (key, &key_name) in KEY_NAMES.iter().enumerate() {
        let Some(groups) = group_by_key(slices, &z_of, key) else { continue };
        match complete_grid(groups, &z_of, positions, key, key_name) {
            Ok(grid) => return Ok((grid, Some(key))),
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    Err(first_error.unwrap_or(SeriesError::AmbiguousTime { count: slices.len(), positions: positions.len() }))
}

/// Checks that every time point has one slice at each position and sorts each by position.
fn complete_grid(
    groups: Vec<(f64, Vec<usize>)>,
    z_of: &[usize],
    positions: &[f64],
    key: usize,
    key_name: &'static str,
) -> Result<Vec<Vec<usize>>, SeriesError> {
    let mut grid = Vec::with_capacity(groups.len());
    for (t, (value, members)) in groups.into_iter().enumerate() {
        let shown = format_key(key, value);
        if members.len() != positions.len() {
            let present: Vec<usize> = members.iter().map(|&i| z_of[i]).collect();
            if let Some(z) = (0..positions.len()).find(|z| !present.contains(z)) {
                return Err(SeriesError::MissingSlice { time_point: t + 1, key: key_name, value: shown, position_mm: positions[z] });
            }
            return Err(SeriesError::IncompleteTimePoint { time_point: t + 1, key: key_name, value: shown, count: members.len(), expected: positions.len() });
        }
        let mut column = members;
        column.sort_by_key(|&i| z_of[i]);
        grid.push(column);
    }
    Ok(grid)
}

/// Groups slices by temporal key `key`, ascending; `None` if a slice lacks the key or a group
/// contains one position twice.
fn group_by_key(slices: &[Slice], z_of: &[usize], key: usize) -> Option<Vec<(f64, Vec<usize>)>> {
    let mut groups: Vec<(f64, Vec<usize>)> = Vec::new();
    for (i, slice) in slices.iter().enumerate() {
        let value = slice.keys[key]?;
        // Acquisition times within a millisecond are the same time point.
        let same = |g: &&mut (f64, Vec<usize>)| if key == 3 { (g.0 - value).abs() < 1e-3 } else { g.0 == value };
        match groups.iter_mut().find(same) {
            Some(group) => group.1.push(i),
            None => groups.push((value, vec![i])),
        }
    }
    for (_, members) in &groups {
        let mut zs: Vec<usize> = members.iter().map(|&i| z_of[i]).collect();
        zs.sort_unstable();
        if zs.windows(2).any(|w| w[0] == w[1]) {
            return None;
        }
    }
    groups.sort_by(|a, b| a.0.total_cmp(&b.0));
    Some(groups)
}

fn format_key(key: usize, value: f64) -> String {
    if key == 3 {
        format!("{value:.3} s")
    } else {
        format!("{value}")
    }
}

/// Slice spacing from the projected positions (uniform within 5 %), or for a single slice from
/// SpacingBetweenSlices or SliceThickness.
fn slice_spacing(positions: &[f64], headers: &SeriesHeaders<'_>, warnings: &mut Vec<String>) -> Result<f64, SeriesError> {
    if positions.len() == 1 {
        let set = &headers.instances[0].data_set;
        let mut ignored = Vec::new();
        let spacing = set.decimal(tags::SPACING_BETWEEN_SLICES, "SpacingBetweenSlices", &mut ignored).filter(|&v| v > 0.0);
        let thickness = set.decimal(tags::SLICE_THICKNESS, "SliceThickness", &mut ignored).filter(|&v| v > 0.0);
        let value = spacing.or(thickness).ok_or(SeriesError::UnknownSliceSpacing)?;
        warnings.push(format!("single slice: slice spacing {value} mm taken from SpacingBetweenSlices or SliceThickness"));
        return Ok(value);
    }
    let gaps: Vec<f64> = positions.windows(2).map(|w| w[1] - w[0]).collect();
    let mean = (positions[positions.len() - 1] - positions[0]) / gaps.len() as f64;
    let min = gaps.iter().copied().fold(f64::INFINITY, f64::min);
    let max = gaps.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if max - min > 0.05 * mean + POSITION_TOLERANCE_MM {
        return Err(SeriesError::UnevenSpacing { min_mm: min, max_mm: max });
    }
    Ok(mean)
}

/// Mean acquisition time of each time point relative to the first, in seconds.
fn frame_times(slices: &[Slice], grid: &[Vec<usize>], key: Option<usize>) -> Result<Vec<f64>, SeriesError> {
    if grid.len() == 1 {
        return Ok(vec![0.0]);
    }
    let mut means = Vec::with_capacity(grid.len());
    for column in grid {
        let times: Option<Vec<f64>> = column.iter().map(|&i| slices[i].time_s).collect();
        let times = times.ok_or(SeriesError::NoFrameTimes)?;
        means.push(times.iter().sum::<f64>() / times.len() as f64);
    }
    let key_name = key.map_or("position", |k| KEY_NAMES[k]);
    for t in 1..means.len() {
        // A time-of-day clock without a date wraps at midnight.
        if means[t] < means[t - 1] - 43_200.0 {
            means[t] += 86_400.0;
        }
        if means[t] <= means[t - 1] {
            return Err(SeriesError::FrameTimesNotIncreasing { key: key_name, time_point: t + 1 });
        }
    }
    let start = means[0];
    Ok(means.into_iter().map(|m| m - start).collect())
}

/// Reads every slice's pixels into the laid-out volume; `read` re-reads instance `i` in full.
pub(crate) fn fill(
    layout: Layout,
    headers: &SeriesHeaders<'_>,
    mut read: impl FnMut(usize) -> Result<Instance, ReadError>,
) -> Result<(Volume, Vec<SourceInstance>, Vec<String>), SeriesError> {
    let Layout { slices, grid, geometry, frame_times_s, mut warnings } = layout;
    let (rows, columns) = (slices[0].rows, slices[0].columns);
    let mut voxels = Array4::<f32>::zeros((grid.len(), grid[0].len(), rows, columns));
    let mut place: Vec<Vec<(usize, usize, usize)>> = vec![Vec::new(); headers.instances.len()];
    for (t, column) in grid.iter().enumerate() {
        for (z, &i) in column.iter().enumerate() {
            place[slices[i].instance].push((slices[i].frame, t, z));
        }
    }
    for (instance, targets) in place.iter().enumerate() {
        let rejected = |reason| SeriesError::RejectedInstance { file: headers.names[instance].clone(), reason };
        let full = read(instance).map_err(rejected)?;
        let mut pixel_warnings = Vec::new();
        let frames = decode_pixels(&full, &mut pixel_warnings).map_err(rejected)?;
        for warning in pixel_warnings {
            if !warnings.contains(&warning) {
                warnings.push(warning);
            }
        }
        if frames.shape()[1..] != [rows, columns] {
            return Err(SeriesError::Inconsistent { what: "pixel matrix size", image: headers.names[instance].clone() });
        }
        for &(frame, t, z) in targets {
            if frame >= frames.shape()[0] {
                return Err(SeriesError::Inconsistent { what: "NumberOfFrames", image: headers.names[instance].clone() });
            }
            voxels.slice_mut(s![t, z, .., ..]).assign(&frames.slice(s![frame, .., ..]));
        }
    }
    let sources = grid[0]
        .iter()
        .map(|&i| {
            let slice = &slices[i];
            let instance = &headers.instances[slice.instance];
            SourceInstance {
                sop_class_uid: instance.sop_class_uid().unwrap_or_default(),
                sop_instance_uid: instance.sop_instance_uid().unwrap_or_default(),
                frame_number: slice.multi_frame.then(|| slice.frame as u32 + 1),
            }
        })
        .collect();
    Ok((Volume { voxels, geometry, frame_times_s }, sources, warnings))
}

fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]
}

fn normalise(v: [f64; 3]) -> Option<[f64; 3]> {
    let n = dot(v, v).sqrt();
    (n.is_finite() && n > 1e-6).then(|| [v[0] / n, v[1] / n, v[2] / n])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse() {
        assert_eq!(time_s("112936"), Some(11.0 * 3600.0 + 29.0 * 60.0 + 36.0));
        assert_eq!(time_s("1129"), Some(11.0 * 3600.0 + 29.0 * 60.0));
        assert_eq!(time_s("112936.5"), Some(41376.5));
        assert_eq!(time_s("11:29:36"), Some(41376.0));
        assert_eq!(time_s("2500"), None);
        assert_eq!(time_s("abc"), None);
    }

    #[test]
    fn dates_count_days_from_1970() {
        assert_eq!(days("19700101"), Some(0));
        assert_eq!(days("20000301"), Some(11017));
        assert_eq!(days("2000031"), None);
        // 2024-01-01T00:00:10 is 19723 days and 10 s after the epoch.
        assert_eq!(datetime_s("20240101000010"), Some(19723.0 * 86400.0 + 10.0));
    }
}
