//! Everything that brings instances in: the C-STORE receiver, watched folders, the durable spool,
//! quarantine and study assembly.

pub mod assembler;
pub mod group_commit;
pub mod identify;
pub mod journal;
pub mod quarantine;
pub mod scp;
pub mod scp_sink;
pub mod spool;
pub mod watch;
