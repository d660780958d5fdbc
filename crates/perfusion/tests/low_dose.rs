//! A 20 mAs phantom whose maps failed when the baseline voxels were picked on frame 0 alone.
//!
//! That pick kept the voxels whose frame-0 noise fell inside the tissue window, which biased
//! frame 0 of the mean curve, delayed the detected arrival and put arterial frames into the
//! baseline. The AIF then had a negative area and the deconvolution rejected it.

use penumbra_perfusion::{compute_maps, PerfusionParams};
use penumbra_phantom::{generate, LesionSize, Noise, PhantomParams, PoseSpec, Side};

#[test]
fn low_dose_baseline_excludes_bolus() {
    let params = PhantomParams {
        seed: 1_001_003_005,
        noise: Noise::MilliAmpSeconds(20.0),
        lesion_side: Side::Random,
        lesion_size: LesionSize::Medium,
        pose: PoseSpec::Random,
        ..PhantomParams::default()
    };
    let study = generate(&params).unwrap();
    let result = compute_maps(&study.volume, &PerfusionParams::default()).unwrap();

    // The phantom's AIF starts to rise at frame 9, so frames 0 to 7 hold no contrast. With
    // bolus frames in the baseline they sat about 75 HU below zero.
    let aif = &result.aif.values_hu;
    let pre_bolus_mean = aif[..8].iter().sum::<f64>() / 8.0;
    let baseline_frames = result.quality.baseline_frames;
    eprintln!("baseline frames {baseline_frames}, AIF mean over frames 0-7 {pre_bolus_mean:.1} HU");
    assert!(
        pre_bolus_mean.abs() < 15.0,
        "AIF mean over frames 0-7: {pre_bolus_mean} HU"
    );
    assert!(
        (5..=9).contains(&baseline_frames),
        "baseline frames {baseline_frames}"
    );
    assert!(result.aif.auc_hu_s > 0.0);
}
