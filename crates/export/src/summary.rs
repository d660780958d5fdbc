//! The summary image: per slice, the CBF map and the Tmax map side by side in grey, with core
//! (red) and penumbra (green) outlines, under a header with the volumes, mismatch ratio,
//! confidence and, until review, "NOT FOR DIAGNOSTIC USE WITHOUT REVIEW".
//!
//! The image is written as an RGB Secondary Capture object and as PNG. The header carries no
//! patient data.

use crate::dcm;
use crate::report::VolumeFigures;
use crate::{font, AlgorithmInfo, ExportError};
use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;
use ndarray::Array3;
use penumbra_dicom::{uid::new_uid, SeriesInfo, StudyContext};
use penumbra_imaging::{Label, LabelVolume};

/// Grey window for CBF in mL/100 g/min: 0 black, 60 white (grey-matter CBF is about 60).
pub const CBF_WINDOW: (f32, f32) = (0.0, 60.0);
/// Grey window for Tmax in seconds: 0 black, 12 white, so the 6 s threshold is mid-grey.
pub const TMAX_WINDOW: (f32, f32) = (0.0, 12.0);

const CORE_COLOR: [u8; 3] = [255, 0, 0];
const PENUMBRA_COLOR: [u8; 3] = [0, 255, 0];
const TEXT_COLOR: [u8; 3] = [255, 255, 255];
const WARNING_COLOR: [u8; 3] = [255, 210, 0];
const SLICE_NUMBER_COLOR: [u8; 3] = [0, 200, 255];
const BACKGROUND: [u8; 3] = [0, 0, 0];

/// Screen pixels per font pixel in the header.
const TEXT_SCALE: usize = 2;
const LINE_HEIGHT: usize = (font::GLYPH_HEIGHT + 3) * TEXT_SCALE;
const MARGIN: usize = 8;
/// Gap between the two panels of a slice, in pixels.
const GAP: usize = 4;
/// Gap between slice tiles, wider than [`GAP`] so that panel pairs read as one tile.
const TILE_GAP: usize = 12;
/// Tiles are laid out in rows no wider than this many pixels (at least one tile per row).
const MAX_GRID_WIDTH: usize = 1024;


/// An 8-bit RGB image, rows top to bottom, pixels interleaved `R, G, B`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

impl RgbImage {
    fn new(width: usize, height: usize) -> Self {
        RgbImage {
            width,
            height,
            data: vec![0; width * height * 3],
        }
    }

    /// Returns the colour at `(x, y)`, or `None` outside the image.
    pub fn pixel(&self, x: usize, y: usize) -> Option<[u8; 3]> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let i = (y * self.width + x) * 3;
        Some([self.data[i], self.data[i + 1], self.data[i + 2]])
    }

    fn set(&mut self, x: usize, y: usize, color: [u8; 3]) {
        if x < self.width && y < self.height {
            let i = (y * self.width + x) * 3;
            self.data[i..i + 3].copy_from_slice(&color);
        }
    }
}

/// Everything the summary image shows, on the source grid.
#[derive(Debug, Clone, Copy)]
pub struct SummaryInput<'a> {
    pub study: &'a StudyContext,
    pub source: &'a SeriesInfo,
    /// CBF in mL/100 g/min, `(z, y, x)`.
    pub cbf: &'a Array3<f32>,
    /// Tmax in seconds, `(z, y, x)`.
    pub tmax: &'a Array3<f32>,
    /// Labels `(z, y, x)`: 0 background, 1 penumbra, 2 core.
    pub labels: &'a LabelVolume,
    /// Figures of `labels`, from [`crate::volumes_from_labels`].
    pub figures: &'a VolumeFigures,
    /// Confidence score in [0, 1], `None` when not computed.
    pub confidence: Option<f64>,
    pub reviewed: bool,
    pub algorithm: &'a AlgorithmInfo,
    pub series_number: i32,
}

/// Renders the summary image.
///
/// Errors when the maps and labels differ in shape, are empty, or hold a label other than 0, 1, 2.
pub fn render_summary(input: &SummaryInput) -> Result<RgbImage, ExportError> {
    let (slices, rows, columns) = check_shapes(input)?;
    let lines = header_lines(input);

    let tile_width = 2 * columns + GAP;
    let tiles_per_row = (MAX_GRID_WIDTH / (tile_width + TILE_GAP)).clamp(1, slices);
    let grid_rows = slices.div_ceil(tiles_per_row);
    let grid_width = tiles_per_row * (tile_width + TILE_GAP) - TILE_GAP;
    let text_width = lines
        .iter()
        .map(|(text, _)| font::text_width(text) * TEXT_SCALE)
        .max()
        .unwrap_or(0);
    let width = grid_width.max(text_width) + 2 * MARGIN;
    let header_height = lines.len() * LINE_HEIGHT + MARGIN;
    let height = header_height + grid_rows * (rows + TILE_GAP) - TILE_GAP + 2 * MARGIN;

    let mut image = RgbImage::new(width, height);
    for (i, (text, color)) in lines.iter().enumerate() {
        draw_text(
            &mut image,
            MARGIN,
            MARGIN + i * LINE_HEIGHT,
            text,
            TEXT_SCALE,
            *color,
        );
    }
    for z in 0..slices {
        let (left, top) = tile_origin(z, tiles_per_row, tile_width, rows, header_height);
        draw_panel(&mut image, input, z, input.cbf, CBF_WINDOW, (left, top));
        draw_panel(
            &mut image,
            input,
            z,
            input.tmax,
            TMAX_WINDOW,
            (left + columns + GAP, top),
        );
        draw_text(
            &mut image,
            left + 2,
            top + 2,
            &(z + 1).to_string(),
            1,
            SLICE_NUMBER_COLOR,
        );
    }
    Ok(image)
}

/// Returns the top-left pixel of slice `z`'s tile.
fn tile_origin(
    z: usize,
    tiles_per_row: usize,
    tile_width: usize,
    rows: usize,
    header_height: usize,
) -> (usize, usize) {
    let left = MARGIN + (z % tiles_per_row) * (tile_width + TILE_GAP);
    let top = MARGIN + header_height + (z / tiles_per_row) * (rows + TILE_GAP);
    (left, top)
}

fn check_shapes(input: &SummaryInput) -> Result<(usize, usize, usize), ExportError> {
    let shape = input.labels.dim();
    if input.cbf.dim() != shape || input.tmax.dim() != shape {
        return Err(ExportError::InvalidInput(format!(
            "summary maps must share the label shape {shape:?}, got CBF {:?} and Tmax {:?}",
            input.cbf.dim(),
            input.tmax.dim()
        )));
    }
    let (slices, rows, columns) = shape;
    if slices == 0 || rows == 0 || columns == 0 {
        return Err(ExportError::InvalidInput(format!(
            "summary label volume shape {shape:?} is empty; pass the (z, y, x) source grid"
        )));
    }
    crate::seg::check_label_values(input.labels)?;
    Ok(shape)
}

/// Returns the header lines and their colours.
fn header_lines(input: &SummaryInput) -> Vec<(String, [u8; 3])> {
    let f = input.figures;
    let ratio = match f.mismatch_ratio {
        Some(ratio) => format!("{ratio:.2}"),
        None => "N/A (CORE 0 ML)".to_string(),
    };
    let confidence = match input.confidence {
        Some(score) => format!("{score:.2}"),
        None => "N/A".to_string(),
    };
    let mut lines = vec![
        (
            format!("PENUMBRA CT PERFUSION SUMMARY  {}", input.algorithm.name),
            TEXT_COLOR,
        ),
        (
            format!(
                "CORE {:.1} ML   PENUMBRA {:.1} ML",
                f.core_volume_ml, f.penumbra_volume_ml
            ),
            TEXT_COLOR,
        ),
        (
            format!("MISMATCH {:.1} ML   RATIO {ratio}", f.mismatch_volume_ml),
            TEXT_COLOR,
        ),
        (format!("CONFIDENCE {confidence}"), TEXT_COLOR),
        (
            "LEFT CBF 0-60 ML/100G/MIN   RIGHT TMAX 0-12 S".to_string(),
            TEXT_COLOR,
        ),
        ("RED CORE   GREEN PENUMBRA".to_string(), TEXT_COLOR),
    ];
    if !input.reviewed {
        lines.push((
            "NOT FOR DIAGNOSTIC USE WITHOUT REVIEW".to_string(),
            WARNING_COLOR,
        ));
    }
    lines
}

/// Draws slice `z` of `map` in grey with the label outlines, top-left corner at `origin`.
fn draw_panel(
    image: &mut RgbImage,
    input: &SummaryInput,
    z: usize,
    map: &Array3<f32>,
    window: (f32, f32),
    origin: (usize, usize),
) {
    let (_, rows, columns) = map.dim();
    for y in 0..rows {
        for x in 0..columns {
            let color = match outline_label(input.labels, z, y, x) {
                Some(Label::Core) => CORE_COLOR,
                Some(Label::Penumbra) => PENUMBRA_COLOR,
                _ => grey(map[[z, y, x]], window),
            };
            image.set(origin.0 + x, origin.1 + y, color);
        }
    }
}

fn grey(value: f32, (low, high): (f32, f32)) -> [u8; 3] {
    if !value.is_finite() {
        return BACKGROUND;
    }
    let level = ((value - low) / (high - low)).clamp(0.0, 1.0);
    let level = (level * 255.0).round() as u8;
    [level; 3]
}

/// Returns the label of `(z, y, x)` when the voxel is core or penumbra and lies on the edge of its
/// region: a 4-neighbour in the slice has another label, or the voxel is on the slice border.
fn outline_label(labels: &LabelVolume, z: usize, y: usize, x: usize) -> Option<Label> {
    let value = labels[[z, y, x]];
    let label = match value {
        v if v == Label::Core as u8 => Label::Core,
        v if v == Label::Penumbra as u8 => Label::Penumbra,
        _ => return None,
    };
    let (_, rows, columns) = labels.dim();
    let neighbours = [
        y.checked_sub(1).map(|ny| (ny, x)),
        (y + 1 < rows).then_some((y + 1, x)),
        x.checked_sub(1).map(|nx| (y, nx)),
        (x + 1 < columns).then_some((y, x + 1)),
    ];
    let on_edge = neighbours
        .iter()
        .any(|n| n.is_none_or(|(ny, nx)| labels[[z, ny, nx]] != value));
    on_edge.then_some(label)
}

fn draw_text(
    image: &mut RgbImage,
    left: usize,
    top: usize,
    text: &str,
    scale: usize,
    color: [u8; 3],
) {
    for (i, c) in text.chars().enumerate() {
        let glyph_left = left + i * font::ADVANCE * scale;
        for row in 0..font::GLYPH_HEIGHT {
            for column in 0..font::GLYPH_WIDTH {
                if !font::is_set(c, row, column) {
                    continue;
                }
                for dy in 0..scale {
                    for dx in 0..scale {
                        image.set(
                            glyph_left + column * scale + dx,
                            top + row * scale + dy,
                            color,
                        );
                    }
                }
            }
        }
    }
}

/// Encodes `image` as an 8-bit RGB PNG.
pub fn summary_png(image: &RgbImage) -> Result<Vec<u8>, ExportError> {
    let (width, height) = image_size_u32(image)?;
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(&image.data)?;
    writer.finish()?;
    Ok(bytes)
}

fn image_size_u32(image: &RgbImage) -> Result<(u32, u32), ExportError> {
    if image.data.len() != image.width * image.height * 3 {
        return Err(ExportError::InvalidInput(format!(
            "RGB image data has {} bytes, expected width {} x height {} x 3",
            image.data.len(),
            image.width,
            image.height
        )));
    }
    let width = u32::try_from(image.width).ok();
    let height = u32::try_from(image.height).ok();
    width.zip(height).ok_or_else(|| {
        ExportError::InvalidInput(format!(
            "image size {}x{} exceeds u32",
            image.width, image.height
        ))
    })
}

/// Builds a Secondary Capture Image Storage object (RGB, 8 bits) holding `image`, in a new
/// series of the source study.
///
/// Errors when the image is larger than 65535 pixels on a side.
pub fn build_summary_sc(
    input: &SummaryInput,
    image: &RgbImage,
) -> Result<InMemDicomObject, ExportError> {
    image_size_u32(image)?;
    let size = |n: usize| {
        u16::try_from(n).map_err(|_| {
            ExportError::InvalidInput(format!("summary image dimension {n} exceeds 65535 pixels"))
        })
    };
    let (rows, columns) = (size(image.height)?, size(image.width)?);

    let mut obj = InMemDicomObject::new_empty();
    dcm::put_patient_and_study(&mut obj, input.study);
    dcm::put_sop_common(&mut obj, uids::SECONDARY_CAPTURE_IMAGE_STORAGE, &new_uid());
    put_series_and_equipment(&mut obj, input);
    put_general_image(&mut obj, input);

    dcm::put_us(&mut obj, tags::SAMPLES_PER_PIXEL, 3);
    obj.put_str(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "RGB");
    dcm::put_us(&mut obj, tags::PLANAR_CONFIGURATION, 0);
    dcm::put_us(&mut obj, tags::ROWS, rows);
    dcm::put_us(&mut obj, tags::COLUMNS, columns);
    dcm::put_us(&mut obj, tags::BITS_ALLOCATED, 8);
    dcm::put_us(&mut obj, tags::BITS_STORED, 8);
    dcm::put_us(&mut obj, tags::HIGH_BIT, 7);
    dcm::put_us(&mut obj, tags::PIXEL_REPRESENTATION, 0);
    let mut pixels = image.data.clone();
    if pixels.len() % 2 == 1 {
        pixels.push(0);
    }
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        PrimitiveValue::from(pixels),
    ));
    Ok(obj)
}

fn put_series_and_equipment(obj: &mut InMemDicomObject, input: &SummaryInput) {
    obj.put_str(tags::MODALITY, VR::CS, "OT");
    obj.put_str(tags::SERIES_INSTANCE_UID, VR::UI, new_uid());
    obj.put_str(tags::SERIES_NUMBER, VR::IS, input.series_number.to_string());
    let review = if input.reviewed { "" } else { " UNREVIEWED" };
    obj.put_str(
        tags::SERIES_DESCRIPTION,
        VR::LO,
        format!("Penumbra summary{review}"),
    );
    // Laterality is type 2C; the summary covers the whole brain, so it is present and empty.
    obj.put_str(tags::LATERALITY, VR::CS, "");

    obj.put_str(tags::MANUFACTURER, VR::LO, dcm::MANUFACTURER);
    obj.put_str(tags::CONVERSION_TYPE, VR::CS, "WSD");
    obj.put_str(
        tags::SECONDARY_CAPTURE_DEVICE_MANUFACTURER,
        VR::LO,
        dcm::MANUFACTURER,
    );
    obj.put_str(
        tags::SECONDARY_CAPTURE_DEVICE_MANUFACTURER_MODEL_NAME,
        VR::LO,
        input.algorithm.name.clone(),
    );
    obj.put_str(
        tags::SECONDARY_CAPTURE_DEVICE_SOFTWARE_VERSIONS,
        VR::LO,
        crate::seg::software_versions(input.algorithm),
    );
}

fn put_general_image(obj: &mut InMemDicomObject, input: &SummaryInput) {
    obj.put_str(tags::INSTANCE_NUMBER, VR::IS, "1");
    obj.put_str(tags::PATIENT_ORIENTATION, VR::CS, "");
    obj.put_str(tags::IMAGE_TYPE, VR::CS, "DERIVED\\SECONDARY");
    // The burned-in text contains figures only, nothing that identifies the patient.
    obj.put_str(tags::BURNED_IN_ANNOTATION, VR::CS, "NO");
    obj.put_str(tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00");
    obj.put_str(
        tags::DERIVATION_DESCRIPTION,
        VR::ST,
        "CBF and Tmax maps with ischemic core and penumbra outlines",
    );
    if !input.reviewed {
        obj.put_str(
            tags::IMAGE_COMMENTS,
            VR::LT,
            "NOT FOR DIAGNOSTIC USE WITHOUT REVIEW",
        );
    }
    dcm::put_seq(
        obj,
        tags::SOURCE_IMAGE_SEQUENCE,
        source_images(input.source),
    );
}

fn source_images(source: &SeriesInfo) -> Vec<InMemDicomObject> {
    source.slice_sources.iter().map(dcm::source_image_item).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volumes_from_labels;
    use penumbra_dicom::SeriesKind;
    use penumbra_imaging::Geometry;

    const SLICES: usize = 3;
    const SIZE: usize = 16;

    fn labels() -> LabelVolume {
        // Slice 1: a 6 x 6 penumbra block at rows/columns 4..10 around a 2 x 2 core at 6..8.
        let mut labels = Array3::<u8>::zeros((SLICES, SIZE, SIZE));
        for y in 4..10 {
            for x in 4..10 {
                labels[[1, y, x]] = Label::Penumbra as u8;
            }
        }
        for y in 6..8 {
            for x in 6..8 {
                labels[[1, y, x]] = Label::Core as u8;
            }
        }
        labels
    }

    fn series() -> SeriesInfo {
        SeriesInfo {
            study_instance_uid: "1.2.3".to_string(),
            series_instance_uid: "1.2.3.4".to_string(),
            frame_of_reference_uid: Some("1.2.3.5".to_string()),
            modality: "CT".to_string(),
            series_description: None,
            series_number: None,
            kind: SeriesKind::DynamicCtp,
            transfer_syntax_uid: uids::EXPLICIT_VR_LITTLE_ENDIAN.to_string(),
            slice_sources: Vec::new(),
            instance_count: 0,
            warnings: Vec::new(),
        }
    }

    fn render(reviewed: bool) -> RgbImage {
        let labels = labels();
        let geometry = Geometry {
            origin_mm: [0.0; 3],
            row_dir: [1.0, 0.0, 0.0],
            col_dir: [0.0, 1.0, 0.0],
            normal: [0.0, 0.0, 1.0],
            spacing_mm: [5.0, 1.0, 1.0],
        };
        let figures = volumes_from_labels(&labels, &geometry);
        let cbf = Array3::from_elem((SLICES, SIZE, SIZE), 30.0f32);
        let tmax = Array3::from_elem((SLICES, SIZE, SIZE), f32::NAN);
        let algorithm = AlgorithmInfo {
            name: "test".to_string(),
            version: "1".to_string(),
            model_card_id: "card".to_string(),
        };
        let input = SummaryInput {
            study: &StudyContext::default(),
            source: &series(),
            cbf: &cbf,
            tmax: &tmax,
            labels: &labels,
            figures: &figures,
            confidence: None,
            reviewed,
            algorithm: &algorithm,
            series_number: 1,
        };
        render_summary(&input).unwrap()
    }

    fn count_color(image: &RgbImage, color: [u8; 3]) -> usize {
        image.data.chunks(3).filter(|p| *p == color).count()
    }

    #[test]
    fn outline_marks_region_edges() {
        let labels = labels();
        assert_eq!(outline_label(&labels, 1, 6, 6), Some(Label::Core));
        assert_eq!(outline_label(&labels, 1, 4, 4), Some(Label::Penumbra));
        // (5, 5) is penumbra with penumbra on all four sides.
        assert_eq!(outline_label(&labels, 1, 5, 5), None);
        // (5, 6) is penumbra touching the core below it.
        assert_eq!(outline_label(&labels, 1, 5, 6), Some(Label::Penumbra));
        assert_eq!(outline_label(&labels, 1, 0, 0), None);
        assert_eq!(outline_label(&labels, 0, 6, 6), None);
    }

    #[test]
    fn panels_show_maps_and_outlines() {
        let image = render(false);
        let header_height = header_lines_count(false) * LINE_HEIGHT + MARGIN;
        let tile_width = 2 * SIZE + GAP;
        let (left, top) = tile_origin(1, SLICES, tile_width, SIZE, header_height);

        // CBF 30 in a 0..60 window is grey 128 (127.5 rounded).
        assert_eq!(image.pixel(left + 12, top + 12), Some([128; 3]));
        assert_eq!(image.pixel(left + 6, top + 6), Some(CORE_COLOR));
        assert_eq!(image.pixel(left + 4, top + 9), Some(PENUMBRA_COLOR));
        // Tmax is NaN everywhere: background except for outlines.
        let tmax_left = left + SIZE + GAP;
        assert_eq!(image.pixel(tmax_left + 12, top + 12), Some(BACKGROUND));
        assert_eq!(image.pixel(tmax_left + 7, top + 7), Some(CORE_COLOR));
        // 4 core voxels, all on the edge, in both panels.
        assert_eq!(count_color(&image, CORE_COLOR), 8);
    }

    fn header_lines_count(reviewed: bool) -> usize {
        if reviewed {
            6
        } else {
            7
        }
    }

    #[test]
    fn warning_line_only_when_unreviewed() {
        assert!(count_color(&render(false), WARNING_COLOR) > 0);
        assert_eq!(count_color(&render(true), WARNING_COLOR), 0);
    }

    #[test]
    fn png_round_trips() {
        let image = render(false);
        let bytes = summary_png(&image).unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut buffer = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buffer).unwrap();
        assert_eq!(
            (info.width as usize, info.height as usize),
            (image.width, image.height)
        );
        assert_eq!(info.color_type, png::ColorType::Rgb);
        assert_eq!(&buffer[..info.buffer_size()], image.data.as_slice());
    }

    #[test]
    fn render_rejects_mismatched_maps() {
        let labels = labels();
        let small = Array3::<f32>::zeros((SLICES, SIZE, SIZE - 1));
        let figures = volumes_from_labels(
            &labels,
            &Geometry {
                origin_mm: [0.0; 3],
                row_dir: [1.0, 0.0, 0.0],
                col_dir: [0.0, 1.0, 0.0],
                normal: [0.0, 0.0, 1.0],
                spacing_mm: [1.0; 3],
            },
        );
        let algorithm = AlgorithmInfo {
            name: String::new(),
            version: String::new(),
            model_card_id: String::new(),
        };
        let input = SummaryInput {
            study: &StudyContext::default(),
            source: &series(),
            cbf: &small,
            tmax: &small,
            labels: &labels,
            figures: &figures,
            confidence: Some(0.5),
            reviewed: true,
            algorithm: &algorithm,
            series_number: 1,
        };
        assert!(matches!(
            render_summary(&input),
            Err(ExportError::InvalidInput(_))
        ));
    }
}
