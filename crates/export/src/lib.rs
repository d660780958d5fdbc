//! Penumbra outputs: DICOM SEG, Secondary Capture summary image, SR measurement report and JSON report.
