//! burn 0.22.1 timings of the `ref-*` rows of `cargo bench --bench kernels` (the reference
//! table): wall time of one call and a device sync, after warm-up calls (autotune runs on the
//! first), median and min of 25. `first` is the first call, autotune included.
//!
//!   cargo run --release [--features vulkan] -- [filter]

use burn::nn::GroupNormConfig;
use burn::tensor::activation::softmax;
use burn::tensor::module::{attention, conv2d};
use burn::tensor::ops::{AttentionModuleOptions, ConvOptions};
use burn::tensor::{Device, Distribution, Tensor};
use std::time::Instant;

fn time(name: &str, flops: f64, dev: &Device, mut call: impl FnMut()) {
    let t0 = Instant::now();
    call();
    dev.sync().unwrap();
    let first = t0.elapsed().as_secs_f64() * 1e3;
    for _ in 0..3 {
        call();
        dev.sync().unwrap();
    }
    let mut ms: Vec<f64> = (0..25)
        .map(|_| {
            let t = Instant::now();
            call();
            dev.sync().unwrap();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ms.sort_by(|a, b| a.total_cmp(b));
    let median = ms[ms.len() / 2];
    println!(
        "{name:<24} median {median:9.3} ms  min {:9.3} ms  {:7.2} GFLOP/s  first {first:.0} ms",
        ms[0],
        flops / median / 1e6
    );
}

fn main() {
    let dev = Device::default();
    println!("device: {dev:?}");
    let filter = std::env::args().nth(1).unwrap_or_default();
    let wanted = |name: &str| name.contains(&filter);
    let normal = Distribution::Normal(0.0, 1.0);
    let rand4 = |shape: [usize; 4]| Tensor::<4>::random(shape, normal, &dev);

    if wanted("ref-matmul-512") {
        let a = Tensor::<2>::random([512, 512], normal, &dev);
        let b = Tensor::<2>::random([512, 512], normal, &dev);
        time("ref-matmul-512", 2.0 * 512f64.powi(3), &dev, || {
            let _ = a.clone().matmul(b.clone());
        });
    }
    for n in [8usize, 1] {
        let name = format!("ref-conv2d-b{n}");
        if !wanted(&name) {
            continue;
        }
        let (x, w) = (rand4([n, 128, 32, 32]), rand4([128, 128, 3, 3]));
        let bias = Tensor::<1>::random([128], normal, &dev);
        let options = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
        time(&name, 2.0 * (n * 128 * 1024 * 128 * 9) as f64, &dev, || {
            let _ = conv2d(x.clone(), w.clone(), Some(bias.clone()), options.clone());
        });
    }
    if wanted("ref-group-norm-b8") {
        let norm = GroupNormConfig::new(32, 128).init(&dev);
        let x = rand4([8, 128, 32, 32]);
        time("ref-group-norm-b8", 0.0, &dev, || {
            let _ = norm.forward(x.clone());
        });
    }
    if wanted("ref-attention-b8") {
        let (q, k, v) = (rand4([8, 1, 256, 128]), rand4([8, 1, 256, 128]), rand4([8, 1, 256, 128]));
        let flops = 4.0 * (8 * 256 * 256 * 128) as f64;
        time("ref-attention-b8 fused", flops, &dev, || {
            let _ = attention(q.clone(), k.clone(), v.clone(), None, None, AttentionModuleOptions::default());
        });
        time("ref-attention-b8 composed", flops, &dev, || {
            let scores = q.clone().matmul(k.clone().swap_dims(2, 3)) * (1.0 / 128f64.sqrt());
            let _ = softmax(scores, 3).matmul(v.clone());
        });
    }
}
