//! Generation time of the default study (256 x 256 x 16 slices x 60 frames). Ignored by default
//! because it measures rather than checks; run with `cargo test -p penumbra-phantom --test timing
//! -- --ignored --nocapture`.

use std::time::Instant;

use penumbra_phantom::{generate, PhantomParams};

#[test]
#[ignore]
fn default_study_generation_time() {
    let params = PhantomParams::default();
    let start = Instant::now();
    let study = generate(&params).expect("default parameters are valid");
    let elapsed = start.elapsed().as_secs_f64();

    let v = study.truth.volumes;
    println!(
        "generated {:?} in {elapsed:.2} s; core {:.1} mL, penumbra {:.1} mL, hypoperfused {:.1} mL, ratio {:?}, reference CBF {:.1}",
        study.volume.voxels.shape(),
        v.core_ml,
        v.penumbra_ml,
        v.hypoperfused_ml,
        v.mismatch_ratio,
        study.truth.reference_cbf
    );
    // Generous bound for a shared, unoptimised test build; the report gives the measured time.
    assert!(elapsed < 60.0, "{elapsed}");
}
