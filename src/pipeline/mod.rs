//! The `Stage` contract, the staged runner and one module per stage.
