//! DICOM and truth writer: CT Image Storage files (Explicit VR Little Endian, one per slice and
//! time point, or one per slice and map) and a `truth/` folder of `.npy` volumes and JSON.

use std::fs;
use std::path::{Path, PathBuf};

use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::InMemDicomObject;
use ndarray::Array3;
use penumbra_imaging::Geometry;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use serde_json::json;

use crate::acquisition::{stored_value, RESCALE_INTERCEPT};
use crate::hemodynamics::{K_H, RHO};
use crate::params::VendorStyle;
use crate::truth::{LesionVolumes, Truth, CORE_RELATIVE_CBF, HYPOPERFUSED_TMAX_S};
use crate::{Design, PhantomError, PhantomMaps, PhantomParams, PhantomStudy};

const CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";
const EXPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2.1";
/// Study start time of day in seconds (08:00:00); the date is fixed so output is reproducible.
const STUDY_START_S: f64 = 8.0 * 3600.0;
const STUDY_DATE: &str = "20260101";

/// Output folders, UIDs and truth volumes of a study written by [`write_study`] or [`write_maps`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WrittenStudy {
    pub dicom_dir: PathBuf,
    pub truth_dir: PathBuf,
    /// Number of DICOM files written.
    pub instances: usize,
    pub study_instance_uid: String,
    /// One per series: the dynamic series, or the CBF, CBV, MTT and Tmax map series.
    pub series_instance_uids: Vec<String>,
    pub volumes: LesionVolumes,
}

/// Deterministic UIDs of one study: `2.25.<128 bits>` from ChaCha8 keyed by the seed, a digest of
/// all parameters, the purpose and an index. The same parameters give the same UIDs; parameters
/// that differ in anything give different ones.
struct UidSource {
    seed: u64,
    digest: u64,
}

impl UidSource {
    fn new(params: &PhantomParams) -> Result<UidSource, PhantomError> {
        let text = serde_json::to_string(params).map_err(|source| PhantomError::Json { what: "parameters", source })?;
        Ok(UidSource { seed: params.seed, digest: fnv1a_64(text.as_bytes()) })
    }

    fn uid(&self, purpose: u64, index: u64) -> String {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&self.seed.to_le_bytes());
        key[8..16].copy_from_slice(&self.digest.to_le_bytes());
        key[16..24].copy_from_slice(&purpose.to_le_bytes());
        key[24..].copy_from_slice(&index.to_le_bytes());
        let value: u128 = ChaCha8Rng::from_seed(key).random();
        format!("2.25.{value}")
    }
}

/// UID purposes.
const UID_STUDY: u64 = 1;
const UID_SERIES: u64 = 2;
const UID_FRAME_OF_REFERENCE: u64 = 3;
const UID_INSTANCE: u64 = 4;
const UID_IMPLEMENTATION: u64 = 5;

/// 64-bit FNV-1a hash.
fn fnv1a_64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= b as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Header values shared by every instance of a study.
struct StudyHeader<'a> {
    params: &'a PhantomParams,
    geometry: &'a Geometry,
    study_uid: String,
    frame_of_reference_uid: String,
    implementation_uid: String,
}

fn put(obj: &mut InMemDicomObject, tag: Tag, vr: VR, value: impl Into<PrimitiveValue>) {
    obj.put(DataElement::new(tag, vr, value.into()));
}

/// Formats a decimal string of at most 16 characters.
fn ds(value: f64) -> String {
    let text = format!("{value:.6}");
    let trimmed = text.trim_end_matches('0').trim_end_matches('.');
    let text = if trimmed.is_empty() || trimmed == "-" { "0".to_string() } else { trimmed.to_string() };
    if text.len() <= 16 {
        text
    } else {
        format!("{value:.6e}")
    }
}

/// Formats seconds since midnight as a DICOM TM value `HHMMSS.FFFFFF`.
fn dicom_time(seconds: f64) -> String {
    let micros = (seconds * 1e6).round().max(0.0) as u64;
    let (h, rest) = (micros / 3_600_000_000 % 24, micros % 3_600_000_000);
    let (m, rest) = (rest / 60_000_000, rest % 60_000_000);
    let (s, fraction) = (rest / 1_000_000, rest % 1_000_000);
    format!("{h:02}{m:02}{s:02}.{fraction:06}")
}

impl StudyHeader<'_> {
    /// Returns the attributes of the Patient, General Study, General Series, Frame of Reference,
    /// General Equipment, Image Plane, Image Pixel (without data), CT Image and SOP Common modules
    /// that do not change between the instances of a series.
    fn series_base(&self, series_uid: &str, series_number: u32, description: &str, image_type: &str) -> InMemDicomObject {
        let p = self.params;
        let g = self.geometry;
        let mut obj = InMemDicomObject::new_empty();

        put(&mut obj, tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 100");
        put(&mut obj, tags::IMAGE_TYPE, VR::CS, image_type);
        put(&mut obj, tags::SOP_CLASS_UID, VR::UI, CT_IMAGE_STORAGE);
        put(&mut obj, tags::STUDY_DATE, VR::DA, STUDY_DATE);
        put(&mut obj, tags::SERIES_DATE, VR::DA, STUDY_DATE);
        put(&mut obj, tags::ACQUISITION_DATE, VR::DA, STUDY_DATE);
        put(&mut obj, tags::CONTENT_DATE, VR::DA, STUDY_DATE);
        put(&mut obj, tags::STUDY_TIME, VR::TM, dicom_time(STUDY_START_S));
        put(&mut obj, tags::SERIES_TIME, VR::TM, dicom_time(STUDY_START_S));
        put(&mut obj, tags::ACCESSION_NUMBER, VR::SH, "");
        put(&mut obj, tags::MODALITY, VR::CS, "CT");
        put(&mut obj, tags::MANUFACTURER, VR::LO, "SYNTHETIC");
        put(&mut obj, tags::REFERRING_PHYSICIAN_NAME, VR::PN, "");
        put(&mut obj, tags::STUDY_DESCRIPTION, VR::LO, "CT PERFUSION PHANTOM");
        put(&mut obj, tags::SERIES_DESCRIPTION, VR::LO, description);
        put(&mut obj, tags::MANUFACTURER_MODEL_NAME, VR::LO, format!("penumbra-phantom {}", env!("CARGO_PKG_VERSION")));

        put(&mut obj, tags::PATIENT_NAME, VR::PN, format!("PHANTOM^SEED{}", p.seed));
        put(&mut obj, tags::PATIENT_ID, VR::LO, format!("PHANTOM-{}", p.seed));
        put(&mut obj, tags::PATIENT_BIRTH_DATE, VR::DA, "19600101");
        put(&mut obj, tags::PATIENT_SEX, VR::CS, "O");

        put(&mut obj, tags::BODY_PART_EXAMINED, VR::CS, "HEAD");
        put(&mut obj, tags::SLICE_THICKNESS, VR::DS, ds(g.spacing_mm[0]));
        put(&mut obj, tags::SPACING_BETWEEN_SLICES, VR::DS, ds(g.spacing_mm[0]));
        put(&mut obj, tags::KVP, VR::DS, "80");
        put(&mut obj, tags::SOFTWARE_VERSIONS, VR::LO, env!("CARGO_PKG_VERSION"));
        put(&mut obj, tags::CONVOLUTION_KERNEL, VR::SH, "H20f");
        put(&mut obj, tags::PATIENT_POSITION, VR::CS, "HFS");
        put(&mut obj, tags::CONTRAST_BOLUS_AGENT, VR::LO, "Iohexol 350");
        put(&mut obj, tags::CONTRAST_BOLUS_VOLUME, VR::DS, "40");
        put(&mut obj, tags::CONTRAST_FLOW_RATE, VR::DS, "5");

        let sd = p.noise.sd_hu(p.slice_mm);
        if sd > 0.0 {
            // Invert SD = 103.09 / sqrt(mAs) * sqrt(5 / thickness) for the exposure header.
            let mas = (103.09 / sd).powi(2) * 5.0 / p.slice_mm;
            put(&mut obj, tags::EXPOSURE_TIME, VR::IS, "1000");
            put(&mut obj, tags::X_RAY_TUBE_CURRENT, VR::IS, format!("{}", mas.round() as i64));
            put(&mut obj, tags::EXPOSURE, VR::IS, format!("{}", mas.round() as i64));
        }

        put(&mut obj, tags::STUDY_INSTANCE_UID, VR::UI, self.study_uid.as_str());
        put(&mut obj, tags::SERIES_INSTANCE_UID, VR::UI, series_uid);
        put(&mut obj, tags::STUDY_ID, VR::SH, "1");
        put(&mut obj, tags::SERIES_NUMBER, VR::IS, series_number.to_string());
        put(&mut obj, tags::IMAGE_ORIENTATION_PATIENT, VR::DS, orientation(g));
        put(&mut obj, tags::FRAME_OF_REFERENCE_UID, VR::UI, self.frame_of_reference_uid.as_str());
        put(&mut obj, tags::POSITION_REFERENCE_INDICATOR, VR::LO, "");

        let size = p.matrix.size() as u16;
        put(&mut obj, tags::SAMPLES_PER_PIXEL, VR::US, 1_u16);
        put(&mut obj, tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2");
        put(&mut obj, tags::ROWS, VR::US, size);
        put(&mut obj, tags::COLUMNS, VR::US, size);
        put(&mut obj, tags::PIXEL_SPACING, VR::DS, format!("{}\\{}", ds(g.spacing_mm[1]), ds(g.spacing_mm[2])));
        put(&mut obj, tags::BITS_ALLOCATED, VR::US, 16_u16);
        put(&mut obj, tags::BITS_STORED, VR::US, 16_u16);
        put(&mut obj, tags::HIGH_BIT, VR::US, 15_u16);
        put(&mut obj, tags::PIXEL_REPRESENTATION, VR::US, 1_u16);
        obj
    }

    /// Adds the per-slice geometry, the pixels and the identity of one instance, and writes it.
    fn write_instance(&self, mut obj: InMemDicomObject, slice: usize, instance_uid: &str, pixels: &[i16], path: &Path) -> Result<(), PhantomError> {
        let position = self.geometry.position_mm(slice as f64, 0.0, 0.0);
        let location = (0..3).map(|i| position[i] * self.geometry.normal[i]).sum::<f64>();
        put(&mut obj, tags::IMAGE_POSITION_PATIENT, VR::DS, format!("{}\\{}\\{}", ds(position[0]), ds(position[1]), ds(position[2])));
        put(&mut obj, tags::SLICE_LOCATION, VR::DS, ds(location));
        put(&mut obj, tags::SOP_INSTANCE_UID, VR::UI, instance_uid);

        let bytes: Vec<u8> = pixels.iter().flat_map(|v| v.to_le_bytes()).collect();
        put(&mut obj, tags::PIXEL_DATA, VR::OW, bytes);

        let meta = FileMetaTableBuilder::new()
            .transfer_syntax(EXPLICIT_VR_LITTLE_ENDIAN)
            .implementation_class_uid(self.implementation_uid.as_str())
            .implementation_version_name("PENUMBRA_PHANTOM");
        let file = obj
            .with_meta(meta)
            .map_err(|e| PhantomError::FileMeta { path: path.to_path_buf(), message: e.to_string() })?;
        file.write_to_file(path).map_err(|e| PhantomError::WriteDicom { path: path.to_path_buf(), message: e.to_string() })
    }
}

fn orientation(g: &Geometry) -> String {
    let values: Vec<String> = g.row_dir.iter().chain(g.col_dir.iter()).map(|&v| ds(v)).collect();
    values.join("\\")
}

fn create_dir(path: &Path) -> Result<(), PhantomError> {
    fs::create_dir_all(path).map_err(|source| PhantomError::CreateDir { path: path.to_path_buf(), source })
}

/// Returns InstanceNumbers `1..=count`, in order or, for Philips-like studies, shuffled by the seed.
fn instance_numbers(count: usize, style: VendorStyle, seed: u64) -> Vec<u32> {
    let mut numbers: Vec<u32> = (1..=count as u32).collect();
    if style == VendorStyle::PhilipsLike {
        let mut rng = crate::instance_order_rng(seed);
        for i in (1..numbers.len()).rev() {
            let j = rng.random_range(0..=i);
            numbers.swap(i, j);
        }
    }
    numbers
}

/// Writes the dynamic study to `out/dicom/` (one CT Image Storage file per slice and frame,
/// `IM_F<frame>_S<slice>.dcm`) and its truth to `out/truth/`. `style` sets the time headers:
/// GE-like and Philips-like files carry TemporalPositionIdentifier, Siemens-like files do not;
/// Philips-like files have shuffled InstanceNumbers. AcquisitionTime always includes the study's
/// per-slice offsets.
pub fn write_study(study: &PhantomStudy, out: &Path, style: VendorStyle) -> Result<WrittenStudy, PhantomError> {
    let params = &study.params;
    let uids = UidSource::new(params)?;
    let header = StudyHeader {
        params,
        geometry: &study.volume.geometry,
        study_uid: uids.uid(UID_STUDY, 0),
        frame_of_reference_uid: uids.uid(UID_FRAME_OF_REFERENCE, 0),
        implementation_uid: UidSource { seed: 0, digest: 0 }.uid(UID_IMPLEMENTATION, 0),
    };
    let series_uid = uids.uid(UID_SERIES, 0);

    let dicom_dir = out.join("dicom");
    create_dir(&dicom_dir)?;

    let [frames, slices, rows, columns] = [
        study.volume.voxels.shape()[0],
        study.volume.voxels.shape()[1],
        study.volume.voxels.shape()[2],
        study.volume.voxels.shape()[3],
    ];
    if study.volume.frame_times_s.len() != frames || study.slice_offsets_s.len() != slices || rows != columns || rows != params.matrix.size() {
        return Err(PhantomError::InvalidParameter {
            name: "study",
            value: format!("voxels {:?}, {} frame times, {} slice offsets", study.volume.voxels.shape(), study.volume.frame_times_s.len(), study.slice_offsets_s.len()),
            expected: "one frame time per frame, one slice offset per slice and slices of the parameters' matrix, as generate returns",
        });
    }
    let description = format!("PERFUSION 4D {}mm", ds(params.slice_mm));
    let base = header.series_base(&series_uid, 1, &description, "ORIGINAL\\PRIMARY\\AXIAL");
    let numbers = instance_numbers(frames * slices, style, params.seed);
    let mut pixels = vec![0i16; rows * columns];

    for f in 0..frames {
        for z in 0..slices {
            let index = f * slices + z;
            let mut obj = base.clone();
            let acquisition_s = STUDY_START_S + study.volume.frame_times_s[f] - mean(&study.slice_offsets_s) + study.slice_offsets_s[z];
            put(&mut obj, tags::ACQUISITION_TIME, VR::TM, dicom_time(acquisition_s));
            put(&mut obj, tags::CONTENT_TIME, VR::TM, dicom_time(acquisition_s));
            put(&mut obj, tags::ACQUISITION_NUMBER, VR::IS, (f + 1).to_string());
            put(&mut obj, tags::INSTANCE_NUMBER, VR::IS, numbers[index].to_string());
            if style != VendorStyle::SiemensLike {
                put(&mut obj, tags::TEMPORAL_POSITION_IDENTIFIER, VR::IS, (f + 1).to_string());
                put(&mut obj, tags::NUMBER_OF_TEMPORAL_POSITIONS, VR::IS, frames.to_string());
            }
            put(&mut obj, tags::RESCALE_INTERCEPT, VR::DS, ds(RESCALE_INTERCEPT));
            put(&mut obj, tags::RESCALE_SLOPE, VR::DS, "1");
            put(&mut obj, tags::RESCALE_TYPE, VR::LO, "HU");
            put(&mut obj, tags::WINDOW_CENTER, VR::DS, "40");
            put(&mut obj, tags::WINDOW_WIDTH, VR::DS, "80");

            let slice = study.volume.voxels.slice(ndarray::s![f, z, .., ..]);
            for (out, &hu) in pixels.iter_mut().zip(slice.iter()) {
                *out = stored_value(hu);
            }
            let path = dicom_dir.join(format!("IM_F{f:03}_S{z:03}.dcm"));
            header.write_instance(obj, z, &uids.uid(UID_INSTANCE, index as u64), &pixels, &path)?;
        }
    }

    let truth_dir = out.join("truth");
    let extra = json!({
        "frame_times_s": study.volume.frame_times_s,
        "slice_offsets_s": study.slice_offsets_s,
        "vendor_style": style,
        "series": [{ "series_instance_uid": series_uid, "description": description }],
    });
    write_truth(&truth_dir, params, &study.volume.geometry, &study.truth, &study.design, &header.study_uid, extra)?;

    Ok(WrittenStudy {
        dicom_dir,
        truth_dir,
        instances: frames * slices,
        study_instance_uid: header.study_uid,
        series_instance_uids: vec![series_uid],
        volumes: study.truth.volumes,
    })
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

/// A vendor-style map series: name, SeriesDescription and RescaleSlope (map unit per stored value).
const MAP_SERIES: [(&str, &str, f64); 4] = [("cbf", "CBF", 0.1), ("cbv", "CBV", 0.1), ("mtt", "MTT", 0.01), ("tmax", "TMAX", 0.01)];

/// Writes the true CBF (mL/100 g/min), CBV (mL/100 g), MTT (s) and Tmax (s) maps as four CT
/// Image Storage series (ImageType DERIVED\SECONDARY\AXIAL, int16 with RescaleSlope 0.1 or 0.01,
/// RescaleIntercept 0, RescaleType US) to `out/dicom/`, with the truth in `out/truth/`.
pub fn write_maps(maps: &PhantomMaps, out: &Path) -> Result<WrittenStudy, PhantomError> {
    let params = &maps.params;
    let uids = UidSource::new(params)?;
    let header = StudyHeader {
        params,
        geometry: &maps.geometry,
        study_uid: uids.uid(UID_STUDY, 0),
        frame_of_reference_uid: uids.uid(UID_FRAME_OF_REFERENCE, 0),
        implementation_uid: UidSource { seed: 0, digest: 0 }.uid(UID_IMPLEMENTATION, 0),
    };
    let dicom_dir = out.join("dicom");
    create_dir(&dicom_dir)?;

    let mut series_uids = Vec::new();
    let mut series_json = Vec::new();
    let mut instances = 0;
    for (number, (name, description, slope)) in MAP_SERIES.iter().enumerate() {
        let values = match *name {
            "cbf" => &maps.truth.cbf,
            "cbv" => &maps.truth.cbv,
            "mtt" => &maps.truth.mtt,
            _ => &maps.truth.tmax,
        };
        let series_uid = uids.uid(UID_SERIES, number as u64 + 1);
        let base = header.series_base(&series_uid, 101 + number as u32, description, "DERIVED\\SECONDARY\\AXIAL");

        for z in 0..values.shape()[0] {
            let mut obj = base.clone();
            put(&mut obj, tags::ACQUISITION_TIME, VR::TM, dicom_time(STUDY_START_S));
            put(&mut obj, tags::CONTENT_TIME, VR::TM, dicom_time(STUDY_START_S + params.duration_s()));
            put(&mut obj, tags::ACQUISITION_NUMBER, VR::IS, "1");
            put(&mut obj, tags::INSTANCE_NUMBER, VR::IS, (z + 1).to_string());
            put(&mut obj, tags::RESCALE_INTERCEPT, VR::DS, "0");
            put(&mut obj, tags::RESCALE_SLOPE, VR::DS, ds(*slope));
            put(&mut obj, tags::RESCALE_TYPE, VR::LO, "US");

            let pixels: Vec<i16> = values
                .slice(ndarray::s![z, .., ..])
                .iter()
                .map(|&v| (v as f64 / slope).round().clamp(i16::MIN as f64, i16::MAX as f64) as i16)
                .collect();
            let path = dicom_dir.join(format!("{}_S{z:03}.dcm", description));
            let instance_uid = uids.uid(UID_INSTANCE, ((number as u64 + 1) << 32) + z as u64);
            header.write_instance(obj, z, &instance_uid, &pixels, &path)?;
            instances += 1;
        }
        series_json.push(json!({ "series_instance_uid": series_uid, "description": description, "rescale_slope": slope }));
        series_uids.push(series_uid);
    }

    let truth_dir = out.join("truth");
    write_truth(&truth_dir, params, &maps.geometry, &maps.truth, &maps.design, &header.study_uid, json!({ "series": series_json }))?;
    Ok(WrittenStudy {
        dicom_dir,
        truth_dir,
        instances,
        study_instance_uid: header.study_uid,
        series_instance_uids: series_uids,
        volumes: maps.truth.volumes,
    })
}

/// Writes each map and mask as `.npy` (shape `(z, y, x)`), `aif.json` and `truth.json`.
fn write_truth(dir: &Path, params: &PhantomParams, geometry: &Geometry, truth: &Truth, design: &Design, study_uid: &str, extra: serde_json::Value) -> Result<(), PhantomError> {
    create_dir(dir)?;

    let floats = [("cbf", &truth.cbf), ("cbv", &truth.cbv), ("mtt", &truth.mtt), ("tmax", &truth.tmax), ("delay", &truth.delay), ("tau", &truth.tau)];
    for (name, values) in floats {
        write_file(&dir.join(format!("{name}.npy")), &npy_f32(values))?;
    }
    let masks = [
        ("labels", &truth.labels),
        ("tissue", &truth.tissue),
        ("core_design", &truth.core_design),
        ("penumbra_design", &truth.penumbra_design),
        ("oligemia_design", &truth.oligemia_design),
    ];
    for (name, values) in masks {
        write_file(&dir.join(format!("{name}.npy")), &npy_u8(values))?;
    }

    let aif = serde_json::to_vec_pretty(&truth.input_functions).map_err(|source| PhantomError::Json { what: "input functions", source })?;
    write_file(&dir.join("aif.json"), &aif)?;

    let document = json!({
        "seed": params.seed,
        "params": params,
        "design": design,
        "geometry": geometry,
        "shape_zyx": truth.cbf.shape(),
        "voxel_volume_ml": geometry.voxel_volume_ml(),
        "study_instance_uid": study_uid,
        "constants": { "rho_g_per_ml": RHO, "k_h": K_H },
        "label_rules": {
            "core": format!("cbf / reference_cbf < {CORE_RELATIVE_CBF}"),
            "hypoperfused": format!("tmax > {HYPOPERFUSED_TMAX_S} s"),
            "penumbra": "hypoperfused and not core",
        },
        "reference_cbf": truth.reference_cbf,
        "volumes_ml": truth.volumes,
        "mismatch_ratio": truth.volumes.mismatch_ratio,
        "acquisition": extra,
    });
    let text = serde_json::to_vec_pretty(&document).map_err(|source| PhantomError::Json { what: "truth", source })?;
    write_file(&dir.join("truth.json"), &text)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), PhantomError> {
    fs::write(path, bytes).map_err(|source| PhantomError::Write { path: path.to_path_buf(), source })
}

/// Encodes a C-order `.npy` (format version 1.0) with the given dtype descriptor.
fn npy(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let mut dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({},), }}", dims.join(", "));
    // The magic (6), version (2), length (2), dict and newline fill a multiple of 64 bytes.
    let total = 10 + dict.len() + 1;
    dict.push_str(&" ".repeat((64 - total % 64) % 64));
    dict.push('\n');

    let mut out = Vec::with_capacity(10 + dict.len() + data.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out.extend_from_slice(data);
    out
}

fn npy_f32(values: &Array3<f32>) -> Vec<u8> {
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    npy("<f4", values.shape(), &data)
}

fn npy_u8(values: &Array3<u8>) -> Vec<u8> {
    let data: Vec<u8> = values.iter().copied().collect();
    npy("|u1", values.shape(), &data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dicom_time_formats() {
        assert_eq!(dicom_time(8.0 * 3600.0 + 61.5), "080101.500000");
        assert_eq!(dicom_time(0.0), "000000.000000");
    }

    #[test]
    fn ds_fits_sixteen_characters() {
        assert_eq!(ds(-114.75), "-114.75");
        assert_eq!(ds(0.9), "0.9");
        assert_eq!(ds(0.0), "0");
        assert_eq!(ds(-1024.0), "-1024");
        assert!(ds(1.0 / 3.0).len() <= 16);
    }

    #[test]
    fn npy_header_is_aligned() {
        let bytes = npy_u8(&Array3::zeros([2, 3, 4]));
        let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + header_len) % 64, 0);
        assert_eq!(bytes.len(), 10 + header_len + 24);
        let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
        assert!(header.contains("'shape': (2, 3, 4,)"), "{header}");
        assert!(header.ends_with('\n'));
    }

    #[test]
    fn uids_are_valid_and_deterministic() {
        let params = PhantomParams::default();
        let a = UidSource::new(&params).unwrap();
        let b = UidSource::new(&params).unwrap();
        assert_eq!(a.uid(UID_INSTANCE, 7), b.uid(UID_INSTANCE, 7));
        assert_ne!(a.uid(UID_INSTANCE, 7), a.uid(UID_INSTANCE, 8));

        let other = UidSource::new(&PhantomParams { seed: 43, ..params }).unwrap();
        assert_ne!(a.uid(UID_STUDY, 0), other.uid(UID_STUDY, 0));

        let uid = a.uid(UID_STUDY, 0);
        assert!(uid.len() <= 64);
        let digits = &uid[5..];
        assert!(digits.chars().all(|c| c.is_ascii_digit()));
        assert!(!digits.starts_with('0') || digits == "0");
    }

    #[test]
    fn philips_numbers_are_a_permutation() {
        let mut numbers = instance_numbers(50, VendorStyle::PhilipsLike, 1);
        assert_ne!(numbers, (1..=50).collect::<Vec<u32>>());
        numbers.sort();
        assert_eq!(numbers, (1..=50).collect::<Vec<u32>>());
        assert_eq!(instance_numbers(3, VendorStyle::GeLike, 1), vec![1, 2, 3]);
    }
}
