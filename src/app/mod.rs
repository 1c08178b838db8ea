//! The composition root: `pgssl serve` wires the control plane, the data plane, the managed
//! repository, the admin server and metrics together, and owns the runtimes and signals.

pub mod node;
pub mod serve;
