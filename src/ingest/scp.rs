//! C-STORE SCP: receives instances over DICOM and acknowledges them once they are in the spool.
