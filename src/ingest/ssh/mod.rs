//! The SSH front end: the russh server and its connection handler (`server`),
//! public-key authentication (`auth`), host keys (`hostkey`), and the drivers
//! that run the pure SCP and SFTP cores over a channel (`scp`, `sftp`).

pub mod auth;
pub mod gate;
pub mod hostkey;
pub mod scp;
pub mod server;
pub mod sftp;
