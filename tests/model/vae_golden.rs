//! AutoencoderKL and VQModel against diffusers (tools/make_vae_goldens.py): small configs shaped
//! like Stable Diffusion's VAE (legacy attention names, F16) and the LDM CelebA-HQ VQModel (BF16),
//! encode and decode at batches 1, 3 and 9 within 1e-4; the VQ codes chosen as diffusers chose them.

use std::path::PathBuf;

use wgpu_diffusion::model::tensors::read_safetensors;
use wgpu_diffusion::model::vae::{Autoencoder, AutoencoderKind, Stage};

use crate::*;

fn vae_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/vae").join(name)
}

fn check(name: &str) {
    let dir = vae_dir(name);
    let mut vae = Autoencoder::load(ctx(), &dir, None).unwrap_or_else(|e| panic!("{name}: {e}"));
    let cfg = vae.config.clone();
    let d = cfg.downscale();
    for b in [1, 3, 9] {
        let g = read_safetensors(&dir.join(format!("b{b}.safetensors"))).unwrap();
        let (s, l) = (g["image"].shape[2], g["z"].shape[1]);
        let (h, w) = (s / d, s / d);
        let (enc, _) = vae.run(ctx(), Stage::Encode, &g["image"].data, b, h, w).unwrap();
        match cfg.kind {
            AutoencoderKind::Kl => {
                // The moments: the first L channels of each image the mean, the rest the log-variance.
                let plane = h * w;
                let (mut mean, mut logvar) = (vec![], vec![]);
                for img in enc.chunks(2 * l * plane) {
                    mean.extend_from_slice(&img[..l * plane]);
                    logvar.extend(img[l * plane..].iter().map(|v| v.clamp(-30.0, 20.0)));
                }
                assert_close(&format!("{name} b{b}: posterior mean"), &mean, &g["mean"].data, RTOL);
                assert_close(
                    &format!("{name} b{b}: posterior log-variance"),
                    &logvar,
                    &g["logvar"].data,
                    RTOL,
                );
            }
            AutoencoderKind::Vq { .. } => {
                assert_close(&format!("{name} b{b}: latents"), &enc, &g["latents"].data, RTOL);
            }
        }
        let (dec, idx) = vae.run(ctx(), Stage::Decode, &g["z"].data, b, h, w).unwrap();
        assert_close(&format!("{name} b{b}: decode"), &dec, &g["decoded"].data, RTOL);
        if matches!(cfg.kind, AutoencoderKind::Vq { .. }) {
            let (_, enc_idx) = vae.run(ctx(), Stage::Decode, &g["latents"].data, b, h, w).unwrap();
            assert_eq!(enc_idx.unwrap(), g["indices"].data, "{name} b{b}: the codes of the encoded latents");
            assert!(idx.is_some());
        }
    }
}

#[test]
fn autoencoder_kl_shaped_like_stable_diffusion_matches_diffusers() {
    check("kl-sd");
}

#[test]
fn vq_model_shaped_like_ldm_celebahq_matches_diffusers() {
    check("vq-ldm");
}

#[test]
fn tiled_decode_matches_diffusers_enable_tiling() {
    use wgpu_diffusion::model::vae::tiling::{TilePlan, TiledDecoder};
    let dir = vae_dir("kl-sd");
    let mut vae = Autoencoder::load(ctx(), &dir, None).unwrap();
    let g = read_safetensors(&dir.join("tiled.safetensors")).unwrap();
    let (n, h, w) = (g["z"].shape[0], g["z"].shape[2], g["z"].shape[3]);
    let plan = TilePlan::for_autoencoder(&vae);
    assert_eq!((plan.tile, plan.stride(), plan.blend_extent(), plan.row_limit()), (4, 3, 8, 24));
    assert!(plan.splits(h, w));
    let z = ctx().upload(&g["z"].data, &[g["z"].data.len()]).unwrap();
    // One image a tile at a time, and both together: the same blend.
    for batch in [1, 2] {
        let tiled = TiledDecoder::new(ctx(), &mut vae, plan, Stage::Decode, batch, h, w).unwrap();
        let got = tiled.decode(ctx(), &z.buffer, n).unwrap();
        assert_close(&format!("tiled decode, {batch} image(s) a tile"), &got, &g["decoded"].data, 1e-3);
    }
}

#[test]
fn a_512_pixel_decode_keeps_one_heads_scores_at_a_time() {
    // 64x64 latents: the mid-block attention runs over 4096 tokens, 64 MiB of scores an image,
    // past the composed path's 16 MiB for two images: the executable takes it by head groups
    // (one image's scores at a time in shared scratch), never the whole batch's.
    let mut vae = Autoencoder::load(ctx(), &vae_dir("kl-sd"), None).unwrap();
    let e = vae.executable(ctx(), Stage::DecodeLatents, 2, 64, 64).unwrap();
    let labels: Vec<&str> = e.exe.dispatches.iter().map(|d| d.label).collect();
    let groups = labels.iter().filter(|l| **l == "attention.gather").count();
    assert_eq!(groups, 2, "one group an image: {labels:?}");
    let mut r = rng(3);
    let z = random(&mut r, 4 * 64 * 64);
    let (out, _) = vae.run(ctx(), Stage::Decode, &z, 1, 64, 64).unwrap();
    assert_eq!(out.len(), 3 * 512 * 512);
    assert!(out.iter().all(|v| v.is_finite()));
}

#[test]
fn tiled_encode_matches_diffusers_enable_tiling() {
    use wgpu_diffusion::model::vae::tiling::{TilePlan, TiledDecoder};
    let dir = vae_dir("kl-sd");
    let mut vae = Autoencoder::load(ctx(), &dir, None).unwrap();
    let g = read_safetensors(&dir.join("tiled-encode.safetensors")).unwrap();
    let (n, h, w) = (g["image"].shape[0], g["image"].shape[2], g["image"].shape[3]);
    let plan = TilePlan::encoder_for(&vae);
    assert_eq!((plan.tile, plan.stride(), plan.blend_extent(), plan.row_limit()), (32, 24, 1, 3));
    let image = ctx().upload(&g["image"].data, &[g["image"].data.len()]).unwrap();
    let tiled = TiledDecoder::new(ctx(), &mut vae, plan, Stage::Encode, 2, h, w).unwrap();
    let moments = tiled.decode(ctx(), &image.buffer, n).unwrap();
    let (l, plane) = (4, (h / 8) * (w / 8));
    let (mut mean, mut logvar) = (vec![], vec![]);
    for img in moments.chunks(2 * l * plane) {
        mean.extend_from_slice(&img[..l * plane]);
        logvar.extend(img[l * plane..].iter().map(|v| v.clamp(-30.0, 20.0)));
    }
    assert_close("tiled encode: mean", &mean, &g["mean"].data, 1e-3);
    assert_close("tiled encode: log-variance", &logvar, &g["logvar"].data, 1e-3);
}

#[test]
fn the_posterior_draw_matches_diffusers() {
    // mean + exp(logvar / 2) eps from the encoder's moments, by the kernel img2img uses.
    use wgpu_diffusion::kernels::elementwise;
    let dir = vae_dir("kl-sd");
    let mut vae = Autoencoder::load(ctx(), &dir, None).unwrap();
    let g = read_safetensors(&dir.join("b3.safetensors")).unwrap();
    let (enc, _) = vae.run(ctx(), Stage::Encode, &g["image"].data, 3, 4, 4).unwrap();
    let (moments, eps, out) = (upload(&enc), upload(&g["eps"].data), output(g["sample"].data.len()));
    run(elementwise::gaussian_sample(
        ctx(),
        3,
        4,
        16,
        false,
        (1.0, 0.0),
        &moments.buffer,
        &eps.buffer,
        &out.buffer,
    )
    .unwrap());
    assert_close("posterior sample", &read(&out), &g["sample"].data, RTOL);
}
