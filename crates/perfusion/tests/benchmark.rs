//! Timing of `compute_maps` on a 16-slice, 40-frame, 512 x 512 study; run by hand with
//! `cargo test -p penumbra-perfusion --test benchmark -- --ignored --nocapture`.
//!
//! It prints wall time, voxels per second and the load average. It asserts only that maps
//! come out, because a timed assertion fails on a busy machine.

mod common;

use std::time::Instant;

use common::{default_aif, tissue_curve, Builder};
use penumbra_perfusion::{compute_maps, DeconvolutionMethod, PerfusionParams};

const FRAMES: usize = 40;
const SHAPE: [usize; 3] = [16, 512, 512];

fn study() -> penumbra_imaging::Volume {
    let aif: Vec<f64> = (0..FRAMES).map(|t| default_aif(t as f64)).collect();
    let grey = tissue_curve(&default_aif, 60.0, 4.0, 0.5, 1.0, FRAMES);
    let white = tissue_curve(&default_aif, 25.0, 4.8, 0.5, 1.0, FRAMES);
    let lesion = tissue_curve(&default_aif, 20.0, 12.0, 7.0, 1.0, FRAMES);
    let flat = vec![0.0; FRAMES];
    let mut builder = Builder::new(FRAMES, SHAPE, 8.0, 3);

    // Skull ellipse filling most of the 230 mm field (0.45 mm pixels); arteries near the centre.
    for z in 0..SHAPE[0] {
        for y in 0..SHAPE[1] {
            for x in 0..SHAPE[2] {
                let dy = (y as f64 - 255.5) * 0.45;
                let dx = (x as f64 - 255.5) * 0.45;
                let brain = ((dy / 85.0).powi(2) + (dx / 70.0).powi(2)).sqrt();
                let skull = ((dy / 92.0).powi(2) + (dx / 77.0).powi(2)).sqrt();
                if brain <= 1.0 {
                    if dy.abs() < 2.0 && (dx.abs() - 15.0).abs() < 2.0 {
                        builder.set(z, y, x, 40.0, &aif);
                    } else if dx < -10.0 && dy.abs() < 30.0 && dx > -50.0 {
                        builder.set(z, y, x, 30.0, &lesion);
                    } else if brain > 0.86 {
                        builder.set(z, y, x, 38.0, &grey);
                    } else {
                        builder.set(z, y, x, 28.0, &white);
                    }
                } else if skull <= 1.0 {
                    builder.set(z, y, x, 1000.0, &flat);
                } else {
                    builder.set(z, y, x, -1000.0, &flat);
                }
            }
        }
    }
    builder.build([5.0, 0.45, 0.45], 1.0)
}

#[test]
#[ignore = "benchmark: run by hand on an idle machine"]
fn benchmark_512_study() {
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_test_writer()
        .init();
    let ctp = study();
    let voxels = SHAPE.iter().product::<usize>();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average before: {}", load.trim());
    println!("threads: {}", rayon::current_num_threads());

    for method in [DeconvolutionMethod::Bsvd, DeconvolutionMethod::Osvd] {
        let params = PerfusionParams {
            method,
            ..PerfusionParams::default()
        };
        let start = Instant::now();
        let result = compute_maps(&ctp, &params).unwrap();
        let seconds = start.elapsed().as_secs_f64();
        let brain = result.maps.brain_mask.iter().filter(|&&b| b).count();
        println!(
            "{method:?}: {seconds:.2} s for {voxels} voxels x {FRAMES} frames ({:.2e} voxels/s; {brain} brain voxels deconvolved)",
            voxels as f64 / seconds
        );
        assert!(brain > voxels / 4);
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average after: {}", load.trim());
}
