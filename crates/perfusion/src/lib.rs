//! penumbra-perfusion
