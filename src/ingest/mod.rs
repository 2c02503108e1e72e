//! Every way bytes arrive at the node, all ending in the one spool landing path:
//! SSH (`ssh/`: SCP and SFTP) and the inbox directory. `context` is the fan-out
//! after each landing (log line, metrics, the sender's view).

pub mod context;
pub mod inbox;
pub mod limits;
pub mod ssh;
pub mod vfs;
pub mod writer;
