//! SFTP v3, pure: the upload session's decisions (`session`).

pub mod session;
