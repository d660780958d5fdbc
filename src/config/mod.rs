//! `pipeline.yaml` read into typed settings, with every validation error collected.
