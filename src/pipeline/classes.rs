//! A request's classes on a class-conditional model: which class each image is (one asked for,
//! or image k of class k mod the number of classes), by index or by the folder's class names,
//! and the classifier-free guidance (its scale and the null class), each checked against the
//! model before any work.

use super::{Classes, DEFAULT_GUIDANCE_SCALE};
use crate::diffusion::Guidance;
use crate::model::config::{folder_name, ClassEmbedding};
use crate::model::UNetConfig;
use crate::{Error, Result};

/// What a command was asked: `--class`, `--guidance-scale`, `--null-class`.
#[derive(Clone, Debug, Default)]
pub struct ClassRequest<'a> {
    pub class: Option<&'a str>,
    pub guidance_scale: Option<f64>,
    pub null_class: Option<&'a str>,
    /// A labelled dataset of this many images a class (or of the one class asked): image k of
    /// class k / per_class.
    pub per_class: Option<usize>,
}

/// The batch `--per-class n` makes: n images of each of the model's classes, or of the one asked.
pub fn per_class_batch(cfg: &UNetConfig, req: &ClassRequest, n: usize) -> Result<usize> {
    if n == 0 {
        return Err(Error::Invalid("--per-class must be at least 1".into()));
    }
    if cfg.class_embedding.is_none() {
        return Err(Error::Invalid(
            "--per-class: this model is not class-conditional (its config has no num_class_embeds or class_embed_type)"
                .into(),
        ));
    }
    if req.class.is_some() {
        return Ok(n);
    }
    let classes = cfg.num_classes().ok_or_else(|| {
        Error::Invalid("--per-class: this model's config names no classes: give --class N too".into())
    })?;
    Ok(n * classes)
}

/// The model's classes in words: "0 T-shirt/top, 1 Trouser, ..." or "0..9".
pub fn describe(cfg: &UNetConfig) -> String {
    match (&cfg.class_names, cfg.num_classes()) {
        (Some(names), _) => {
            names.iter().enumerate().map(|(i, n)| format!("{i} {n}")).collect::<Vec<_>>().join(", ")
        }
        (None, Some(n)) => format!("0..{}", n.saturating_sub(1)),
        (None, None) => "any integer".into(),
    }
}

/// The label `text` names: an index, or one of the model's class names (case and '/' vs '_'
/// aside, so a dataset folder's name works too). A class is one of the model's classes; a null
/// class (`null`) any row of its class table. A "timestep" class embedding takes any integer.
pub fn label(cfg: &UNetConfig, text: &str, flag: &str, null: bool) -> Result<i64> {
    let t = text.trim();
    let out_of_range = |what: String| {
        Error::Invalid(format!("{flag} {t}: {what}; this model's classes are {}", describe(cfg)))
    };
    if let Ok(i) = t.parse::<i64>() {
        let (max, what) = match (cfg.class_embedding, cfg.num_classes()) {
            (Some(ClassEmbedding::Table { rows }), _) if null => {
                (Some(rows as i64 - 1), "row of the class table")
            }
            (_, Some(n)) => (Some(n as i64 - 1), "class"),
            _ => (None, ""),
        };
        if let Some(m) = max.filter(|&m| i < 0 || i > m) {
            return Err(out_of_range(format!("not a {what} of this model (0..={m})")));
        }
        return Ok(i);
    }
    let wanted = folder_name(t).to_lowercase();
    let found = cfg
        .class_names
        .as_ref()
        .and_then(|names| names.iter().position(|n| folder_name(n).to_lowercase() == wanted));
    found.map(|i| i as i64).ok_or_else(|| out_of_range("not a class index nor a class name".into()))
}

/// The classes of `batch` images from a model configured by `cfg`, as asked; None for an
/// unconditional model (which refuses the flags).
pub fn resolve(cfg: &UNetConfig, req: &ClassRequest, batch: usize) -> Result<Option<Classes>> {
    if cfg.class_embedding.is_none() {
        let given = [
            ("--class", req.class.is_some()),
            ("--guidance-scale", req.guidance_scale.is_some()),
            ("--null-class", req.null_class.is_some()),
        ];
        return match given.iter().find(|g| g.1) {
            Some((flag, _)) => Err(Error::Invalid(format!(
                "{flag}: this model is not class-conditional (its config has no num_class_embeds or class_embed_type)"
            ))),
            None => Ok(None),
        };
    }
    let scale = req.guidance_scale.unwrap_or(DEFAULT_GUIDANCE_SCALE as f64);
    if !scale.is_finite() || scale < 0.0 {
        return Err(Error::Invalid(format!("--guidance-scale {scale}: a finite number of at least 0")));
    }
    let labels: Vec<f32> = match (req.class, req.per_class) {
        (Some(c), _) => vec![label(cfg, c, "--class", false)? as f32; batch],
        (None, Some(n)) => (0..batch).map(|k| (k / n.max(1)) as f32).collect(),
        (None, None) => super::default_classes(cfg, batch)?.map(|c| c.labels).unwrap_or_default(),
    };
    let guidance = if scale == 1.0 {
        None // the conditional model alone: no unconditional pass
    } else {
        let null = match req.null_class {
            Some(k) => label(cfg, k, "--null-class", true)?,
            None => cfg.default_null_class().map(|n| n as i64).ok_or_else(|| {
                Error::Invalid(
                    "this model records no null class for guidance: give --null-class K (or --guidance-scale 1)".into(),
                )
            })?,
        };
        Some(Guidance { scale: scale as f32, null_label: null as f32 })
    };
    Ok(Some(Classes { labels, guidance }))
}

/// A label's name for files and PNG text: the class name where the model has one.
pub fn name_of(cfg: &UNetConfig, label: f32) -> String {
    cfg.class_names
        .as_ref()
        .and_then(|n| n.get(label as usize).filter(|_| label >= 0.0))
        .cloned()
        .unwrap_or_else(|| format!("{label}"))
}
