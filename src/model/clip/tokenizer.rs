//! CLIP's tokenizer as transformers' CLIPTokenizer runs it (the `tokenizers` backend diffusers'
//! Stable Diffusion pipelines call): the folder's `vocab.json` and `merges.txt` (byte-level BPE
//! with `</w>` ending each word), text normalised (NFC, whitespace runs to one space, lower
//! case), special-token strings split off first, then 77 positions: start, at most 75 tokens,
//! end, and the folder's pad token.

use std::collections::HashMap;
use std::path::Path;

use regex::Regex;
use unicode_normalization::UnicodeNormalization;

use crate::{Error, Result};

/// Positions a prompt takes (CLIP's context length), start and end tokens included.
pub const MAX_LENGTH: usize = 77;

const BOS: &str = "<|startoftext|>";
const EOS: &str = "<|endoftext|>";
const END_OF_WORD: &str = "</w>";

/// A prompt's tokens: what the text encoder takes, and what was cut to fit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoding {
    /// `MAX_LENGTH` ids: start, the prompt's first tokens, end, pads.
    pub ids: Vec<u32>,
    /// The words past the 77 positions, decoded as diffusers' warning shows them; None when the
    /// prompt fits.
    pub truncated: Option<String>,
}

/// A special token as transformers' added vocabulary matches it: a `normalized` one in the
/// normalised text (any case, as the text is lower-cased by then), another in the raw text,
/// exactly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Special {
    pub text: String,
    pub id: u32,
    pub normalized: bool,
}

pub struct ClipTokenizer {
    vocab: HashMap<String, u32>,
    /// Token text by id, for decoding.
    tokens: Vec<String>,
    /// A merge's rank (its line) by its pair.
    merges: HashMap<(String, String), usize>,
    /// GPT-2's bytes_to_unicode: the printable stand-in for each byte.
    byte_chars: [char; 256],
    char_bytes: HashMap<char, u8>,
    pieces: Regex,
    /// GPT-2's split, which transformers' byte-level step runs again on each piece (it matters
    /// for the special-token alternatives: "<|endoftext|>" becomes "<|", "endoftext", "|>").
    byte_level_pieces: Regex,
    /// Special-token strings cut out of the text before BPE, longest first.
    specials: Vec<Special>,
    pub bos: u32,
    pub eos: u32,
    pub pad: u32,
    pub max_length: usize,
}

/// GPT-2's bytes_to_unicode: printable bytes stand for themselves, the others take code points
/// from 256 up, in byte order.
fn bytes_to_unicode() -> [char; 256] {
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut out = ['\0'; 256];
    let mut next = 256;
    for b in 0..256u32 {
        out[b as usize] = if printable(b) {
            char::from_u32(b).expect("a Latin-1 code point") // ok: below 256
        } else {
            next += 1;
            char::from_u32(next - 1).expect("a code point below 512") // ok: below 512
        };
    }
    out
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.display().to_string(), source })
}

/// A special token in a tokenizer json: a string (an added token matched exactly), or an
/// AddedToken object with "content" and "normalized" (false where absent, as for any special
/// token).
fn token_entry(v: &serde_json::Value) -> Option<(String, bool)> {
    match v {
        serde_json::Value::String(s) => Some((s.clone(), false)),
        serde_json::Value::Object(m) => Some((
            m.get("content")?.as_str()?.to_string(),
            m.get("normalized").and_then(|n| n.as_bool()).unwrap_or(false),
        )),
        _ => None,
    }
}

impl ClipTokenizer {
    /// The tokenizer of a pipeline folder's `tokenizer/` (vocab.json, merges.txt, and the pad
    /// token from special_tokens_map.json or tokenizer_config.json; `<|endoftext|>` if neither
    /// names one).
    pub fn open(dir: &Path) -> Result<Self> {
        let shown = dir.display();
        for f in ["vocab.json", "merges.txt"] {
            if !dir.join(f).is_file() {
                return Err(Error::Invalid(format!(
                    "{shown}: no {f}: a CLIP tokenizer folder holds vocab.json and merges.txt"
                )));
            }
        }
        let vocab_text = read(&dir.join("vocab.json"))?;
        let vocab: HashMap<String, u32> = serde_json::from_str(&vocab_text)
            .map_err(|e| Error::Invalid(format!("{shown}/vocab.json: not a token-to-id map: {e}")))?;
        let merges = read(&dir.join("merges.txt"))?;
        let mut config = serde_json::Map::new();
        // tokenizer_config.json first, special_tokens_map.json over it (transformers' order).
        for f in ["tokenizer_config.json", "special_tokens_map.json"] {
            let path = dir.join(f);
            if path.is_file() {
                match serde_json::from_str::<serde_json::Value>(&read(&path)?) {
                    Ok(serde_json::Value::Object(m)) => config.extend(m),
                    _ => return Err(Error::Invalid(format!("{}: not a JSON object", path.display()))),
                }
            }
        }
        // transformers registers them in this order; a later one's matching rule wins.
        let entry = |key: &str, default: &str| {
            config.get(key).and_then(token_entry).unwrap_or((default.to_string(), false))
        };
        let tokens = [
            entry("bos_token", BOS),
            entry("eos_token", EOS),
            entry("unk_token", EOS),
            entry("pad_token", EOS),
        ];
        let max_length = config
            .get("model_max_length")
            .and_then(|v| v.as_u64())
            .filter(|&n| n as usize <= MAX_LENGTH && n >= 2)
            .map_or(MAX_LENGTH, |n| n as usize);
        Self::new(vocab, &merges, &tokens, max_length, &shown.to_string())
    }

    /// A tokenizer from a vocabulary and merges.txt's text, with the start, end, unknown and pad
    /// tokens given by their text and whether they are matched in the normalised text.
    pub fn new(
        vocab: HashMap<String, u32>,
        merges_text: &str,
        special: &[(String, bool); 4],
        max_length: usize,
        source: &str,
    ) -> Result<Self> {
        let mut merges = HashMap::new();
        // The first line is "#version: ..."; each other line is a pair, ranked by its order.
        for (rank, line) in merges_text.lines().filter(|l| !l.starts_with("#version")).enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let (a, b) = line
                .split_once(' ')
                .ok_or_else(|| Error::Invalid(format!("{source}/merges.txt: '{line}' is not a pair")))?;
            merges.entry((a.to_string(), b.to_string())).or_insert(rank);
        }
        let id = |t: &str| {
            vocab.get(t).copied().ok_or_else(|| {
                Error::Invalid(format!("{source}: the special token '{t}' is not in vocab.json"))
            })
        };
        let [bos, eos, _, pad] = special;
        let (bos_id, eos_id, pad_id) = (id(&bos.0)?, id(&eos.0)?, id(&pad.0)?);
        let mut tokens = vec![String::new(); vocab.values().map(|&i| i as usize + 1).max().unwrap_or(0)];
        for (t, &i) in &vocab {
            tokens[i as usize] = t.clone();
        }
        let byte_chars = bytes_to_unicode();
        let char_bytes = byte_chars.iter().enumerate().map(|(b, &c)| (c, b as u8)).collect();
        // CLIP's pattern (transformers' tokenization_clip.py), case-sensitive on the lower-cased
        // text as transformers runs it (OpenAI's case-insensitive one drops U+0345). Its
        // special-token alternatives keep an unmatched one (SD 1.x's "<|ENDOFTEXT|>") one piece.
        let pieces = Regex::new(
            r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+",
        )
        .expect("CLIP's pattern"); // ok: a constant pattern
                                   // GPT-2's pattern without its whitespace alternatives: CLIP's pieces hold no whitespace.
        let byte_level_pieces =
            Regex::new(r"'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}+|[^\s\p{L}\p{N}]+").expect("GPT-2's pattern"); // ok: a constant pattern
        let mut specials: Vec<Special> = vec![];
        for (text, normalized) in special {
            let id = id(text)?;
            specials.retain(|s| &s.text != text);
            specials.push(Special { text: text.clone(), id, normalized: *normalized });
        }
        // Longest first, so one special token's text inside another's never wins.
        specials.sort_by_key(|s| std::cmp::Reverse(s.text.len()));
        Ok(Self {
            vocab,
            tokens,
            merges,
            byte_chars,
            char_bytes,
            pieces,
            byte_level_pieces,
            specials,
            bos: bos_id,
            eos: eos_id,
            pad: pad_id,
            max_length,
        })
    }

    /// transformers' normaliser for CLIP: NFC, each run of whitespace one space, lower case.
    pub fn normalize(text: &str) -> String {
        let nfc: String = text.nfc().collect();
        let mut out = String::with_capacity(nfc.len());
        let mut in_space = false;
        for c in nfc.chars() {
            if c.is_whitespace() {
                if !in_space {
                    out.push(' ');
                }
                in_space = true;
            } else {
                out.push(c);
                in_space = false;
            }
        }
        // Char by char, as the tokenizers library lowercases: a final capital sigma is σ, not
        // the ς a whole-string lowering gives.
        out.chars().flat_map(char::to_lowercase).collect()
    }

    /// The ids of normalised text without special tokens: cut into CLIP's pieces, each a word of
    /// byte characters merged by BPE.
    fn encode_text(&self, text: &str, out: &mut Vec<u32>) {
        let words = self.pieces.find_iter(text).flat_map(|m| self.byte_level_pieces.find_iter(m.as_str()));
        for m in words {
            let mut word: Vec<String> =
                m.as_str().bytes().map(|b| self.byte_chars[b as usize].to_string()).collect();
            if let Some(last) = word.last_mut() {
                last.push_str(END_OF_WORD);
            }
            self.merge(&mut word);
            for w in &word {
                // Every byte character and its word-final form is in CLIP's vocabulary; a
                // vocabulary without one gives the end-of-text token, as the unknown token.
                out.push(self.vocab.get(w).copied().unwrap_or(self.eos));
            }
        }
    }

    /// BPE: merges the adjacent pair of the lowest rank, everywhere it occurs, until no pair
    /// has a rank.
    fn merge(&self, word: &mut Vec<String>) {
        while word.len() > 1 {
            let best = word
                .windows(2)
                .filter_map(|p| self.merges.get(&(p[0].clone(), p[1].clone())).map(|&r| (r, p)))
                .min_by_key(|(r, _)| *r)
                .map(|(_, p)| (p[0].clone(), p[1].clone()));
            let Some((a, b)) = best else { break };
            let mut merged = Vec::with_capacity(word.len());
            let mut i = 0;
            while i < word.len() {
                if i + 1 < word.len() && word[i] == a && word[i + 1] == b {
                    merged.push(format!("{a}{b}"));
                    i += 2;
                } else {
                    merged.push(std::mem::take(&mut word[i]));
                    i += 1;
                }
            }
            *word = merged;
        }
    }

    /// `text` cut at the special tokens of one kind: the pieces between, in order, and the ids.
    fn split_specials<'t>(&self, text: &'t str, normalized: bool) -> Vec<std::result::Result<&'t str, u32>> {
        let mut out = vec![];
        let mut rest = text;
        loop {
            let next = self
                .specials
                .iter()
                .filter(|s| s.normalized == normalized)
                .filter_map(|s| rest.find(s.text.as_str()).map(|at| (at, s)))
                .min_by_key(|(at, s)| (*at, std::cmp::Reverse(s.text.len())));
            match next {
                Some((at, s)) => {
                    out.push(Ok(&rest[..at]));
                    out.push(Err(s.id));
                    rest = &rest[at + s.text.len()..];
                }
                None => {
                    out.push(Ok(rest));
                    return out;
                }
            }
        }
    }

    /// The ids of `text` between the start and end tokens, nothing cut: special tokens matched
    /// in the raw text first, then the rest normalised and its normalised special tokens
    /// matched, then BPE (transformers' added vocabulary, then its model).
    pub fn tokenize(&self, text: &str) -> Vec<u32> {
        let mut out = vec![self.bos];
        for raw in self.split_specials(text, false) {
            match raw {
                Err(id) => out.push(id),
                Ok(piece) => {
                    let normal = Self::normalize(piece);
                    for part in self.split_specials(&normal, true) {
                        match part {
                            Err(id) => out.push(id),
                            Ok(t) => self.encode_text(t, &mut out),
                        }
                    }
                }
            }
        }
        out.push(self.eos);
        out
    }

    /// The prompt as the pipeline encodes it: `max_length` ids, cut and padded, with the words
    /// that did not fit.
    pub fn encode(&self, prompt: &str) -> Encoding {
        let all = self.tokenize(prompt);
        let keep = self.max_length - 2;
        let inner = &all[1..all.len() - 1];
        let truncated = (inner.len() > keep).then(|| self.decode(&inner[keep..]));
        let mut ids = Vec::with_capacity(self.max_length);
        ids.push(self.bos);
        ids.extend_from_slice(&inner[..inner.len().min(keep)]);
        ids.push(self.eos);
        ids.resize(self.max_length, self.pad);
        Encoding { ids, truncated }
    }

    /// Text of `ids` as transformers decodes CLIP's: the tokens joined, their byte characters
    /// back to UTF-8 (invalid sequences replaced), each `</w>` a space, trimmed.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = vec![];
        for t in ids.iter().filter_map(|&id| self.tokens.get(id as usize)) {
            for c in t.chars() {
                match self.char_bytes.get(&c) {
                    Some(&b) => bytes.push(b),
                    None => bytes.extend_from_slice(c.to_string().as_bytes()),
                }
            }
        }
        String::from_utf8_lossy(&bytes).replace(END_OF_WORD, " ").trim().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A vocabulary of every byte character, alone and word-final, and the given merges.
    fn tiny(merges: &[(&str, &str)], pad: &str) -> ClipTokenizer {
        let chars = bytes_to_unicode();
        let mut vocab = HashMap::new();
        for c in chars {
            vocab.insert(c.to_string(), vocab.len() as u32);
        }
        for c in chars {
            vocab.insert(format!("{c}{END_OF_WORD}"), vocab.len() as u32);
        }
        let mut text = "#version: 0.2\n".to_string();
        for (a, b) in merges {
            vocab.insert(format!("{a}{b}"), vocab.len() as u32);
            text.push_str(&format!("{a} {b}\n"));
        }
        for s in [BOS, EOS] {
            vocab.insert(s.to_string(), vocab.len() as u32);
        }
        let special = |t: &str, n| (t.to_string(), n);
        let tokens = [special(BOS, true), special(EOS, true), special(EOS, true), special(pad, false)];
        ClipTokenizer::new(vocab, &text, &tokens, MAX_LENGTH, "tiny").unwrap()
    }

    #[test]
    fn byte_characters_are_gpt2s() {
        let c = bytes_to_unicode();
        assert_eq!(c[b'a' as usize], 'a');
        assert_eq!(c[b' ' as usize], 'Ġ');
        assert_eq!(c[0], 'Ā');
        assert_eq!(c[173], '\u{143}');
    }

    #[test]
    fn merges_go_by_rank_and_words_end_in_a_suffix() {
        let t = tiny(&[("l", "o"), ("lo", "w</w>"), ("e", "r</w>")], EOS);
        let id = |s: &str| t.vocab[s];
        assert_eq!(
            t.tokenize("Low  lower"),
            vec![t.bos, id("low</w>"), id("lo"), id("w"), id("er</w>"), t.eos]
        );
        let e = t.encode("low");
        assert_eq!(e.ids.len(), MAX_LENGTH);
        assert_eq!(&e.ids[..4], &[t.bos, id("low</w>"), t.eos, t.eos]);
        assert_eq!(e.truncated, None);
    }

    #[test]
    fn long_prompts_are_cut_and_the_rest_is_reported() {
        let t = tiny(&[], "!");
        let prompt: String = (0..80).map(|i| format!("{} ", i % 10)).collect();
        let e = t.encode(&prompt);
        assert_eq!(e.ids[MAX_LENGTH - 1], t.eos, "the end token survives the cut");
        assert_eq!(e.truncated.as_deref(), Some("5 6 7 8 9"));
        assert_eq!(t.encode("").ids[2..], [t.pad; MAX_LENGTH - 2]);
        assert_eq!(t.pad, t.vocab["!"]);
    }
}
