//! A class-conditional run's classes (../shared/CONDITIONING.md): the model's class embedding set
//! up from `--num-classes` (a new table, or a zero-initialised one added to an unconditional
//! `--init` model so fine-tuning starts from its exact outputs), its class names and null class
//! recorded in config.json, and the data's labels mapped to the model's class ids.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::io::dataset::Labels;
pub use crate::model::config::folder_name;
use crate::model::config::{ClassEmbedding, CLASS_NAMES_KEY, NULL_CLASS_KEY};
use crate::model::{HostTensor, UNetConfig};
use crate::{Error, Result};

/// Class names that come with well-known datasets, by the name `--class-names` takes.
pub const KNOWN_NAMES: &[(&str, &[&str])] = &[
    (
        "fashion-mnist",
        &[
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ],
    ),
    ("mnist", &["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]),
    ("cifar10", &["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]),
];

/// `--class-names`: a known set's name, or the names separated by commas.
pub fn parse_names(text: &str) -> Result<Vec<String>> {
    if let Some((_, names)) = KNOWN_NAMES.iter().find(|(k, _)| k.eq_ignore_ascii_case(text.trim())) {
        return Ok(names.iter().map(|n| n.to_string()).collect());
    }
    let names: Vec<String> = text.split(',').map(|n| n.trim().to_string()).collect();
    if names.iter().any(String::is_empty) {
        return Err(Error::Invalid(format!(
            "--class-names '{text}': an empty name (give names separated by commas, or one of {})",
            KNOWN_NAMES.iter().map(|k| k.0).collect::<Vec<_>>().join(", ")
        )));
    }
    let mut sorted = names.clone();
    sorted.sort();
    if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
        return Err(Error::Invalid(format!("--class-names: '{}' is named twice", w[0])));
    }
    Ok(names)
}

/// The model config's class embedding for a run asked for `num_classes` (None: as the config
/// has it): a config without one gets a table of `num_classes + 1` rows, the last the null
/// class; with `tensors` (an `--init` model's weights) that table starts at zero, so the model
/// starts from the unconditional model's exact outputs (CONDITIONING.md). One that has one must
/// agree with `num_classes`. Returns whether the model is class-conditional.
pub fn set_up_config(
    config: &mut Map<String, Value>,
    tensors: Option<&mut HashMap<String, HostTensor>>,
    num_classes: Option<usize>,
    source: &str,
) -> Result<bool> {
    let parsed = UNetConfig::parse(&Value::Object(config.clone()).to_string(), source)?;
    match (parsed.class_embedding, num_classes) {
        (None, None) => Ok(false),
        (_, Some(0)) => Err(Error::Invalid("--num-classes must be at least 1".into())),
        (Some(ClassEmbedding::Table { rows }), Some(n)) if rows != n && rows != n + 1 => {
            Err(Error::Invalid(format!(
                "--num-classes {n} disagrees with {source}'s num_class_embeds {rows} (n classes take n + 1 rows, the last the null class)"
            )))
        }
        (Some(_), _) => Ok(true),
        (None, Some(n)) => {
            config.insert("num_class_embeds".into(), Value::from(n + 1));
            config.insert(NULL_CLASS_KEY.into(), Value::from(n));
            if let Some(t) = tensors {
                let td = parsed.time_embed_dim();
                t.insert(
                    "class_embedding.weight".into(),
                    HostTensor { shape: vec![n + 1, td], data: vec![0.0; (n + 1) * td] },
                );
            }
            Ok(true)
        }
    }
}

/// A class-conditional run's classes, settled.
#[derive(Clone, Debug, PartialEq)]
pub struct Classes {
    pub names: Vec<String>,
    /// The label the class dropout writes.
    pub null: u32,
    /// Every dataset image's class id in the model's numbering.
    pub ids: Vec<u32>,
}

/// Settles the classes of a class-conditional run from the model's config, the data's labels
/// and `--class-names`, and records the names and the null class in `config` (what `train`
/// writes into the model folder). The data's classes must be the model's: names among the
/// model's where both name them (then mapped by name), else ids within the model's classes.
pub fn settle(
    config: &mut Map<String, Value>,
    labels: Option<&Labels>,
    given_names: Option<Vec<String>>,
    dropout: f64,
    data: &str,
    source: &str,
) -> Result<Classes> {
    let parsed = UNetConfig::parse(&Value::Object(config.clone()).to_string(), source)?;
    let labels = labels.ok_or_else(|| {
        Error::Invalid(format!(
            "{data}: the model is class-conditional but the data has no labels (an IDX label file beside the \
             images, an image folder whose subfolders are the classes, or --labels LABELS.npy)"
        ))
    })?;
    let data_names = labels.names.clone().or(given_names.clone());
    if let (Some(given), Some(from_data)) = (&given_names, &labels.names) {
        if given != from_data {
            return Err(Error::Invalid(format!(
                "--class-names names {} classes, but {} are the subfolders of {data}: the subfolders name them",
                given.len(),
                from_data.len()
            )));
        }
    }
    let names = match (&parsed.class_names, &data_names) {
        (Some(model), _) => model.clone(),
        (None, Some(d)) => d.clone(),
        (None, None) => {
            let n = match parsed.class_embedding {
                Some(ClassEmbedding::Table { rows }) => match parsed.null_class {
                    Some(null) if null + 1 == rows => rows - 1,
                    _ if dropout > 0.0 => rows - 1,
                    _ => rows,
                },
                _ => labels.classes(),
            };
            (0..n).map(|i| i.to_string()).collect()
        }
    };
    // The data's ids in the model's numbering.
    let ids: Vec<u32> = match (&parsed.class_names, &labels.names) {
        (Some(model), Some(from_data)) => {
            let by_folder: HashMap<String, u32> =
                model.iter().enumerate().map(|(i, n)| (folder_name(n), i as u32)).collect();
            // The data may hold some of the model's classes, never one it does not know.
            let unknown: Vec<&str> =
                from_data.iter().filter(|n| !by_folder.contains_key(*n)).map(String::as_str).collect();
            if !unknown.is_empty() {
                return Err(Error::Invalid(format!(
                    "{data}: its classes {} are not the model's ({})",
                    unknown.join(", "),
                    model.iter().map(|n| folder_name(n)).collect::<Vec<_>>().join(", ")
                )));
            }
            let map: Vec<u32> = from_data.iter().map(|n| by_folder[n]).collect();
            labels.ids.iter().map(|&i| map[i as usize]).collect()
        }
        _ => labels.ids.clone(),
    };
    if let Some((i, &bad)) = ids.iter().enumerate().find(|(_, &l)| l as usize >= names.len()) {
        return Err(Error::Invalid(format!(
            "{}: label {bad} (image {i}) is not a class of the model, which has {} ({})",
            labels.source,
            names.len(),
            names.join(", ")
        )));
    }
    let null = match (parsed.null_class, parsed.class_embedding) {
        (Some(n), _) => n,
        (None, Some(ClassEmbedding::Table { rows })) if rows > names.len() => rows - 1,
        (None, Some(ClassEmbedding::Table { rows })) if dropout > 0.0 => {
            return Err(Error::Invalid(format!(
                "{source}: num_class_embeds {rows} leaves no row for the null class that --class-dropout trains \
                 ({} classes need {} rows; or --class-dropout 0)",
                names.len(),
                names.len() + 1
            )))
        }
        (None, Some(ClassEmbedding::Table { rows })) => rows - 1,
        // A "timestep" embedding takes any integer: the next one is "no class".
        _ => names.len(),
    };
    let id2label: Map<String, Value> =
        names.iter().enumerate().map(|(i, n)| (i.to_string(), Value::from(n.clone()))).collect();
    config.insert(CLASS_NAMES_KEY.into(), Value::Object(id2label));
    config.insert(NULL_CLASS_KEY.into(), Value::from(null));
    UNetConfig::parse(&Value::Object(config.clone()).to_string(), source)?;
    Ok(Classes { names, null: null as u32, ids })
}
