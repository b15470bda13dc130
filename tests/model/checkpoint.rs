//! diffusers loads what `train` writes: tools/make_checkpoint_golden.py trained the tiny model with
//! this engine's CLI into tests/golden/checkpoint/model, loaded it with UNet2DModel.from_pretrained
//! (no missing, unexpected or mismatched keys) and DDPMScheduler.from_pretrained, and saved
//! diffusers' forward. Here the engine's forward on that folder must equal it, and the checkpoint
//! writer must still write what diffusers loaded (files, tensor names, shapes and dtypes, config).

use std::collections::BTreeMap;

use wgpu_diffusion::io::dataset::Dataset;
use wgpu_diffusion::io::npy::Values;
use wgpu_diffusion::model::tensors::read_safetensors;
use wgpu_diffusion::model::{ModelFolder, UNet, UNetConfig};
use wgpu_diffusion::train::checkpoint::{self, CheckpointInfo};
use wgpu_diffusion::train::{init, Recipe, Trainer};

use crate::*;

fn golden() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/checkpoint")
}

#[test]
fn the_engine_reproduces_diffusers_forward_on_a_trained_folder() {
    let c = ctx();
    let mut unet = UNet::load(c, &ModelFolder::open(&golden().join("model")).unwrap()).unwrap();
    let g = read_safetensors(&golden().join("forward.safetensors")).unwrap();
    let got = unet.forward(c, &g["sample"].data, &g["timesteps"].data).unwrap();
    assert_close("diffusers' forward of the trained folder", &got, &g["output"].data, RTOL);
}

/// Tensor name -> (dtype, shape) of a safetensors file.
fn header(path: &std::path::Path) -> BTreeMap<String, (String, Vec<usize>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors().into_iter().map(|(n, v)| (n, (format!("{:?}", v.dtype()), v.shape().to_vec()))).collect()
}

#[test]
fn the_writer_still_writes_what_diffusers_loaded() {
    let c = ctx();
    let config_path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny_unet_config.json");
    let config_text = std::fs::read_to_string(&config_path).unwrap();
    let config = UNetConfig::parse(&config_text, "tiny").unwrap();
    let data = Dataset {
        source: "zeros".into(),
        count: 4,
        channels: 1,
        size: 8,
        values: Values::U8(vec![0; 256]),
        labels: None,
    };
    let recipe = Recipe { steps: 1, batch: 2, ..Recipe::default() };
    let mut unet =
        UNet::from_tensors(c, config.clone(), init::pytorch_default(c, &config, 0).unwrap(), "init").unwrap();
    let alphas: Vec<f64> = (0..1000).map(|t| 1.0 - t as f64 / 1001.0).collect();
    let mut trainer = Trainer::new(c, &mut unet, &alphas, &data, &recipe, 1 << 30, 1, None).unwrap();
    trainer.submit(c, &data, 1).unwrap();
    trainer.finish(c).unwrap();
    let dir = scratch("checkpoint-writer");
    let committed = golden().join("model");
    let sched: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(committed.join("scheduler_config.json")).unwrap())
            .unwrap();
    let info = CheckpointInfo {
        unet_config: &config_text,
        scheduler: sched.as_object().unwrap(),
        data: "zeros",
        started_from: "a test",
    };
    checkpoint::save(c, &unet, &trainer, &dir, &info).unwrap();
    let weights = "diffusion_pytorch_model.safetensors";
    assert_eq!(header(&dir.join(weights)), header(&committed.join(weights)));
    for f in ["config.json", "scheduler_config.json"] {
        assert_eq!(
            std::fs::read_to_string(dir.join(f)).unwrap(),
            std::fs::read_to_string(committed.join(f)).unwrap(),
            "{f}"
        );
    }
    // The model card says how to load it; the resume state reads back.
    assert!(std::fs::read_to_string(dir.join("README.md")).unwrap().contains("UNet2DModel.from_pretrained"));
    let state = checkpoint::load_state(&dir).unwrap();
    assert_eq!((state.steps, state.recipe), (1, recipe));
    // A truncated state is refused in words.
    let path = dir.join(checkpoint::STATE_FILE);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = checkpoint::load_state(&dir).err().unwrap().to_string();
    assert!(err.contains("training_state.safetensors") && err.contains("not a valid safetensors"), "{err}");
}
