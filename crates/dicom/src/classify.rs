//! Series classification: dynamic CT perfusion, a scanner's perfusion map, plain CT, or other.
//!
//! Maps are recognised by keywords in ImageType values or SeriesDescription (whole words, any
//! case: CBF/rCBF, CBV/rCBV, MTT, Tmax). A CT series with several time points at each slice
//! position is dynamic CTP; one time point is plain CT.

use crate::series::SeriesKind;

/// The attributes classification looks at.
#[derive(Debug, Clone, Default)]
pub struct ClassifyInput<'a> {
    pub modality: &'a str,
    pub image_type: &'a [String],
    pub series_description: Option<&'a str>,
    /// Time points found when the series was assembled.
    pub time_points: usize,
}

/// Classifies a series.
pub fn classify(input: &ClassifyInput<'_>) -> SeriesKind {
    if !input.modality.eq_ignore_ascii_case("CT") {
        return SeriesKind::Other;
    }
    let mut words: Vec<String> = input.image_type.iter().flat_map(|v| tokens(v)).collect();
    if let Some(description) = input.series_description {
        words.extend(tokens(description));
    }
    if let Some(kind) = map_kind(&words) {
        return kind;
    }
    if words.iter().any(|w| w == "LOCALIZER" || w == "SCOUT" || w == "TOPOGRAM") {
        return SeriesKind::Other;
    }
    if input.time_points > 1 {
        SeriesKind::DynamicCtp
    } else {
        SeriesKind::PlainCt
    }
}

/// Returns the single map kind named by `words`, or `None` when none or several are named.
fn map_kind(words: &[String]) -> Option<SeriesKind> {
    let mut found: Vec<SeriesKind> = Vec::new();
    for (i, word) in words.iter().enumerate() {
        let next = words.get(i + 1).map(String::as_str);
        let kind = match word.as_str() {
            "CBF" | "RCBF" => Some(SeriesKind::MapCbf),
            "CBV" | "RCBV" => Some(SeriesKind::MapCbv),
            "MTT" => Some(SeriesKind::MapMtt),
            "TMAX" => Some(SeriesKind::MapTmax),
            "T" if next == Some("MAX") => Some(SeriesKind::MapTmax),
            _ => None,
        };
        if let Some(kind) = kind {
            if !found.contains(&kind) {
                found.push(kind);
            }
        }
    }
    (found.len() == 1).then(|| found[0])
}

/// Splits text into uppercase alphanumeric words.
fn tokens(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_ascii_uppercase).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(modality: &str, image_type: &[&str], description: Option<&str>, time_points: usize) -> SeriesKind {
        let image_type: Vec<String> = image_type.iter().map(|s| s.to_string()).collect();
        classify(&ClassifyInput { modality, image_type: &image_type, series_description: description, time_points })
    }

    #[test]
    fn dynamic_and_plain_ct_by_time_points() {
        assert_eq!(kind("CT", &["ORIGINAL", "PRIMARY", "AXIAL"], Some("CTP 4D"), 20), SeriesKind::DynamicCtp);
        assert_eq!(kind("CT", &["ORIGINAL", "PRIMARY", "AXIAL"], Some("Head 5mm"), 1), SeriesKind::PlainCt);
    }

    #[test]
    fn maps_from_image_type_or_description() {
        assert_eq!(kind("CT", &["DERIVED", "SECONDARY", "CBF"], None, 1), SeriesKind::MapCbf);
        assert_eq!(kind("CT", &["DERIVED", "SECONDARY"], Some("Perfusion rCBV"), 1), SeriesKind::MapCbv);
        assert_eq!(kind("CT", &["DERIVED"], Some("MTT map"), 1), SeriesKind::MapMtt);
        assert_eq!(kind("CT", &["DERIVED"], Some("T-max (s)"), 1), SeriesKind::MapTmax);
        assert_eq!(kind("CT", &["DERIVED"], Some("Tmax"), 1), SeriesKind::MapTmax);
    }

    #[test]
    fn substrings_and_mixed_maps_are_not_maps() {
        // "CBFX" is not the word CBF; a summary naming two maps is not one map.
        assert_eq!(kind("CT", &["DERIVED"], Some("CBFX"), 1), SeriesKind::PlainCt);
        assert_eq!(kind("CT", &["DERIVED"], Some("CBF CBV summary"), 1), SeriesKind::PlainCt);
    }

    #[test]
    fn other_modalities_and_localizers_are_other() {
        assert_eq!(kind("MR", &["ORIGINAL"], Some("CBF"), 1), SeriesKind::Other);
        assert_eq!(kind("CT", &["ORIGINAL", "PRIMARY", "LOCALIZER"], None, 1), SeriesKind::Other);
    }
}
