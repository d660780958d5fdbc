//! A bounded, forgiving parser for DICOM data sets held in memory.
//!
//! The parser checks every declared length against the bytes that are really present before it
//! copies or allocates anything, so a file can never make it allocate more than the file's own
//! size (plus a small per-element overhead). Sequences nest at most [`MAX_DEPTH`] deep.

use std::collections::BTreeMap;

use dicom_core::dictionary::DataDictionary;
use dicom_core::dictionary::VirtualVr;
use dicom_core::{Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;

use crate::read::ReadError;

/// Maximum sequence nesting depth; deeper files are rejected (CT objects seen in practice nest 3 or 4 deep).
pub const MAX_DEPTH: usize = 16;

/// Marks an undefined length (PS3.5 section 7.1.1).
const UNDEFINED: u32 = 0xFFFF_FFFF;

pub(crate) const ITEM: Tag = Tag(0xFFFE, 0xE000);
pub(crate) const ITEM_END: Tag = Tag(0xFFFE, 0xE00D);
pub(crate) const SEQUENCE_END: Tag = Tag(0xFFFE, 0xE0DD);
pub(crate) const PIXEL_DATA: Tag = Tag(0x7FE0, 0x0010);

/// Element encoding of a data set: VR explicit or implicit, byte order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoding {
    pub explicit_vr: bool,
    pub big_endian: bool,
}

impl Encoding {
    pub const IMPLICIT_LE: Encoding = Encoding { explicit_vr: false, big_endian: false };
    pub const EXPLICIT_LE: Encoding = Encoding { explicit_vr: true, big_endian: false };
    pub const EXPLICIT_BE: Encoding = Encoding { explicit_vr: true, big_endian: true };
}

/// The value of one element.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Raw value bytes in the data set's byte order.
    Bytes(Vec<u8>),
    /// Sequence items.
    Items(Vec<DataSet>),
    /// Encapsulated pixel data: basic offset table and fragments.
    Fragments { offset_table: Vec<u32>, fragments: Vec<Vec<u8>> },
}

/// One parsed element.
#[derive(Debug, Clone, PartialEq)]
pub struct Element {
    pub tag: Tag,
    /// The VR used to interpret the value (the dictionary VR when the file wrote UN).
    pub vr: VR,
    pub value: Value,
}

/// A parsed data set: elements by tag, with the byte order of their binary values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DataSet {
    pub(crate) elements: BTreeMap<Tag, Element>,
    pub(crate) big_endian: bool,
}

impl DataSet {
    /// Returns the element with `tag`, if present.
    pub fn get(&self, tag: Tag) -> Option<&Element> {
        self.elements.get(&tag)
    }

    /// Returns the raw bytes of `tag`, if it is a plain (non-sequence) element.
    pub fn bytes(&self, tag: Tag) -> Option<&[u8]> {
        match &self.get(tag)?.value {
            Value::Bytes(bytes) => Some(bytes),
            _ => None,
        }
    }

    /// Returns the items of sequence `tag`, or an empty slice.
    pub fn items(&self, tag: Tag) -> &[DataSet] {
        match self.get(tag).map(|e| &e.value) {
            Some(Value::Items(items)) => items,
            _ => &[],
        }
    }

    /// Returns whether binary values are big endian.
    pub fn is_big_endian(&self) -> bool {
        self.big_endian
    }

    /// Iterates over the elements in tag order.
    pub fn iter(&self) -> impl Iterator<Item = &Element> {
        self.elements.values()
    }
}

/// Stopping point of a top-level parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopAt {
    /// Parse everything.
    End,
    /// Stop before the first top-level element whose tag is at or after this one.
    Before(Tag),
    /// Stop at the first top-level element outside group 0002 (File Meta).
    EndOfMetaGroup,
}

/// Result of a top-level parse.
pub(crate) struct Parsed {
    pub data_set: DataSet,
    /// Offset just after the last element read.
    pub end: usize,
    pub warnings: Vec<String>,
}

/// Parses a top-level data set from `buf`.
pub(crate) fn parse(buf: &[u8], encoding: Encoding, stop: StopAt) -> Result<Parsed, ReadError> {
    let mut parser = Parser { buf, pos: 0, encoding, warnings: Vec::new() };
    let data_set = parser.top_level(stop)?;
    Ok(Parsed { data_set, end: parser.pos, warnings: parser.warnings })
}

struct Parser<'a> {
    buf: &'a [u8],
    pos: usize,
    encoding: Encoding,
    warnings: Vec<String>,
}

/// An element header as read from the stream.
struct Header {
    tag: Tag,
    vr: VR,
    len: u32,
    /// True when the explicit VR was UN (or implicit with no dictionary entry).
    was_un: bool,
}

impl<'a> Parser<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn top_level(&mut self, stop: StopAt) -> Result<DataSet, ReadError> {
        let mut set = self.new_set();
        let mut last: Option<Tag> = None;
        while self.pos < self.buf.len() {
            let start = self.pos;
            let Some(tag) = self.peek_tag() else {
                self.trailing(start, "fewer than 8 bytes");
                break;
            };
            if stop == StopAt::EndOfMetaGroup && tag.0 != 0x0002 {
                break;
            }
            if let StopAt::Before(limit) = stop {
                if tag >= limit {
                    break;
                }
            }
            if last.is_some_and(|l| tag <= l) && tag.0 != 0x0000 {
                self.warnings.push(format!("element {tag} is out of ascending tag order"));
            }
            if !plausible_top_level(tag) {
                if last.is_none() {
                    return Err(ReadError::NotDicom { reason: format!("first element tag {tag} is not a data set tag") });
                }
                self.trailing(start, "no valid element follows");
                break;
            }
            let header = match self.header(tag) {
                Ok(header) => header,
                Err(ReadError::Malformed { .. }) if last.is_some() => {
                    self.trailing(start, "no valid element follows");
                    break;
                }
                Err(err) => return Err(err),
            };
            let element = self.element(header, 0)?;
            last = Some(element.tag);
            self.insert(&mut set, element);
        }
        Ok(set)
    }

    fn trailing(&mut self, start: usize, why: &str) {
        let n = self.buf.len() - start;
        self.warnings.push(format!("ignored {n} trailing bytes after the data set at offset {start} ({why})"));
        self.pos = self.buf.len();
    }

    fn new_set(&self) -> DataSet {
        DataSet { elements: BTreeMap::new(), big_endian: self.encoding.big_endian }
    }

    fn insert(&mut self, set: &mut DataSet, element: Element) {
        if set.elements.contains_key(&element.tag) {
            self.warnings.push(format!("element {} appears twice; kept the first", element.tag));
            return;
        }
        set.elements.insert(element.tag, element);
    }

    fn u16_at(&self, at: usize) -> Option<u16> {
        let b: [u8; 2] = self.buf.get(at..at + 2)?.try_into().ok()?;
        Some(if self.encoding.big_endian { u16::from_be_bytes(b) } else { u16::from_le_bytes(b) })
    }

    fn u32_at(&self, at: usize) -> Option<u32> {
        let b: [u8; 4] = self.buf.get(at..at + 4)?.try_into().ok()?;
        Some(if self.encoding.big_endian { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) })
    }

    fn peek_tag(&self) -> Option<Tag> {
        if self.remaining() < 8 {
            return None;
        }
        Some(Tag(self.u16_at(self.pos)?, self.u16_at(self.pos + 2)?))
    }

    fn truncated(&self, what: &str) -> ReadError {
        ReadError::Truncated { offset: self.pos, reason: what.to_string() }
    }

    /// Reads a tag and, for item and delimiter tags, their 4-byte length.
    fn header(&mut self, tag: Tag) -> Result<Header, ReadError> {
        if tag.0 == 0xFFFE {
            let len = self.u32_at(self.pos + 4).ok_or_else(|| self.truncated("item header"))?;
            self.pos += 8;
            return Ok(Header { tag, vr: VR::UN, len, was_un: false });
        }
        if !self.encoding.explicit_vr {
            let len = self.u32_at(self.pos + 4).ok_or_else(|| self.truncated("element header"))?;
            self.pos += 8;
            let (vr, was_un) = match dictionary_vr(tag) {
                Some(vr) => (vr, false),
                None => (VR::UN, true),
            };
            return Ok(Header { tag, vr, len, was_un });
        }
        let code = [self.buf[self.pos + 4], self.buf[self.pos + 5]];
        let Some(vr) = VR::from_binary(code) else {
            return Err(ReadError::Malformed {
                offset: self.pos,
                reason: format!("element {tag} has no valid VR (bytes {:02x} {:02x})", code[0], code[1]),
            });
        };
        if has_long_length(vr) {
            let len = self.u32_at(self.pos + 8).ok_or_else(|| self.truncated("element header"))?;
            self.pos += 12;
            Ok(Header { tag, vr, len, was_un: vr == VR::UN })
        } else {
            let len = self.u16_at(self.pos + 6).ok_or_else(|| self.truncated("element header"))?;
            self.pos += 8;
            Ok(Header { tag, vr, len: u32::from(len), was_un: false })
        }
    }

    /// Takes `len` value bytes, checking the length against what is present first.
    fn take(&mut self, tag: Tag, len: u32) -> Result<&'a [u8], ReadError> {
        let available = self.remaining();
        let wanted = len as usize;
        if wanted > available {
            return Err(length_error(tag, u64::from(len), available, self.buf.len()));
        }
        let bytes = &self.buf[self.pos..self.pos + wanted];
        self.pos += wanted;
        Ok(bytes)
    }

    fn element(&mut self, header: Header, depth: usize) -> Result<Element, ReadError> {
        let Header { tag, vr, len, was_un } = header;
        if tag.0 == 0xFFFE {
            return Err(ReadError::Malformed { offset: self.pos, reason: format!("unexpected item tag {tag} outside a sequence") });
        }
        if tag == PIXEL_DATA && len == UNDEFINED {
            return self.encapsulated(tag, vr);
        }
        let dict = if was_un { dictionary_vr(tag) } else { None };
        let is_sequence = vr == VR::SQ || dict == Some(VR::SQ) || (was_un && len == UNDEFINED);
        if is_sequence {
            return self.sequence(tag, len, was_un, depth);
        }
        if len == UNDEFINED {
            return Err(ReadError::Malformed { offset: self.pos, reason: format!("element {tag} ({vr:?}) has an undefined length") });
        }
        let bytes = self.take(tag, len)?.to_vec();
        let vr = match dict {
            Some(real) => {
                self.warnings.push(format!("element {tag} arrived with VR UN; decoded as {} from the dictionary", real.to_string()));
                real
            }
            None => vr,
        };
        Ok(Element { tag, vr, value: Value::Bytes(bytes) })
    }

    /// Parses a sequence. Sequences that arrived as UN are encoded in Implicit VR Little Endian.
    fn sequence(&mut self, tag: Tag, len: u32, was_un: bool, depth: usize) -> Result<Element, ReadError> {
        if depth + 1 > MAX_DEPTH {
            return Err(ReadError::NestingTooDeep { tag: tag.to_string(), max: MAX_DEPTH });
        }
        let saved = self.encoding;
        if was_un {
            self.encoding = Encoding::IMPLICIT_LE;
            self.warnings.push(format!("sequence {tag} arrived with VR UN; read as Implicit VR Little Endian"));
        }
        let result = self.sequence_items(tag, len, depth);
        self.encoding = saved;
        Ok(Element { tag, vr: VR::SQ, value: Value::Items(result?) })
    }

    fn sequence_items(&mut self, tag: Tag, len: u32, depth: usize) -> Result<Vec<DataSet>, ReadError> {
        let end = self.end_of(tag, len)?;
        let mut items = Vec::new();
        loop {
            if end == Some(self.pos) {
                break;
            }
            let item_tag = self.peek_tag().ok_or_else(|| self.truncated("sequence item"))?;
            let header = self.header(item_tag)?;
            match header.tag {
                SEQUENCE_END if end.is_none() => break,
                ITEM => items.push(self.item(header.len, depth + 1)?),
                other => {
                    return Err(ReadError::Malformed { offset: self.pos, reason: format!("expected an item in sequence {tag}, found {other}") });
                }
            }
            if end.is_some_and(|e| self.pos > e) {
                return Err(ReadError::Malformed { offset: self.pos, reason: format!("items overrun the length of sequence {tag}") });
            }
        }
        Ok(items)
    }

    /// Returns where a defined-length value ends, after checking it fits.
    fn end_of(&self, tag: Tag, len: u32) -> Result<Option<usize>, ReadError> {
        if len == UNDEFINED {
            return Ok(None);
        }
        if len as usize > self.remaining() {
            return Err(length_error(tag, u64::from(len), self.remaining(), self.buf.len()));
        }
        Ok(Some(self.pos + len as usize))
    }

    fn item(&mut self, len: u32, depth: usize) -> Result<DataSet, ReadError> {
        let end = self.end_of(ITEM, len)?;
        let mut set = self.new_set();
        loop {
            if end == Some(self.pos) {
                break;
            }
            let tag = self.peek_tag().ok_or_else(|| self.truncated("item element"))?;
            let header = self.header(tag)?;
            if header.tag == ITEM_END {
                if end.is_some() {
                    self.warnings.push("item delimiter inside a defined-length item; ignored".to_string());
                    continue;
                }
                break;
            }
            let element = self.element(header, depth)?;
            self.insert(&mut set, element);
            if end.is_some_and(|e| self.pos > e) {
                return Err(ReadError::Malformed { offset: self.pos, reason: "elements overrun the length of their item".to_string() });
            }
        }
        Ok(set)
    }

    fn encapsulated(&mut self, tag: Tag, vr: VR) -> Result<Element, ReadError> {
        let mut offset_table = Vec::new();
        let mut fragments = Vec::new();
        let mut first = true;
        loop {
            let item_tag = self.peek_tag().ok_or_else(|| self.truncated("pixel data fragment"))?;
            let header = self.header(item_tag)?;
            match header.tag {
                SEQUENCE_END => break,
                ITEM => {
                    let bytes = self.take(tag, header.len)?;
                    if first {
                        offset_table = bytes.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
                        first = false;
                    } else {
                        fragments.push(bytes.to_vec());
                    }
                }
                other => {
                    return Err(ReadError::Malformed { offset: self.pos, reason: format!("expected a pixel data fragment, found {other}") });
                }
            }
        }
        Ok(Element { tag, vr, value: Value::Fragments { offset_table, fragments } })
    }
}

/// Returns false for tags that cannot start a top-level element: group 0000 (command elements) or FFFE (items).
fn plausible_top_level(tag: Tag) -> bool {
    tag.0 != 0x0000 && tag.0 != 0xFFFE
}

/// Builds the error for a value that runs past the end of the input.
///
/// A length that could belong to a file cut short is reported as truncation; one beyond
/// [`crate::read::MAX_VALUE_LEN`] can only be corrupt.
fn length_error(tag: Tag, declared: u64, available: usize, total: usize) -> ReadError {
    if declared > crate::read::MAX_VALUE_LEN {
        ReadError::DeclaredLengthTooLarge { tag: tag.to_string(), declared, available }
    } else {
        ReadError::Truncated {
            offset: total - available,
            reason: format!("element {tag} declares {declared} bytes but only {available} remain"),
        }
    }
}

/// VRs whose explicit encoding has 2 reserved bytes and a 32-bit length (PS3.5 table 7.1-1).
fn has_long_length(vr: VR) -> bool {
    matches!(
        vr,
        VR::OB | VR::OD | VR::OF | VR::OL | VR::OV | VR::OW | VR::SQ | VR::SV | VR::UC | VR::UN | VR::UR | VR::UT | VR::UV
    )
}

/// Returns the dictionary VR of a standard tag, resolving context-dependent VRs to their usual
/// form (US for US/SS, OW for pixel and overlay data).
pub(crate) fn dictionary_vr(tag: Tag) -> Option<VR> {
    if tag.1 == 0x0000 {
        return Some(VR::UL);
    }
    let entry = StandardDataDictionary.by_tag(tag)?;
    match entry.vr {
        VirtualVr::Exact(VR::UN) => None,
        VirtualVr::Exact(vr) => Some(vr),
        VirtualVr::Xs => Some(VR::US),
        VirtualVr::Lt => Some(VR::US),
        _ => Some(VR::OW),
    }
}
