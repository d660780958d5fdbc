//! Typed, lenient access to attribute values.
//!
//! Numbers in text (DS, IS) are parsed leniently but never into a silent 0. A comma used as a
//! separator or decimal mark is accepted with a warning. An empty value, or anything that is not
//! a number, counts as absent with a warning.

use dicom_core::{Tag, VR};

use crate::dataset::DataSet;

impl DataSet {
    /// Returns the text of `tag` with padding (spaces, NULs) trimmed; `None` when absent or empty.
    pub fn string(&self, tag: Tag) -> Option<String> {
        let text = decode_text(self.bytes(tag)?);
        let trimmed = text.trim_matches(|c: char| c == '\0' || c.is_whitespace());
        (!trimmed.is_empty()).then(|| trimmed.to_string())
    }

    /// Returns the backslash-separated values of `tag`, each trimmed.
    pub fn strings(&self, tag: Tag) -> Vec<String> {
        match self.bytes(tag) {
            Some(bytes) => decode_text(bytes)
                .split('\\')
                .map(|v| v.trim_matches(|c: char| c == '\0' || c.is_whitespace()).to_string())
                .collect(),
            None => Vec::new(),
        }
    }

    /// Returns the first unsigned 16-bit value of `tag` (US, or a text number for robustness).
    pub fn u16(&self, tag: Tag) -> Option<u16> {
        let element = self.get(tag)?;
        let bytes = self.bytes(tag)?;
        match element.vr {
            VR::US | VR::SS | VR::OW | VR::UN | VR::OB => {
                let b: [u8; 2] = bytes.get(..2)?.try_into().ok()?;
                Some(if self.big_endian { u16::from_be_bytes(b) } else { u16::from_le_bytes(b) })
            }
            VR::UL | VR::SL => {
                let b: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
                let v = if self.big_endian { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) };
                u16::try_from(v).ok()
            }
            _ => self.string(tag)?.parse().ok(),
        }
    }

    /// Returns the decimal values of a DS attribute, parsed leniently.
    ///
    /// `expected` is the number of values the caller needs (2 for PixelSpacing); it settles
    /// whether a comma is a separator or a decimal mark. Returns `None` (with a warning pushed)
    /// when the attribute is empty, garbled or has the wrong number of values.
    pub fn decimals(&self, tag: Tag, name: &str, expected: usize, warnings: &mut Vec<String>) -> Option<Vec<f64>> {
        let bytes = self.bytes(tag)?;
        let text = decode_text(bytes);
        let parsed = parse_decimals(&text, expected);
        match parsed {
            Parsed::Ok(values) => Some(values),
            Parsed::Repaired(values, how) => {
                warnings.push(format!("{name} {:?} {how}; read as {values:?}", text.trim()));
                Some(values)
            }
            Parsed::Empty => {
                warnings.push(format!("{name} is present but empty; treated as absent"));
                None
            }
            Parsed::Garbage => {
                warnings.push(format!("{name} {:?} is not {expected} decimal number(s); treated as absent", text.trim()));
                None
            }
        }
    }

    /// Returns the single decimal value of a DS attribute (see [`DataSet::decimals`]).
    pub fn decimal(&self, tag: Tag, name: &str, warnings: &mut Vec<String>) -> Option<f64> {
        self.decimals(tag, name, 1, warnings).map(|v| v[0])
    }

    /// Returns the integer value of an IS attribute or a binary integer. A value like "3.0" is
    /// accepted with a warning, and garbage counts as absent with a warning.
    pub fn integer(&self, tag: Tag, name: &str, warnings: &mut Vec<String>) -> Option<i64> {
        let element = self.get(tag)?;
        if matches!(element.vr, VR::US | VR::UL | VR::SS | VR::SL) {
            return self.binary_integer(tag, element.vr);
        }
        let text = self.string(tag);
        let Some(text) = text else {
            warnings.push(format!("{name} is present but empty; treated as absent"));
            return None;
        };
        let text = text.trim_start_matches('+');
        if let Ok(v) = text.parse::<i64>() {
            return Some(v);
        }
        match text.parse::<f64>() {
            Ok(v) if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 => {
                warnings.push(format!("{name} {text:?} is not an integer string; read as {v}"));
                Some(v as i64)
            }
            _ => {
                warnings.push(format!("{name} {text:?} is not an integer; treated as absent"));
                None
            }
        }
    }

    fn binary_integer(&self, tag: Tag, vr: VR) -> Option<i64> {
        let bytes = self.bytes(tag)?;
        let big = self.big_endian;
        match vr {
            VR::US | VR::SS => {
                let b: [u8; 2] = bytes.get(..2)?.try_into().ok()?;
                let raw = if big { u16::from_be_bytes(b) } else { u16::from_le_bytes(b) };
                Some(if vr == VR::SS { i64::from(raw as i16) } else { i64::from(raw) })
            }
            _ => {
                let b: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
                let raw = if big { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) };
                Some(if vr == VR::SL { i64::from(raw as i32) } else { i64::from(raw) })
            }
        }
    }
}

/// Decodes text as UTF-8 when it is valid UTF-8, else as ISO 8859-1 (each byte one character).
///
/// This covers the default repertoire, ISO_IR 100 and ISO_IR 192, which is what CT scanners send.
pub fn decode_text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_string(),
        Err(_) => bytes.iter().map(|&b| char::from(b)).collect(),
    }
}

/// The outcome of lenient decimal parsing.
#[derive(Debug, PartialEq)]
pub(crate) enum Parsed {
    Ok(Vec<f64>),
    Repaired(Vec<f64>, &'static str),
    Empty,
    Garbage,
}

/// Parses `expected` decimal numbers from DS text.
pub(crate) fn parse_decimals(text: &str, expected: usize) -> Parsed {
    let text = text.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    if text.is_empty() {
        return Parsed::Empty;
    }
    if let Some(values) = parse_list(text.split('\\'), expected) {
        return Parsed::Ok(values);
    }
    if !text.contains(',') {
        return Parsed::Garbage;
    }
    if text.contains('\\') {
        return parse_decimal_commas(text, expected);
    }
    // A comma is a separator when it splits the text into the expected number of values, each
    // with a dot. A lone comma in a single expected value is a decimal mark.
    let parts: Vec<&str> = text.split(',').collect();
    let dotted = parts.iter().all(|p| p.contains('.'));
    if parts.len() == expected && (expected > 1 && dotted) {
        if let Some(values) = parse_list(parts.into_iter(), expected) {
            return Parsed::Repaired(values, "uses commas as separators");
        }
        return Parsed::Garbage;
    }
    if expected == 1 && parts.len() == 2 && !text.contains('.') {
        if let Some(values) = parse_list(std::iter::once(text.replace(',', ".").as_str()), 1) {
            return Parsed::Repaired(values, "uses a decimal comma");
        }
    }
    Parsed::Garbage
}

/// Parses backslash-separated values that use a decimal comma ("0,66\\0,66"). A value with a
/// dot as well as a comma is ambiguous and makes the whole text garbage.
fn parse_decimal_commas(text: &str, expected: usize) -> Parsed {
    let parts: Vec<&str> = text.split('\\').collect();
    let plain = parts.iter().all(|p| p.matches(',').count() <= 1 && !p.contains('.'));
    if parts.len() != expected || !plain {
        return Parsed::Garbage;
    }
    let fixed: Vec<String> = parts.iter().map(|p| p.replace(',', ".")).collect();
    match parse_list(fixed.iter().map(String::as_str), expected) {
        Some(values) => Parsed::Repaired(values, "uses decimal commas"),
        None => Parsed::Garbage,
    }
}

fn parse_list<'a>(parts: impl Iterator<Item = &'a str>, expected: usize) -> Option<Vec<f64>> {
    let values: Vec<f64> = parts
        .map(|p| p.trim().trim_start_matches('+').parse::<f64>().ok().filter(|v| v.is_finite()))
        .collect::<Option<Vec<f64>>>()?;
    (values.len() == expected).then_some(values)
}

/// Returns the standard spelling of a SpecificCharacterSet value, or `None` when the value is
/// not a character set Penumbra recognises.
pub fn canonical_charset(value: &str) -> Option<&'static str> {
    let key: String = value.chars().filter(|c| c.is_ascii_alphanumeric()).collect::<String>().to_ascii_uppercase();
    let canonical = match key.as_str() {
        "ISOIR6" | "ISO646" | "ASCII" => "ISO_IR 6",
        "ISOIR100" | "ISO88591" | "LATIN1" => "ISO_IR 100",
        "ISOIR101" | "ISO88592" => "ISO_IR 101",
        "ISOIR192" | "UTF8" => "ISO_IR 192",
        "ISO2022IR6" => "ISO 2022 IR 6",
        "ISO2022IR100" => "ISO 2022 IR 100",
        "GB18030" => "GB18030",
        "ISOIR13" => "ISO_IR 13",
        "ISOIR144" => "ISO_IR 144",
        "ISOIR148" => "ISO_IR 148",
        _ => return None,
    };
    Some(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_values_parse() {
        assert_eq!(parse_decimals("0.661468\\0.661468", 2), Parsed::Ok(vec![0.661468, 0.661468]));
        assert_eq!(parse_decimals(" -1024 ", 1), Parsed::Ok(vec![-1024.0]));
        assert_eq!(parse_decimals("1e1", 1), Parsed::Ok(vec![10.0]));
    }

    #[test]
    fn comma_separator_is_repaired() {
        assert_eq!(parse_decimals("0.661468,0.661468", 2), Parsed::Repaired(vec![0.661468, 0.661468], "uses commas as separators"));
    }

    #[test]
    fn decimal_comma_is_repaired() {
        assert_eq!(parse_decimals("0,5", 1), Parsed::Repaired(vec![0.5], "uses a decimal comma"));
    }

    #[test]
    fn decimal_commas_in_a_list_are_repaired() {
        assert_eq!(parse_decimals("0,66\\0,66", 2), Parsed::Repaired(vec![0.66, 0.66], "uses decimal commas"));
        assert_eq!(parse_decimals("1,5\\2", 2), Parsed::Repaired(vec![1.5, 2.0], "uses decimal commas"));
        assert_eq!(parse_decimals("1,024.5\\2", 2), Parsed::Garbage);
    }

    #[test]
    fn ambiguous_and_garbage_are_never_zero() {
        // "0,66" for two values could be 0 and 66 or one value 0.66: neither is safe.
        assert_eq!(parse_decimals("0,66", 2), Parsed::Garbage);
        assert_eq!(parse_decimals("abc", 1), Parsed::Garbage);
        assert_eq!(parse_decimals("nan", 1), Parsed::Garbage);
        assert_eq!(parse_decimals("1\\2\\3", 2), Parsed::Garbage);
        assert_eq!(parse_decimals("  ", 1), Parsed::Empty);
        assert_eq!(parse_decimals("1,024.5", 1), Parsed::Garbage);
    }

    #[test]
    fn charset_misspellings_are_recognised() {
        assert_eq!(canonical_charset("ISO_IR 100"), Some("ISO_IR 100"));
        assert_eq!(canonical_charset("ISO-IR 100"), Some("ISO_IR 100"));
        assert_eq!(canonical_charset("ISO_IR100"), Some("ISO_IR 100"));
        assert_eq!(canonical_charset("ISO-IR 192"), Some("ISO_IR 192"));
        assert_eq!(canonical_charset("utf-8"), Some("ISO_IR 192"));
        assert_eq!(canonical_charset("KLINGON"), None);
    }

    #[test]
    fn latin1_text_decodes() {
        assert_eq!(decode_text(b"M\xfcller"), "Müller");
        assert_eq!(decode_text("Müller".as_bytes()), "Müller");
    }
}
