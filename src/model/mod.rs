//! Models: hyper-parameters read from metadata (and, later, the forward pass).

pub mod hparams;

pub use hparams::HyperParams;
