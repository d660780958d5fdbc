//! New DICOM UIDs.

/// Returns a new globally unique DICOM UID of the form `2.25.<UUID as a decimal integer>`
/// (PS3.5 Annex B.2), at most 44 characters long.
pub fn new_uid() -> String {
    format!("2.25.{}", uuid::Uuid::new_v4().as_u128())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_uid_is_valid_and_unique() {
        let a = new_uid();
        let b = new_uid();
        assert_ne!(a, b);
        assert!(a.len() <= 64, "{a}");
        assert!(a.starts_with("2.25."));
        assert!(a[5..].chars().all(|c| c.is_ascii_digit()));
        assert!(!a[5..].starts_with('0') || a.len() == 6);
    }
}
