//! Bad model input: each case must give an error that says what is wrong, never a panic.

use std::fs;
use std::path::Path;

use wgpu_diffusion::model::{ModelFolder, UNet};

use crate::*;

fn load(dir: &Path) -> String {
    match ModelFolder::open(dir).and_then(|f| UNet::load(ctx(), &f)) {
        Ok(_) => panic!("{} loaded, but it is broken", dir.display()),
        Err(e) => e.to_string(),
    }
}

/// A copy of a small golden model to break.
fn copy_of(golden: &str, name: &str) -> std::path::PathBuf {
    let dir = scratch(name);
    for f in ["config.json", "diffusion_pytorch_model.safetensors"] {
        fs::copy(golden_dir(golden).join(f), dir.join(f)).unwrap();
    }
    dir
}

fn weights(dir: &Path) -> std::path::PathBuf {
    dir.join("diffusion_pytorch_model.safetensors")
}

#[track_caller]
fn assert_says(err: &str, words: &[&str]) {
    for w in words {
        assert!(err.contains(w), "error should mention '{w}': {err}");
    }
    assert!(!err.contains('\n'), "one line: {err}");
}

#[test]
fn missing_folder_and_files() {
    assert_says(&load(Path::new("/nonexistent/model")), &["/nonexistent/model", "does not exist"]);
    let empty = scratch("empty");
    assert_says(&load(&empty), &["no config.json"]);
    let no_weights = scratch("no-weights");
    fs::copy(golden_dir("all-attention").join("config.json"), no_weights.join("config.json")).unwrap();
    assert_says(&load(&no_weights), &["no diffusion_pytorch_model.safetensors"]);
    fs::write(no_weights.join("diffusion_pytorch_model.bin"), b"pickle").unwrap();
    assert_says(&load(&no_weights), &[".bin", "safetensors"]);
}

#[test]
fn truncated_and_corrupt_safetensors() {
    let dir = copy_of("all-attention", "truncated");
    let bytes = fs::read(weights(&dir)).unwrap();
    fs::write(weights(&dir), &bytes[..bytes.len() / 2]).unwrap();
    assert_says(&load(&dir), &["not a valid safetensors file"]);

    fs::write(weights(&dir), &bytes[..5]).unwrap();
    assert_says(&load(&dir), &["not a valid safetensors file"]);

    // A header length far beyond the file.
    let mut huge = bytes.clone();
    huge[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    fs::write(weights(&dir), &huge).unwrap();
    assert_says(&load(&dir), &["not a valid safetensors file"]);

    // Garbage where the JSON header should be.
    let mut garbage = bytes.clone();
    garbage[8..20].copy_from_slice(b"!!!!!!!!!!!!");
    fs::write(weights(&dir), &garbage).unwrap();
    assert_says(&load(&dir), &["not a valid safetensors file"]);
}

/// A safetensors file whose header is `header` (JSON), followed by `data_len` zero bytes.
fn handmade(dir: &Path, header: &str, data_len: usize) {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.resize(bytes.len() + data_len, 0);
    fs::write(weights(dir), bytes).unwrap();
}

#[test]
fn offsets_outside_the_data() {
    let dir = copy_of("all-attention", "offsets");
    // 16 bytes promised, 8 present.
    handmade(&dir, r#"{"conv_in.bias":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#, 8);
    assert_says(&load(&dir), &["not a valid safetensors file"]);
    // Offsets that disagree with the shape.
    handmade(&dir, r#"{"conv_in.bias":{"dtype":"F32","shape":[4],"data_offsets":[0,12]}}"#, 16);
    assert_says(&load(&dir), &["not a valid safetensors file"]);
    // An unsupported dtype is named.
    handmade(&dir, r#"{"conv_in.bias":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}}"#, 16);
    assert_says(&load(&dir), &["conv_in.bias", "I64"]);
}

fn rewrite_weights(
    dir: &Path,
    edit: impl FnOnce(&mut std::collections::HashMap<String, wgpu_diffusion::model::HostTensor>),
) {
    use wgpu_diffusion::model::tensors::{read_safetensors, write_safetensors};
    let mut t = read_safetensors(&weights(dir)).unwrap();
    edit(&mut t);
    let list: Vec<_> = t.iter().map(|(k, v)| (k.as_str(), v)).collect();
    write_safetensors(&weights(dir), &list).unwrap();
}

#[test]
fn missing_tensor_is_named() {
    let dir = copy_of("all-attention", "missing-tensor");
    rewrite_weights(&dir, |t| {
        t.remove("down_blocks.1.resnets.0.conv1.weight");
    });
    assert_says(&load(&dir), &["missing tensor 'down_blocks.1.resnets.0.conv1.weight'"]);
}

#[test]
fn misshaped_tensor_is_named_with_both_shapes() {
    let dir = copy_of("all-attention", "misshaped");
    rewrite_weights(&dir, |t| {
        let w = t.get_mut("mid_block.attentions.0.to_q.weight").unwrap();
        w.shape = vec![8, 32];
    });
    assert_says(&load(&dir), &["mid_block.attentions.0.to_q.weight", "[8, 32]", "[16, 16]"]);
}

fn with_config(name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let dir = copy_of("all-attention", name);
    let mut cfg: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    edit(&mut cfg);
    fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    load(&dir)
}

#[test]
fn bad_configs() {
    let dir = copy_of("all-attention", "malformed");
    fs::write(dir.join("config.json"), "{\"sample_size\": 12,").unwrap();
    assert_says(&load(&dir), &["config.json", "malformed JSON"]);

    assert_says(&with_config("groups", |c| c["norm_num_groups"] = 3.into()), &["norm_num_groups 3", "8"]);
    assert_says(
        &with_config("unknown-field", |c| c["my_extra_field"] = 1.into()),
        &["unknown config field 'my_extra_field'"],
    );
    assert_says(
        &with_config("block-type", |c| c["down_block_types"][0] = "CrossAttnDownBlock2D".into()),
        &["CrossAttnDownBlock2D"],
    );
    assert_says(&with_config("act", |c| c["act_fn"] = "gelu".into()), &["act_fn", "gelu"]);
    assert_says(
        &with_config("shift", |c| c["resnet_time_scale_shift"] = "scale_shift".into()),
        &["scale_shift"],
    );
    assert_says(&with_config("fourier", |c| c["time_embedding_type"] = "fourier".into()), &["fourier"]);
    // A class table the weights lack; the kinds of class embedding that are not integer labels.
    assert_says(
        &with_config("classes", |c| c["num_class_embeds"] = 10.into()),
        &["missing tensor 'class_embedding.weight'"],
    );
    assert_says(
        &with_config("identity", |c| c["class_embed_type"] = "identity".into()),
        &["class_embed_type \"identity\"", "not supported"],
    );
    assert_says(
        &with_config("projection", |c| c["class_embed_type"] = "projection".into()),
        &["class_embed_type \"projection\"", "not supported"],
    );
    assert_says(
        &with_config("zero-classes", |c| c["num_class_embeds"] = 0.into()),
        &["num_class_embeds is 0"],
    );
    assert_says(
        &with_config("names-alone", |c| c["id2label"] = serde_json::json!({"0": "a"})),
        &["id2label", "without a class embedding"],
    );
    assert_says(
        &with_config("null-outside", |c| {
            c["num_class_embeds"] = 3.into();
            c["null_class_id"] = 3.into();
        }),
        &["null_class_id 3", "3 rows"],
    );
    assert_says(
        &with_config("names-gap", |c| {
            c["num_class_embeds"] = 3.into();
            c["id2label"] = serde_json::json!({"0": "a", "2": "c"});
        }),
        &["id2label", "without gaps"],
    );
    assert_says(
        &with_config("count", |c| c["block_out_channels"] = serde_json::json!([8, 16, 16])),
        &["must match"],
    );
    assert_says(&with_config("size", |c| c["sample_size"] = 13.into()), &["sample_size 13"]);
    assert_says(&with_config("type", |c| c["layers_per_block"] = "two".into()), &["layers_per_block"]);
    assert_says(&with_config("heads", |c| c["attention_head_dim"] = 3.into()), &["attention_head_dim 3"]);
}
