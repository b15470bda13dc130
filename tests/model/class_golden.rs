//! Class-conditional UNet2DModels against diffusers (tools/make_class_goldens.py): both kinds of
//! class embedding, a batch of 33 with attention, within 1e-4 of diffusers; image k of a batch is
//! what the model makes of image k alone at every batch size users run.

use std::path::PathBuf;

use wgpu_diffusion::model::config::ClassEmbedding;
use wgpu_diffusion::model::tensors::read_safetensors;
use wgpu_diffusion::model::{ModelFolder, UNet};

use crate::*;

fn class_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/class").join(name)
}

fn load(name: &str) -> (UNet, std::collections::HashMap<String, wgpu_diffusion::model::HostTensor>) {
    let dir = class_dir(name);
    let folder = ModelFolder::open(&dir).unwrap();
    let unet = UNet::load(ctx(), &folder).unwrap_or_else(|e| panic!("{name}: {e}"));
    (unet, read_safetensors(&dir.join("io.safetensors")).unwrap())
}

fn matches_diffusers_and_is_batch_invariant(name: &str) {
    let (mut unet, io) = load(name);
    let (x, t, l) = (&io["sample"].data, &io["timesteps"].data, &io["class_labels"].data);
    let got = unet.forward_labelled(ctx(), x, t, l).unwrap();
    assert_close(&format!("{name}: batch of 33"), &got, &io["output"].data, RTOL);
    let (s, c) = (unet.config.sample_size, unet.config.in_channels);
    let (per, per_out) = (c * s * s, unet.config.out_channels * s * s);
    let alone = unet.forward_micro(ctx(), x, t, Some(l), 1).unwrap();
    for b in BATCHES {
        let got = unet.forward_labelled(ctx(), &x[..b * per], &t[..b], &l[..b]).unwrap();
        for k in 0..b {
            assert_close(
                &format!("{name}: image {k} of a batch of {b} vs alone"),
                &got[k * per_out..(k + 1) * per_out],
                &alone[k * per_out..(k + 1) * per_out],
                1e-5,
            );
        }
    }
}

#[test]
fn class_table_matches_diffusers_at_every_batch() {
    matches_diffusers_and_is_batch_invariant("class-table");
}

#[test]
fn timestep_class_embedding_matches_diffusers_at_every_batch() {
    matches_diffusers_and_is_batch_invariant("class-timestep");
}

#[test]
fn class_names_and_null_class_come_from_the_config() {
    let (unet, _) = load("class-table");
    let c = &unet.config;
    assert_eq!(c.class_embedding, Some(ClassEmbedding::Table { rows: 11 }));
    let names = c.class_names.as_ref().unwrap();
    assert_eq!((names.len(), names[0].as_str(), names[9].as_str()), (10, "T-shirt/top", "Ankle boot"));
    assert_eq!((c.null_class, c.num_classes(), c.default_null_class()), (Some(10), Some(10), Some(10)));
    let (unet, _) = load("class-timestep");
    let c = &unet.config;
    assert_eq!(c.class_embedding, Some(ClassEmbedding::Timestep));
    assert_eq!((c.num_classes(), c.default_null_class(), c.max_label()), (None, None, None));
}

#[test]
fn labels_must_suit_the_model() {
    let (mut unet, io) = load("class-table");
    let (x, t) = (&io["sample"].data[..784], &io["timesteps"].data[..1]);
    let err = unet.forward(ctx(), x, t).unwrap_err().to_string();
    assert!(err.contains("class_labels should be provided"), "{err}");
    let err = unet.forward_labelled(ctx(), x, t, &[11.0]).unwrap_err().to_string();
    assert!(err.contains("class label 11") && err.contains("0..=10"), "{err}");
    let err = unet.forward_labelled(ctx(), x, t, &[1.5]).unwrap_err().to_string();
    assert!(err.contains("class label 1.5"), "{err}");
    // An unconditional model refuses labels.
    let folder = ModelFolder::open(&golden_dir("fashion-f16")).unwrap();
    let mut plain = UNet::load(ctx(), &folder).unwrap();
    let err = plain.forward_labelled(ctx(), x, t, &[1.0]).unwrap_err().to_string();
    assert!(err.contains("no class embedding"), "{err}");
}
