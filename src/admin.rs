//! Operator commands that read and change the spool directly: `status`,
//! `quarantine list|show`, `retry` (stub; see issue 4).

use crate::config::Config;
use anyhow::Result;

pub fn status(cfg: &Config) -> Result<()> {
    let _ = cfg;
    Ok(())
}

pub fn quarantine_list(cfg: &Config) -> Result<()> {
    let _ = cfg;
    Ok(())
}

pub fn quarantine_show(cfg: &Config, id: &str) -> Result<()> {
    let _ = (cfg, id);
    Ok(())
}

/// Requeue one quarantined entry (`Some(id)`) or all of them (`None`).
pub fn retry(cfg: &Config, id: Option<&str>) -> Result<()> {
    let _ = (cfg, id);
    Ok(())
}
