//! A byte-level DICOM writer for tests, written from PS3.5 and independent of the crate's parser.
#![allow(dead_code)]

/// Builds a data set element by element, in tag order as the caller adds them.
pub struct Builder {
    pub big_endian: bool,
    pub explicit: bool,
    pub bytes: Vec<u8>,
}

impl Builder {
    pub fn explicit_le() -> Self {
        Builder { big_endian: false, explicit: true, bytes: Vec::new() }
    }

    pub fn explicit_be() -> Self {
        Builder { big_endian: true, explicit: true, bytes: Vec::new() }
    }

    pub fn implicit_le() -> Self {
        Builder { big_endian: false, explicit: false, bytes: Vec::new() }
    }

    fn u16(&mut self, v: u16) {
        let b = if self.big_endian { v.to_be_bytes() } else { v.to_le_bytes() };
        self.bytes.extend_from_slice(&b);
    }

    fn u32(&mut self, v: u32) {
        let b = if self.big_endian { v.to_be_bytes() } else { v.to_le_bytes() };
        self.bytes.extend_from_slice(&b);
    }

    /// Writes an element header with `len` (0xFFFFFFFF for undefined).
    pub fn header(&mut self, group: u16, element: u16, vr: &str, len: u32) -> &mut Self {
        self.u16(group);
        self.u16(element);
        if self.explicit {
            self.bytes.extend_from_slice(vr.as_bytes());
            if matches!(vr, "OB" | "OW" | "OF" | "SQ" | "UT" | "UN") {
                self.bytes.extend_from_slice(&[0, 0]);
                self.u32(len);
            } else {
                self.u16(len as u16);
            }
        } else {
            self.u32(len);
        }
        self
    }

    /// Writes an element with a raw value (padded to even length with `pad`).
    pub fn raw(&mut self, group: u16, element: u16, vr: &str, value: &[u8], pad: u8) -> &mut Self {
        let mut value = value.to_vec();
        if value.len() % 2 == 1 {
            value.push(pad);
        }
        self.header(group, element, vr, value.len() as u32);
        self.bytes.extend_from_slice(&value);
        self
    }

    pub fn text(&mut self, group: u16, element: u16, vr: &str, value: &str) -> &mut Self {
        let pad = if vr == "UI" { 0 } else { b' ' };
        self.raw(group, element, vr, value.as_bytes(), pad)
    }

    pub fn us(&mut self, group: u16, element: u16, value: u16) -> &mut Self {
        let b = if self.big_endian { value.to_be_bytes() } else { value.to_le_bytes() };
        self.raw(group, element, "US", &b, 0)
    }

    pub fn ul(&mut self, group: u16, element: u16, value: u32) -> &mut Self {
        let b = if self.big_endian { value.to_be_bytes() } else { value.to_le_bytes() };
        self.raw(group, element, "UL", &b, 0)
    }

    /// Writes 16-bit pixel data (OW) in the builder's byte order.
    pub fn pixels_u16(&mut self, values: &[u16]) -> &mut Self {
        let mut b = Vec::with_capacity(values.len() * 2);
        for v in values {
            b.extend_from_slice(&if self.big_endian { v.to_be_bytes() } else { v.to_le_bytes() });
        }
        self.raw(0x7FE0, 0x0010, "OW", &b, 0)
    }

    /// Writes encapsulated pixel data: an empty basic offset table, then one fragment per frame.
    pub fn encapsulated(&mut self, frames: &[Vec<u8>]) -> &mut Self {
        self.header(0x7FE0, 0x0010, "OB", 0xFFFF_FFFF);
        self.bytes.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0, 0, 0, 0]);
        for frame in frames {
            let mut fragment = frame.clone();
            if fragment.len() % 2 == 1 {
                fragment.push(0);
            }
            self.bytes.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0]);
            self.bytes.extend_from_slice(&(fragment.len() as u32).to_le_bytes());
            self.bytes.extend_from_slice(&fragment);
        }
        self.bytes.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        self
    }

    /// Writes a defined-length sequence of items, each built by the builders in `items`.
    pub fn sequence(&mut self, group: u16, element: u16, items: &[Vec<u8>]) -> &mut Self {
        let content_len: usize = items.iter().map(|i| i.len() + 8).sum();
        self.header(group, element, "SQ", content_len as u32);
        for item in items {
            self.u16(0xFFFE);
            self.u16(0xE000);
            self.u32(item.len() as u32);
            self.bytes.extend_from_slice(item);
        }
        self
    }

    /// Wraps the data set in preamble, "DICM" and File Meta (Explicit VR LE) for `ts`.
    pub fn part10(&self, ts: &str, sop_class: &str, sop_instance: &str) -> Vec<u8> {
        let mut meta = Builder::explicit_le();
        meta.raw(0x0002, 0x0001, "OB", &[0, 1], 0);
        meta.text(0x0002, 0x0002, "UI", sop_class);
        meta.text(0x0002, 0x0003, "UI", sop_instance);
        meta.text(0x0002, 0x0010, "UI", ts);
        let mut out = vec![0u8; 128];
        out.extend_from_slice(b"DICM");
        let mut group = Builder::explicit_le();
        group.ul(0x0002, 0x0000, meta.bytes.len() as u32);
        out.extend_from_slice(&group.bytes);
        out.extend_from_slice(&meta.bytes);
        out.extend_from_slice(&self.bytes);
        out
    }
}

pub const CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";
pub const ENHANCED_CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2.1";

/// Attributes of one synthetic CT slice.
pub struct Slice<'a> {
    pub sop_instance: &'a str,
    pub series: &'a str,
    pub instance_number: i32,
    pub position: [f64; 3],
    pub orientation: [f64; 6],
    pub temporal_index: Option<u32>,
    pub acquisition_time: &'a str,
    pub rows: u16,
    pub columns: u16,
    pub pixels: Vec<u16>,
    /// Writes RescaleSlope with VR UN, as some exporters do for attributes they do not know.
    pub slope_as_un: bool,
    pub acquisition_number: Option<i32>,
}

fn ds_list(values: &[f64]) -> String {
    values.iter().map(|v| format!("{v}")).collect::<Vec<_>>().join("\\")
}

/// Writes a classic single-frame CT slice (signed 16-bit, slope 1, intercept -1024) in `b`.
pub fn ct_slice(b: &mut Builder, s: &Slice<'_>) {
    b.text(0x0008, 0x0005, "CS", "ISO_IR 100")
        .text(0x0008, 0x0008, "CS", "ORIGINAL\\PRIMARY\\AXIAL")
        .text(0x0008, 0x0016, "UI", CT_IMAGE_STORAGE)
        .text(0x0008, 0x0018, "UI", s.sop_instance)
        .text(0x0008, 0x0032, "TM", s.acquisition_time)
        .text(0x0008, 0x0060, "CS", "CT")
        .text(0x0008, 0x103E, "LO", "SYNTHETIC")
        .text(0x0010, 0x0010, "PN", "Test^Patient")
        .text(0x0020, 0x000D, "UI", "1.2.3.4")
        .text(0x0020, 0x000E, "UI", s.series);
    if let Some(n) = s.acquisition_number {
        b.text(0x0020, 0x0012, "IS", &n.to_string());
    }
    b.text(0x0020, 0x0013, "IS", &s.instance_number.to_string())
        .text(0x0020, 0x0032, "DS", &ds_list(&s.position))
        .text(0x0020, 0x0037, "DS", &ds_list(&s.orientation));
    if let Some(t) = s.temporal_index {
        b.ul(0x0020, 0x9128, t);
    }
    b.us(0x0028, 0x0002, 1)
        .text(0x0028, 0x0004, "CS", "MONOCHROME2")
        .us(0x0028, 0x0010, s.rows)
        .us(0x0028, 0x0011, s.columns)
        .text(0x0028, 0x0030, "DS", "0.5\\0.5")
        .us(0x0028, 0x0100, 16)
        .us(0x0028, 0x0101, 16)
        .us(0x0028, 0x0102, 15)
        .us(0x0028, 0x0103, 1)
        .text(0x0028, 0x1052, "DS", "-1024");
    if s.slope_as_un {
        b.raw(0x0028, 0x1053, "UN", b"2 ", 0);
    } else {
        b.text(0x0028, 0x1053, "DS", "1");
    }
    b.pixels_u16(&s.pixels);
}

/// Returns a 2x2 slice with default attributes, for the caller to adjust.
pub fn default_slice<'a>(sop_instance: &'a str, series: &'a str, pixels: Vec<u16>) -> Slice<'a> {
    Slice {
        sop_instance,
        series,
        instance_number: 1,
        position: [0.0, 0.0, 0.0],
        orientation: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
        temporal_index: None,
        acquisition_time: "120000",
        rows: 2,
        columns: 2,
        pixels,
        slope_as_un: false,
        acquisition_number: None,
    }
}
