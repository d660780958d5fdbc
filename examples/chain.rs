use std::time::Instant;
fn main() {
    let mut p = penumbra_phantom::PhantomParams::default();
    p.seed = std::env::args().nth(1).map(|s| s.parse().unwrap()).unwrap_or(7);
    let t = Instant::now();
    let study = penumbra_phantom::generate(&p).unwrap();
    println!("phantom {:?} in {:?}", study.volume.voxels.dim(), t.elapsed());
    let t = Instant::now();
    let result = penumbra_perfusion::compute_maps(&study.volume, &Default::default()).unwrap();
    println!("maps in {:?}; quality {:?}", t.elapsed(), result.quality);
    let th = penumbra_perfusion::label(&result.maps, &Default::default());
    println!("threshold core {:.1} pen {:.1}; truth {:?}", th.core_volume_ml, th.penumbra_volume_ml, study.truth.volumes);
    let tl = &study.truth.labels;
    let dice = |a: u8| { let mut i=0; let mut s=0; for (x,y) in th.labels.iter().zip(tl.iter()) { let (x,y)=(*x==a || (a==9 && *x>0), *y==a || (a==9 && *y>0)); if x&&y {i+=1}; s+= x as usize + y as usize;} 2.0*i as f64/s as f64 };
    println!("dice core {:.3} penumbra {:.3} hypo {:.3}", dice(2), dice(1), dice(9));
}
