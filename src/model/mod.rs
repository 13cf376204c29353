//! Models: hyper-parameters from metadata, the architecture table, weights
//! and the forward pass.

pub mod arch;
pub mod forward;
pub mod hparams;
pub mod reference;
pub mod synth;
pub mod weights;

pub use forward::{Model, State, MAX_BATCH};
pub use hparams::HyperParams;
