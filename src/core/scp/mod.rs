//! Legacy SCP, pure: the exec command line (`exec`), the control-line framing
//! (`frame`) and the sink's state machine (`sink`).

pub mod exec;
pub mod frame;
pub mod sink;
