//! Models: hyper-parameters from metadata, the architecture table, the
//! forward pass's configuration, weights and the forward pass.

pub mod arch;
pub mod config;
pub mod footprint;
pub mod forward;
pub mod hparams;
pub mod reference;
pub mod synth;
pub mod weights;

pub use config::Config;
pub use footprint::kv_cells;
pub use forward::{Model, State, MAX_BATCH};
pub use hparams::HyperParams;
