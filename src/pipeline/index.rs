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
}

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
        let dir = root.join(name);
        let component = Component {
            name: name.clone(),
            library: library.to_string(),
            class: class.to_string(),
            dir: dir.clone(),
        };
        let slot = match (name.as_str(), class) {
            ("unet", "UNet2DModel") => &mut out.unet,
            ("unet", "UNet2DConditionModel") => {
                return Err(Error::Invalid(format!(
                    "{}: its unet is a UNet2DConditionModel (text-to-image, Stable Diffusion): not supported yet; \
                     this engine runs UNet2DModel pipelines (unconditional, class-conditional, latent)",
                    root.display()
                )))
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
                     (it runs unet UNet2DModel, vqvae VQModel or vae AutoencoderKL, and a scheduler)"
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
    Ok(out)
}
