//! Everything that brings instances in: the C-STORE receiver, watched folders, the durable spool,
//! quarantine and study assembly.

pub mod scp;
