//! penumbra-phantom
