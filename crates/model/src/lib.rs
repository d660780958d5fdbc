//! penumbra-model
