//! SFTP v3, pure: the upload session's decisions (`session`) and the written-range
//! set that keeps a byte nobody sent from ever landing (`ranges`).

pub mod ranges;
pub mod session;
