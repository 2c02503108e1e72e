#!/usr/bin/env bash
# The layering ARCHITECTURE.md states ("Code map"), checked by parsing src/ with
# syn (tests/layers.rs), not by grep: `use` trees expanded (`use crate::{a, b}`,
# `use std::{fs, io}`, renames), `super::`/`self::` resolved, paths expanded
# through the imports (`Instant::now`), macro bodies scanned. The rules:
#   core/      pure: no I/O crates or modules, no clock or randomness; imports
#              nothing from the rest of the crate
#   config/, spool/           core only
#   pipeline/  core, config, spool, shutdown
#   ingest/    core, config, spool, shutdown, ops::metrics (nothing else of ops)
#   ops/       core, config, spool, shutdown, pipeline (ops::metrics: core only)
#   app, cli   the wiring, above everything
# The test also shows that a planted violation of each form is caught.
# Exits non-zero, printing each offending import.
set -uo pipefail
cd "$(dirname "$0")/.."
exec cargo test --release --quiet --test layers
