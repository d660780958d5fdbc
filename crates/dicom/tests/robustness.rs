//! Mutated inputs never panic and never allocate more than a few MB; a huge declared length is
//! rejected with bounded memory.
//!
//! A counting global allocator tracks, per thread, the bytes live and their peak, so parallel
//! tests in this binary do not disturb each other's measurement.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Once;

use penumbra_dicom::pixels::decode_pixels;
use penumbra_dicom::{identify, read_bytes};
use proptest::prelude::*;

struct Counting;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = LIVE.try_with(|live| {
            let now = live.get() + layout.size();
            live.set(now);
            let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
        });
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let _ = LIVE.try_with(|live| live.set(live.get().saturating_sub(layout.size())));
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = LIVE.try_with(|live| {
            let now = live.get().saturating_sub(layout.size()) + new_size;
            live.set(now);
            let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
        });
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Replaces the default panic hook, once, by one that prints only the message. The decoder
/// catches codec panics, but the default hook first captures and symbolizes a backtrace when
/// `RUST_BACKTRACE` is set. That took over 64 MB, which counted against the decoder's peak, and
/// made shrinking a failing case take minutes.
fn print_panics_without_backtrace() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| std::panic::set_hook(Box::new(|info| eprintln!("{info}"))));
}

/// Runs `f` and returns the peak bytes allocated on this thread above what was live before.
fn peak_during(f: impl FnOnce()) -> usize {
    print_panics_without_backtrace();
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    f();
    PEAK.with(Cell::get) - base
}

const MB: usize = 1 << 20;

fn clean_case() -> Vec<u8> {
    std::fs::read(shared_cases().join("g00_base_ct_explicit.dcm")).unwrap()
}

#[test]
fn huge_declared_length_case_uses_bounded_memory() {
    let bytes = std::fs::read(shared_cases().join("g53_huge_declared_length.dcm")).unwrap();
    assert_eq!(bytes.len(), 480);
    let mut result = None;
    let peak = peak_during(|| result = Some(read_bytes(&bytes)));
    assert_eq!(result.unwrap().unwrap_err().kind(), "declared_length_too_large");
    eprintln!("peak {peak} bytes");
    assert!(peak < MB, "peak {peak} bytes");
}

#[test]
fn huge_pixel_data_length_uses_bounded_memory() {
    // The clean case with PixelData's 32-bit length set to 0xFFFFFFF0.
    let mut bytes = clean_case();
    let at = bytes.windows(8).rposition(|w| w == [0xE0, 0x7F, 0x10, 0x00, b'O', b'W', 0, 0]).unwrap();
    bytes[at + 8..at + 12].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    let mut result = None;
    let peak = peak_during(|| result = Some(read_bytes(&bytes)));
    assert_eq!(result.unwrap().unwrap_err().kind(), "declared_length_too_large");
    eprintln!("peak {peak} bytes");
    assert!(peak < MB, "peak {peak} bytes");
}

#[test]
fn clean_case_peak_is_small() {
    // Guards the mutation bound below: the clean case itself must stay under it.
    let bytes = clean_case();
    let peak = peak_during(|| {
        let instance = read_bytes(&bytes).unwrap();
        decode_pixels(&instance, &mut Vec::new()).unwrap();
    });
    eprintln!("peak {peak} bytes");
    assert!(peak < 2 * MB, "peak {peak} bytes");
}

/// One mutation of the clean case.
#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, value: u8 },
    Truncate { len: usize },
    Splice { at: usize, bytes: Vec<u8> },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let len = 39_238usize;
    // Half of the positions fall in the header (the first 6,500 bytes), where the structure is.
    let at = || prop_oneof![0..6_500usize, 0..len];
    prop_oneof![
        (at(), any::<u8>()).prop_map(|(at, value)| Mutation::Flip { at, value }),
        at().prop_map(|len| Mutation::Truncate { len }),
        (at(), proptest::collection::vec(any::<u8>(), 1..16)).prop_map(|(at, bytes)| Mutation::Splice { at, bytes }),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    match m {
        Mutation::Flip { at, value } => {
            if let Some(b) = bytes.get_mut(*at) {
                *b = *value;
            }
        }
        Mutation::Truncate { len } => bytes.truncate(*len),
        Mutation::Splice { at, bytes: new } => {
            let at = (*at).min(bytes.len());
            let end = (at + new.len()).min(bytes.len());
            bytes.splice(at..end, new.iter().copied());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_clean_case_never_panics_or_balloons(mutations in proptest::collection::vec(mutation(), 1..4)) {
        let mut bytes = clean_case();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        let peak = peak_during(|| {
            if let Ok(instance) = read_bytes(&bytes) {
                let _ = decode_pixels(&instance, &mut Vec::new());
            }
            let _ = identify(&bytes);
        });
        prop_assert!(peak < 4 * MB, "peak {} bytes", peak);
    }
}

/// A corrupt RLE segment makes the codec index past its buffer. The decoder catches that panic,
/// and with `RUST_BACKTRACE` set its backtrace must not count as decoder memory.
#[test]
fn corrupt_rle_segment_panic_is_contained() {
    let mut bytes = std::fs::read(shared_cases().join("g44_rle.dcm")).unwrap();
    apply(&mut bytes, &Mutation::Splice { at: 6_368, bytes: vec![0, 0, 0, 1] });

    let peak = peak_during(|| {
        if let Ok(instance) = read_bytes(&bytes) {
            let _ = decode_pixels(&instance, &mut Vec::new());
        }
    });

    assert!(peak < 64 * MB, "peak {peak} bytes");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    /// Compressed cases: the codecs get corrupt streams. Declared dimensions may legitimately
    /// ask for more memory here (compressed data expands), so the bound is looser.
    #[test]
    fn mutated_compressed_cases_never_panic(
        case in prop_oneof![Just("g42_jpeg_lossless_sv1.dcm"), Just("g44_rle.dcm"), Just("g38_deflated.dcm")],
        mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        let mut bytes = std::fs::read(shared_cases().join(case)).unwrap();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        let peak = peak_during(|| {
            if let Ok(instance) = read_bytes(&bytes) {
                let _ = decode_pixels(&instance, &mut Vec::new());
            }
        });
        prop_assert!(peak < 64 * MB, "peak {} bytes", peak);
    }
}

/// Returns the shared DICOM cases folder: `shared/cases/dicom` in the nearest folder above this
/// package that has one (the repository's sibling `shared/`).
fn shared_cases() -> std::path::PathBuf {
    let mut dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    loop {
        let candidate = dir.join("shared/cases/dicom");
        if candidate.is_dir() {
            return candidate;
        }
        assert!(dir.pop(), "no shared/cases/dicom beside the repository");
    }
}
