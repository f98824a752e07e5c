//! What copying a layer's bytes costs, three ways: the memory roof of a
//! memory-bound kernel of that size (default: MobileNet v2's 56x56x144
//! depthwise input and output, 1.8 MB each, L3-resident on repeated calls):
//! `cargo run --release -p convjit-jit --example copy_roof [-- FLOATS]`.
//!
//! - `memcpy`: `copy_from_slice` (the C library's memcpy);
//! - `avx512 load/store`: a plain vector loop, the stores a kernel makes
//!   (each written line is first read: a read for ownership);
//! - `avx512 stream`: non-temporal stores, which skip that read but send
//!   the output to memory, out of the caches the next layer reads from.
//!
//! Each: the median of 301 calls after 200 warm-up calls, one after
//! another on the same buffers, as `convjit bench` times a layer.

use std::time::Instant;

fn median_us(mut f: impl FnMut()) -> f64 {
    for _ in 0..200 {
        f();
    }
    let mut t: Vec<f64> = (0..301)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[150]
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map_or(56 * 56 * 144, |s| s.parse().expect("a number of floats"));
    // 64-byte aligned views of two buffers, as convjit's run buffers are.
    let (mut a, mut b) = (vec![0f32; n + 16], vec![0f32; n + 16]);
    let align = |v: &[f32]| {
        let off = v.as_ptr().align_offset(64);
        off..off + n
    };
    let (ra, rb) = (align(&a), align(&b));
    for (i, x) in a[ra.clone()].iter_mut().enumerate() {
        *x = i as f32;
    }
    let (src, dst) = (&a[ra], &mut b[rb]);
    let mb = (n * 4) as f64 / 1e6;
    let report = |name: &str, us: f64| {
        println!(
            "{name:<18} {us:8.1} us  ({:.1} GB/s read + written)",
            2.0 * mb / us * 1e3
        )
    };
    println!("copying {n} floats ({mb:.2} MB) into another buffer:");
    report(
        "memcpy",
        median_us(|| {
            dst.copy_from_slice(src);
            std::hint::black_box(&mut *dst);
        }),
    );
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") && n.is_multiple_of(16) {
        use std::arch::x86_64::{_mm512_load_ps, _mm512_store_ps, _mm512_stream_ps, _mm_sfence};
        let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
        report(
            "avx512 load/store",
            median_us(|| {
                for i in (0..n).step_by(16) {
                    // SAFETY: `i + 16 <= n` floats of both 64-byte
                    // aligned buffers; AVX-512F was detected.
                    unsafe { _mm512_store_ps(d.add(i), _mm512_load_ps(s.add(i))) };
                }
                std::hint::black_box(d);
            }),
        );
        report(
            "avx512 stream",
            median_us(|| {
                for i in (0..n).step_by(16) {
                    // SAFETY: as above.
                    unsafe { _mm512_stream_ps(d.add(i), _mm512_load_ps(s.add(i))) };
                }
                // SAFETY: SSE is part of x86_64.
                unsafe { _mm_sfence() };
                std::hint::black_box(d);
            }),
        );
    } else {
        println!("(the AVX-512 loops need AVX-512F and a multiple of 16 floats)");
    }
}
