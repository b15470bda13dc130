//! A pipeline folder's model_index.json, as diffusers' `save_pretrained` writes it
//! (../shared/LATENT.md section 1): each component `name: [library, class]` loads from `<root>/<name>/`
//! by its class; `[null, null]` is absent; keys starting with `_` and scalar values are not
//! components. The components decide what the folder is, whatever its `_class_name`.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::{Error, Result};

pub const INDEX_FILE: &str = "model_index.json";

/// A component the folder names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Component {
    /// Its key in model_index.json (`unet`, `vqvae`, ...).
    pub name: String,
    pub library: String,
    pub class: String,
    pub dir: PathBuf,
}

/// The components this engine runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Components {
    pub unet: Option<Component>,
    pub scheduler: Option<Component>,
    /// `vqvae` (VQModel) or `vae` (AutoencoderKL).
    pub autoencoder: Option<Component>,
    /// A text-to-image pipeline's CLIPTextModel and CLIPTokenizer (Stable Diffusion 1.x, 2.x).
    pub text_encoder: Option<Component>,
    pub tokenizer: Option<Component>,
    /// Components present but not run (a Stable Diffusion folder's safety checker and its
    /// image processor), by name.
    pub skipped: Vec<String>,
}

impl Components {
    /// Whether the folder is a text-to-image pipeline (its unet a UNet2DConditionModel).
    pub fn is_text(&self) -> bool {
        self.unet.as_ref().is_some_and(|u| u.class == "UNet2DConditionModel")
    }
}

/// Components of pipelines this engine does not run, and what they mean.
const OTHER_FAMILIES: [(&str, &str); 5] = [
    ("text_encoder_2", "SDXL (a second text encoder, text_encoder_2)"),
    ("tokenizer_2", "SDXL (a second tokenizer, tokenizer_2)"),
    ("text_encoder_3", "SD3 (a third text encoder, text_encoder_3)"),
    ("transformer", "a transformer backbone (SD3, Flux, PixArt) instead of a unet"),
    ("prior", "a prior model (Kandinsky, unCLIP)"),
];

const AUTOENCODERS: [&str; 2] = ["AutoencoderKL", "VQModel"];

/// Reads `root/model_index.json`; a component the engine does not run is a one-line error naming
/// it, so a folder is never sampled without a part it needs.
pub fn read(root: &Path) -> Result<Components> {
    let path = root.join(INDEX_FILE);
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(&path).map_err(|source| Error::Io { path: shown.clone(), source })?;
    let value: Value =
        serde_json::from_str(&text).map_err(|e| Error::Invalid(format!("{shown}: malformed JSON: {e}")))?;
    let obj = value.as_object().ok_or_else(|| Error::Invalid(format!("{shown}: not a JSON object")))?;
    let mut out = Components::default();
    for (name, v) in obj {
        if name.starts_with('_') {
            continue;
        }
        let Some([library, class]) = v.as_array().map(|a| a.as_slice()) else {
            continue; // a scalar: an init argument (requires_safety_checker), not a component
        };
        if library.is_null() && class.is_null() {
            continue; // saved as absent
        }
        let (Some(library), Some(class)) = (library.as_str(), class.as_str()) else {
            return Err(Error::Invalid(format!("{shown}: component '{name}' is not [library, class]: {v}")));
        };
        if let Some((_, what)) = OTHER_FAMILIES.iter().find(|f| f.0 == name) {
            return Err(Error::Invalid(format!(
                "{}: {what} is not supported; this engine runs Stable Diffusion 1.x and 2.x (one CLIP text encoder and a unet)",
                root.display()
            )));
        }
        let dir = root.join(name);
        let component = Component {
            name: name.clone(),
            library: library.to_string(),
            class: class.to_string(),
            dir: dir.clone(),
        };
        let slot = match (name.as_str(), class) {
            ("unet", "UNet2DModel" | "UNet2DConditionModel") => &mut out.unet,
            ("text_encoder", "CLIPTextModel") => &mut out.text_encoder,
            ("tokenizer", "CLIPTokenizer" | "CLIPTokenizerFast") => &mut out.tokenizer,
            ("safety_checker" | "feature_extractor" | "image_encoder", _) => {
                out.skipped.push(name.clone());
                continue;
            }
            ("scheduler", _) => &mut out.scheduler,
            ("vqvae" | "vae", c) if AUTOENCODERS.contains(&c) => {
                if out.autoencoder.is_some() {
                    return Err(Error::Invalid(format!("{shown}: two autoencoders (vae and vqvae)")));
                }
                &mut out.autoencoder
            }
            _ => {
                return Err(Error::Invalid(format!(
                    "{shown}: component '{name}' ({library} {class}) is not one this engine runs \
                     (it runs unet UNet2DModel or UNet2DConditionModel, vqvae VQModel or vae AutoencoderKL, \
                     text_encoder CLIPTextModel, tokenizer CLIPTokenizer, and a scheduler)"
                )))
            }
        };
        if !dir.is_dir() {
            return Err(Error::Invalid(format!(
                "{}: model_index.json names component '{name}' ({class}), but the folder {} is missing",
                root.display(),
                dir.display()
            )));
        }
        *slot = Some(component);
    }
    if out.unet.is_none() {
        return Err(Error::Invalid(format!("{shown}: no unet component")));
    }
    // A text-to-image pipeline needs its text side and its autoencoder; another must not have a
    // text side it would ignore.
    let missing = |what: &str| {
        Error::Invalid(format!("{}: a UNet2DConditionModel pipeline without its {what}", root.display()))
    };
    if out.is_text() {
        if out.text_encoder.is_none() {
            return Err(missing("text_encoder (CLIPTextModel)"));
        }
        if out.tokenizer.is_none() {
            return Err(missing("tokenizer (CLIPTokenizer)"));
        }
        if out.autoencoder.is_none() {
            return Err(missing("vae (AutoencoderKL)"));
        }
    } else if let Some(t) = out.text_encoder.as_ref().or(out.tokenizer.as_ref()) {
        return Err(Error::Invalid(format!(
            "{shown}: a {} ({}) beside a UNet2DModel, which takes no text",
            t.name, t.class
        )));
    }
    Ok(out)
}
