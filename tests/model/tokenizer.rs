//! CLIP's tokenizer against transformers' CLIPTokenizer on CLIP's real vocabulary
//! (tools/make_tokenizer_goldens.py): 356 prompts (unicode, emoji, punctuation, numbers, capitals,
//! special-token strings, the empty prompt, prompts past 77 tokens) through SD 1.x's folder (pads
//! with <|endoftext|>) and SD 2.x's (pads with "!", id 0), as StableDiffusionPipeline asks.

use std::io::Read;
use std::path::{Path, PathBuf};

use wgpu_diffusion::model::clip::ClipTokenizer;

use crate::scratch;

fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/tokenizer").join(name)
}

fn gunzip(from: &Path, to: &Path) {
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(from).unwrap()).read_to_string(&mut text).unwrap();
    std::fs::write(to, text).unwrap();
}

/// A tokenizer folder as a pipeline holds it: the vocabulary, and `variant`'s json files.
fn folder(variant: &str) -> ClipTokenizer {
    let dir = scratch(&format!("tokenizer-{variant}"));
    gunzip(&golden("vocab.json.gz"), &dir.join("vocab.json"));
    gunzip(&golden("merges.txt.gz"), &dir.join("merges.txt"));
    for f in ["special_tokens_map.json", "tokenizer_config.json"] {
        std::fs::copy(golden(variant).join(f), dir.join(f)).unwrap();
    }
    ClipTokenizer::open(&dir).unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

#[test]
fn clip_tokenizer_gives_transformers_ids_on_clips_vocabulary() {
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(golden("prompts.json")).unwrap()).unwrap();
    let cases = cases["cases"].as_array().unwrap();
    assert!(cases.len() >= 200);
    for (variant, pieces, truncated) in
        [("sd1", "pieces", "truncated"), ("sd2", "pieces_sd2", "truncated_sd2")]
    {
        let t = folder(variant);
        assert_eq!((t.bos, t.eos), (49406, 49407));
        assert_eq!(t.pad, if variant == "sd1" { 49407 } else { 0 });
        let mut wrong = vec![];
        for c in cases {
            let prompt = c["prompt"].as_str().unwrap();
            let e = t.encode(prompt);
            let want_truncated = c[truncated].as_str().map(String::from);
            if t.tokenize(prompt) != ids(&c[pieces])
                || e.ids != ids(&c[variant])
                || e.truncated != want_truncated
            {
                wrong.push(format!(
                    "{prompt:?}: got {:?} (cut {:?}), want {:?} (cut {want_truncated:?})",
                    t.tokenize(prompt),
                    e.truncated,
                    ids(&c[pieces])
                ));
            }
        }
        assert!(
            wrong.is_empty(),
            "{variant}: {} of {} prompts differ:\n{}",
            wrong.len(),
            cases.len(),
            wrong.join("\n")
        );
    }
}
