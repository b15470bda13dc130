#!/usr/bin/env python3
"""Write CLIP's BPE vocabulary as a Hugging Face tokenizer folder and transformers' encodings of
tricky prompts: the goldens of the engine's CLIP tokenizer.

    .venv/bin/pip install open_clip_torch ftfy wcwidth --no-deps
    .venv/bin/python tools/make_tokenizer_goldens.py

The vocabulary is CLIP's own: `bpe_simple_vocab_16e6.txt.gz` from the `open_clip_torch` package,
turned into `vocab.json` and `merges.txt` exactly as the published `openai/clip-vit-large-patch14`
and Stable Diffusion `tokenizer/` folders hold it (49408 entries: the 256 byte characters, the same
with `</w>`, the 48894 merges joined, then `<|startoftext|>` and `<|endoftext|>`). Writes to
tests/golden/tokenizer/:

- `vocab.json.gz`, `merges.txt.gz`: gzipped (the repo stays small; the test gunzips them into a
  scratch folder beside the small json files of one variant);
- `sd1/`, `sd2/`: `special_tokens_map.json` and `tokenizer_config.json` as Stable Diffusion 1.5
  (pad `<|endoftext|>`, 49407) and 2.1 (pad `!`, id 0) publish them;
- `prompts.json`: for each prompt, what diffusers' StableDiffusionPipeline.encode_prompt asks of
  the tokenizer (`tokenizer(prompt, padding="max_length", max_length=77, truncation=True)`) with
  each variant, the untruncated ids, and the text encode_prompt warns was truncated. Every golden
  is transformers' CLIPTokenizer loaded from the folders rebuilt from the files written here, and
  every case is checked again through encode_prompt itself.

Each case also records whether OpenAI CLIP's own tokenizer (open_clip's SimpleTokenizer: ftfy,
html unescape, whitespace clean, lower) gives other ids, and which of its steps explain it. The
engine follows transformers (what diffusers runs), so transformers' ids are the goldens.
"""

import gzip
import html
import importlib.metadata
import importlib.util
import itertools
import json
import logging
import random
import shutil
import tempfile
import types
import unicodedata
from pathlib import Path

import ftfy
import regex
import torch
import transformers
from transformers import CLIPTokenizer

OUT = Path(__file__).resolve().parent.parent / "tests" / "golden" / "tokenizer"
MAX_LENGTH = 77
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
N_MERGES = 49152 - 256 - 2  # CLIP's SimpleTokenizer: merges[1:49152-256-2+1]


def open_clip_tokenizer_module() -> types.ModuleType:
    """open_clip's tokenizer module, loaded alone: the package's __init__ imports torchvision, which
    the tokenizer does not need."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None:
        raise SystemExit("open_clip_torch is missing: .venv/bin/pip install open_clip_torch ftfy wcwidth --no-deps")
    path = Path(spec.submodule_search_locations[0]) / "tokenizer.py"
    mod_spec = importlib.util.spec_from_file_location("open_clip_tokenizer", path)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return module


OC = open_clip_tokenizer_module()


# ---------------------------------------------------------------------------------------------
# The tokenizer folder


def build_vocab() -> tuple[dict[str, int], list[str]]:
    """vocab.json's mapping and merges.txt's lines, as CLIP's SimpleTokenizer builds them."""
    lines = gzip.open(OC.default_bpe()).read().decode("utf-8").split("\n")
    merges = lines[1:N_MERGES + 1]
    assert len(merges) == 48894 and all(len(m.split(" ")) == 2 for m in merges)
    byte_chars = list(OC.bytes_to_unicode().values())
    vocab = byte_chars + [c + "</w>" for c in byte_chars] + [m.replace(" ", "") for m in merges] + [BOS, EOS]
    encoder = {token: i for i, token in enumerate(vocab)}
    assert len(encoder) == len(vocab) == 49408, "CLIP's vocabulary has no duplicates"
    return encoder, merges


def added_token(content: str, typed: bool) -> dict:
    # The old (transformers 4.2x) serialisation the published folders still carry.
    token = {"content": content, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}
    return {"__type": "AddedToken", **token} if typed else token


def special_tokens_map(pad: str) -> dict:
    # transformers 5 reads `normalized` from this file, and a special token given as a plain string
    # (SD 1.5's pad `<|endoftext|>`) is added un-normalized, which then also holds for the eos.
    return {"bos_token": added_token(BOS, False), "eos_token": added_token(EOS, False), "pad_token": pad,
            "unk_token": added_token(EOS, False)}


def tokenizer_config(pad: str, name_or_path: str) -> dict:
    return {"add_prefix_space": False, "bos_token": added_token(BOS, True), "do_lower_case": True,
            "eos_token": added_token(EOS, True), "errors": "replace", "model_max_length": MAX_LENGTH,
            "name_or_path": name_or_path, "pad_token": pad, "special_tokens_map_file": "./special_tokens_map.json",
            "tokenizer_class": "CLIPTokenizer", "unk_token": added_token(EOS, True)}


# runwayml/stable-diffusion-v1-5 and stabilityai/stable-diffusion-2-1 tokenizer/ folders.
VARIANTS = {
    "sd1": dict(pad=EOS, pad_id=49407, name_or_path="openai/clip-vit-large-patch14"),
    "sd2": dict(pad="!", pad_id=0, name_or_path="hf-models/stable-diffusion-v2-768x768/tokenizer"),
}


def write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n")


def write_gzip(path: Path, data: bytes) -> None:
    # mtime 0 and no file name: the same bytes on every run.
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as f:
        f.write(data)


def write_folder_goldens(encoder: dict[str, int], merges: list[str]) -> None:
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    write_gzip(OUT / "vocab.json.gz", json.dumps(encoder, ensure_ascii=False).encode("utf-8"))
    write_gzip(OUT / "merges.txt.gz", ("#version: 0.2\n" + "\n".join(merges) + "\n").encode("utf-8"))
    for name, v in VARIANTS.items():
        (OUT / name).mkdir()
        write_json(OUT / name / "special_tokens_map.json", special_tokens_map(v["pad"]))
        write_json(OUT / name / "tokenizer_config.json", tokenizer_config(v["pad"], v["name_or_path"]))


def load_variant(scratch: Path, name: str) -> CLIPTokenizer:
    """transformers' CLIPTokenizer loaded from the committed files, as the Rust test will see them."""
    folder = scratch / name
    folder.mkdir()
    for f in ("vocab.json", "merges.txt"):
        (folder / f).write_bytes(gzip.decompress((OUT / (f + ".gz")).read_bytes()))
    for f in ("special_tokens_map.json", "tokenizer_config.json"):
        shutil.copy(OUT / name / f, folder / f)
    return CLIPTokenizer.from_pretrained(folder)


# ---------------------------------------------------------------------------------------------
# OpenAI CLIP's tokenizer, with switches that swap one of its cleaning steps for transformers'


class ClipReference(OC.SimpleTokenizer):
    """openai/CLIP's simple_tokenizer as open_clip copies it, with OpenAI's special-token names
    (open_clip renamed them `<start_of_text>`/`<end_of_text>`; CLIP's regex and cache use OpenAI's)."""

    SWITCHES = ("ftfy", "html", "whitespace", "lower", "ignorecase")

    def __init__(self):
        super().__init__()
        for old, new in (("<start_of_text>", BOS), ("<end_of_text>", EOS)):
            i = self.encoder.pop(old)
            self.encoder[new] = i
            self.decoder[i] = new
        self.cache = {BOS: BOS, EOS: EOS}
        pattern = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
        self.pat = regex.compile(pattern, regex.IGNORECASE)
        # Without IGNORECASE, as tokenizers splits: with it, a mark whose case fold is a letter (U+0345
        # folds to iota) matches neither [\p{L}]+ nor [^\s\p{L}\p{N}]+ and is dropped.
        self.pat_exact_case = regex.compile(pattern)

    def clean(self, text: str, switched: frozenset = frozenset()) -> str:
        # CLIP: whitespace_clean(basic_clean(text)).lower(); each switch does transformers' step instead.
        text = unicodedata.normalize("NFC", text) if "ftfy" in switched else ftfy.fix_text(text)
        if "html" not in switched:
            text = html.unescape(html.unescape(text))
        text = text.strip()
        # str.split() also splits on U+001C..U+001F, which are not Unicode White_Space.
        text = " ".join(regex.split(r"\s+", text) if "whitespace" in switched else text.split()).strip()
        # tokenizers lowercases char by char: no final sigma.
        return "".join(c.lower() for c in text) if "lower" in switched else text.lower()

    def pieces(self, text: str, switched: frozenset = frozenset()) -> list[int]:
        ids = [self.sot_token_id]
        pat = self.pat_exact_case if "ignorecase" in switched else self.pat
        for token in regex.findall(pat, self.clean(text, switched)):
            token = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
            ids.extend(self.encoder[t] for t in self.bpe(token).split(" "))
        return ids + [self.eot_token_id]

    def why(self, text: str, target: list[int]) -> list[str]:
        """The fewest cleaning steps that, done transformers' way, give `target`."""
        for n in range(1, len(self.SWITCHES) + 1):
            for combo in itertools.combinations(self.SWITCHES, n):
                if self.pieces(text, frozenset(combo)) == target:
                    return list(combo)
        return ["special tokens" if regex.search(r"<\|(startoftext|endoftext)\|>", text, regex.I) else "other"]


# ---------------------------------------------------------------------------------------------
# Prompts


SD_PROMPTS = [
    "a photo of an astronaut riding a horse on mars",
    "A fantasy landscape, trending on artstation",
    "portrait of a young woman, oil painting, by Greg Rutkowski and Alphonse Mucha, highly detailed, 8k",
    "a cute corgi wearing sunglasses, digital art",
    "cyberpunk city at night, neon lights, rain, reflections, cinematic lighting, octane render",
    "An astronaut lounging in a tropical resort in space, vaporwave",
    "a bowl of fruit, still life, studio lighting",
    "photograph of a red fox in the snow, national geographic, 35mm",
    "isometric view of a tiny medieval village, low poly, blender",
    "a watercolor painting of a lighthouse at sunset",
    "ultra realistic close up portrait ((beautiful pale cyberpunk female with heavy black eyeliner))",
    "Mount Fuji, ukiyo-e woodblock print, Hokusai",
    "a cat", "cat", "Cat", "CAT", "cAt", "dog ", " dog",
]

CASE_PROMPTS = [
    "A Photo Of An ASTRONAUT Riding A HORSE", "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG", "iPhone McDonald's eBay",
    "HDR UHD 4K 8K DSLR",
]

PUNCTUATION = [
    "wow!!!", "wait...", "really?!", "what?!?!", "hello, world.", "a,b,c", "a, b, c", "--", "—", "...", "!?",
    "a;b:c", "(((", ")))", "~~~", "***masterpiece***", "#hashtag @user", "50% off", "$100 & €20", "a/b\\c",
    "`code`", "\"quoted\"", "'single'", "<html>", "{}[]()<>", "=^.^=", ":-) :D ;)", "o_O", "T_T", "^_^",
    "!@#$%^&*()_+-=[]{}|;':\",./<>?" * 3,
]

NUMBERS = [
    "1024x768", "3.14", "2025", "1,000,000", "-5", "1e10", "16:9", "8k uhd", "v1.5", "3d render", "2nd place",
    "1st", "0.5", "007", "12345678901234567890", "4K", "version 2.1", "1990s", "'90s", "90's", "#1", "x2",
]

CONTRACTIONS = [
    "it's", "can't", "we're", "they've", "I'm", "you'll", "he'd", "IT'S", "WE'RE", "THEY'VE", "I'M", "YOU'LL",
    "HE'D", "DON'T", "It's", "it'S", "y'all'd've", "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL",
    "the dog's bone", "rock 'n' roll", "O'Neil", "ma'am", "'tis", "''", "'", "it''s", "it 's", "'hello'",
    "rock'n'roll", "don't stop believin'", "'sup", "'til", "'dog", "s'mores", "it’s", "don’t", "l'été",
]

UNICODE = [
    "café", "crème brûlée", "straße", "STRASSE", "ẞ", "niño", "señor", "Ñandú", "Zoë", "naïve résumé",
    "Ελληνικά", "ΟΔΟΣ", "ΟΔΥΣΣΕΥΣ", "Σ", "ΣΑΣ σας", "Москва", "ПРИВЕТ МИР", "北京", "東京タワー", "서울의 밤",
    "中文提示词，高质量", "مرحبا بالعالم", "नमस्ते दुनिया", "हिन्दी", "ภาษาไทย", "עברית", "İstanbul", "ıi",
    "ǅemal", "ﬁne ﬂower", "ＡＢＣ ｆｕｌｌｗｉｄｔｈ", "𝐁𝐨𝐥𝐝", "½ ¾ ² ³", "Ⅻ", "٣٤٥", "१२३", "Kelvin \u212a",
    "\u212bngstr\u00f6m", "µ", "ᾳ ᾼ", "\u0345", "a\u0345b", "ø Ø å Å æ Æ", "ğ ş ç", "ą ę ł ż", "Việt Nam", "日本語のテキスト",
]

NFC_NFD = ["café", "Ñandú", "crème brûlée", "가나다", "がぎぐ", "Å", "ṩ", "e\u0301\u0301"]

EMOJI = [
    "🦄", "a 🐱 cat", "🔥🔥🔥", "❤️", "❤", "👍🏽", "👍🏿 thumbs", "👨‍👩‍👧‍👦", "🧑‍🚀 astronaut", "🏳️‍🌈",
    "🇺🇸", "🇯🇵🇫🇷", "🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f", "1️⃣", "#️⃣", "☺", "😀😃😄",
    "emoji🙂inside", "✨sparkles✨", "™ © ®",
]

WHITESPACE = [
    "a  b", "a\tb", "a\nb", "a\r\nb", "  leading", "trailing  ", "  both  ", "\n\nnewlines\n\n", "\t\ttabs",
    "a \t\n b", "a\u00a0b", "a\u3000b", "a\u2028b", "a\u2009b", "a\u202fb", "a\x0bb\x0cc", "multiple    spaces   here",
]

EMPTY = ["", " ", "     ", "\t", "\n", " \t \n "]

SPECIAL_STRINGS = [
    BOS, EOS, f"a cat {EOS} a dog", f"{BOS}hello{EOS}", f"abc{EOS}def", f"{EOS}{EOS}", f"{BOS} {BOS}",
    "<|ENDOFTEXT|>", "<|StartOfText|>", "<|endoftext|", "|endoftext|>", "<endoftext>", "< |endoftext| >",
    "<|startoftext|><|endoftext|>!", "<|endoftext|>!!!",
]

BANGS = [
    "!", "!!", "!!!", "!!!!", "!" * 10, "!" * 80, "hello!", "hello !", "!hello", "a!b!c", "!?!", "?!", "！",
    "wow!!! amazing!!!", "masterpiece!!, best quality!",
]

LONG_WORDS = [
    "supercalifragilisticexpialidocious", "pneumonoultramicroscopicsilicovolcanoconiosis", "a" * 200,
    "ab" * 60, "xyzzyplughfrobnicatewibblewobble" * 3, "Llanfairpwllgwyngyllgogerychwyrndrobwllllantysiliogogogoch",
    "antidisestablishmentarianism" * 2, "z" * 400,
]

URLS = [
    "https://example.com/path/to/image.png?size=1024&fmt=webp#frag", "www.artstation.com/artwork/abc123",
    "http://localhost:8080", "user@example.com", "C:\\Users\\me\\prompt.txt", "/usr/local/bin",
]

WEIGHTING = [
    "(masterpiece:1.2), [blurry]", "((best quality)), (((ultra detailed)))", "{{{high res}}}",
    "(worst quality:1.4), (low quality:1.4), lowres", "a cat AND a dog", "castle BREAK sky",
    "<lora:add_detail:0.8> portrait", "[cat:dog:0.5]", "(red:0.5|blue:1.5)", "embedding:EasyNegative",
    "**bold** _italic_ `mono` # Title\n- item", "[link](http://x.y)", "score_9, score_8_up, rating_safe",
]

CONTROL = [
    "a\x00b", "bell\x07", "esc\x1b[31mred\x1b[0m", "del\x7f", "a\x1cb\x1dc\x1ed\x1fe", "zero\u200bwidth",
    "bom\ufeffhere", "nel\x85line", "soft\u00adhyphen", "rtl\u200fmark", "a\u200cb\u200dc", "\x01\x02\x03",
    "mongolian\u180evowel", "cafÃ© mojibake", "&amp; &lt;3 &#39; &copy", "&amp;amp;",
]


class Lengths:
    """Prompts with an exact number of tokens between bos and eos, by transformers' count."""

    BASE = ("masterpiece, best quality, a highly detailed digital painting of an ancient castle on a cliff above "
            "a stormy sea, dramatic lighting, volumetric clouds, golden hour, by greg rutkowski and thomas kinkade, "
            "trending on artstation, 8k resolution, sharp focus, intricate details, concept art, matte painting, "
            "epic composition, wide angle lens, cinematic color grading, ") * 6

    def __init__(self, tok: CLIPTokenizer):
        self.tok = tok

    def count(self, text: str) -> int:
        return len(self.tok(text).input_ids) - 2

    def exact(self, n: int, tail: str = "") -> str:
        """Words of BASE, then single-token fillers, so that `... + tail` has n tokens."""
        text = ""
        for word in self.BASE.split(" "):
            if self.count((text + " " + word).strip() + tail) > n:
                break
            text = (text + " " + word).strip()
        while self.count(text + " cat" + tail) <= n:
            text += " cat"
        assert self.count(text + tail) == n, (n, tail)
        return text + tail

    def cases(self) -> list[str]:
        out = [self.exact(n) for n in (1, 10, 74, 75, 76, 77, 78, 100, 150)]
        # A word split by the cut: its first piece is token 75, the rest is truncated.
        out.append(self.exact(74) + " supercalifragilisticexpialidocious")
        # A character's bytes split by the cut: the truncated text decodes to U+FFFD.
        out.append(self.exact(74) + " 🦄🦄🦄")
        out.append(self.exact(74) + " 𝐁𝐨𝐥𝐝")
        # SD 2's pad token at the cut, and a literal eos at and past it.
        out += [self.exact(75) + "!!!", self.exact(74) + "!!!", self.exact(75) + " " + EOS + " dog",
                self.exact(74) + EOS, self.exact(76) + "!"]
        # Uppercase and unicode in a long prompt.
        out += [self.exact(90).upper(), (self.exact(40) + " Ελληνικά Москва 北京 ") * 3]
        return out


def random_prompts(seed: int, count: int) -> list[str]:
    """Seeded mixes of the categories above, with random separators."""
    rng = random.Random(seed)
    fragments = (SD_PROMPTS + CASE_PROMPTS + PUNCTUATION + NUMBERS + CONTRACTIONS + UNICODE + EMOJI + BANGS
                 + WEIGHTING + CONTROL + [BOS, EOS, "<|ENDOFTEXT|>", "&amp;", "’", "ΟΣ"])
    separators = [" ", " ", " ", ", ", "", "  ", "\t", "\n", "! ", "'"]
    out = []
    for i in range(count):
        n = rng.randint(1, 8) if i < count - 3 else rng.randint(25, 40)  # the last few run past 77 tokens
        parts = [rng.choice(fragments) for _ in range(n)]
        if rng.random() < 0.3:
            parts = [p.upper() if rng.random() < 0.5 else p.title() for p in parts]
        text = parts[0]
        for p in parts[1:]:
            text += rng.choice(separators) + p
        out.append(text)
    # Random code points from the scripts above, a few at a time.
    ranges = [(0x20, 0x7e), (0xa0, 0x17f), (0x370, 0x3ff), (0x400, 0x4ff), (0x600, 0x6ff), (0x900, 0x97f),
              (0x3040, 0x30ff), (0x4e00, 0x4e80), (0xac00, 0xac80), (0x1f300, 0x1f64f), (0x300, 0x36f)]
    for _ in range(12):
        chars = []
        for _ in range(rng.randint(1, 12)):
            lo, hi = rng.choice(ranges)
            chars.append(chr(rng.randint(lo, hi)))
        out.append("".join(chars))
    return out


def all_prompts(lengths: Lengths) -> list[tuple[str, str]]:
    groups = {
        "sd": SD_PROMPTS, "case": CASE_PROMPTS, "punctuation": PUNCTUATION, "numbers": NUMBERS,
        "contractions": CONTRACTIONS, "unicode": UNICODE,
        "nfc": [unicodedata.normalize("NFC", s) for s in NFC_NFD], "nfd": [unicodedata.normalize("NFD", s) for s in NFC_NFD],
        "emoji": EMOJI, "whitespace": WHITESPACE, "empty": EMPTY, "special": SPECIAL_STRINGS, "bangs": BANGS,
        "long-words": LONG_WORDS, "urls": URLS, "weighting": WEIGHTING, "control": CONTROL, "length": lengths.cases(),
        "random": random_prompts(20250801, 30),
    }
    seen, out = set(), []
    for kind, prompts in groups.items():
        for p in prompts:
            if p not in seen:  # a prompt met in an earlier group keeps that kind
                seen.add(p)
                out.append((kind, p))
    return out


# ---------------------------------------------------------------------------------------------
# Encoding, checked against encode_prompt itself


def encode(tok: CLIPTokenizer, prompt: str) -> dict:
    # StableDiffusionPipeline.encode_prompt's two calls and its truncation warning.
    ids = tok(prompt, padding="max_length", max_length=MAX_LENGTH, truncation=True).input_ids
    untruncated = tok(prompt, padding="longest").input_ids
    truncated = None
    if len(untruncated) >= len(ids) and untruncated != ids:
        truncated = tok.batch_decode([untruncated[MAX_LENGTH - 1:-1]])[0]
    assert len(ids) == MAX_LENGTH
    return {"ids": ids, "pieces": untruncated, "truncated": truncated}


class IdsAsEmbedding:
    """A text encoder whose "embedding" is its input ids, so encode_prompt hands back what it sent."""

    config = types.SimpleNamespace()  # no use_attention_mask
    dtype = torch.float64

    def __call__(self, ids: torch.Tensor, attention_mask=None) -> tuple[torch.Tensor]:
        return (ids.to(torch.float64).unsqueeze(-1),)


class EncodePromptCheck:
    """Runs diffusers' StableDiffusionPipeline.encode_prompt on a tokenizer and catches its
    truncation warning."""

    def __init__(self):
        from diffusers import StableDiffusionPipeline
        self.encode_prompt = StableDiffusionPipeline.encode_prompt
        self.warnings: list[str] = []
        handler = logging.Handler()
        handler.emit = lambda record: self.warnings.append(record.getMessage())
        logger = logging.getLogger("diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion")
        logger.addHandler(handler)
        logger.propagate = False  # caught here, not printed

    def __call__(self, tok: CLIPTokenizer, prompt: str) -> tuple[list[int], list[str]]:
        pipe = types.SimpleNamespace(tokenizer=tok, text_encoder=IdsAsEmbedding(), unet=None)
        self.warnings.clear()
        embeds, _ = self.encode_prompt(pipe, prompt, "cpu", 1, False)
        return embeds[0, :, 0].long().tolist(), list(self.warnings)


def main() -> None:
    transformers.logging.set_verbosity_error()  # "sequence length is longer than" on every long prompt
    encoder, merges = build_vocab()
    write_folder_goldens(encoder, merges)

    with tempfile.TemporaryDirectory() as scratch:
        toks = {name: load_variant(Path(scratch), name) for name in VARIANTS}
    for name, tok in toks.items():
        assert tok.get_vocab() == encoder and tok.vocab_size == 49408, name
        assert len(json.loads(tok.backend_tokenizer.to_str())["model"]["merges"]) == len(merges), name
        assert tok.pad_token_id == VARIANTS[name]["pad_id"] and tok.model_max_length == MAX_LENGTH, name
        assert (tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (49406, 49407, 49407), name

    reference = ClipReference()
    check = EncodePromptCheck()
    lengths = Lengths(toks["sd1"])

    # transformers and CLIP agree on plain ASCII (no html entities, no case-changed special strings).
    def comparable(p: str) -> bool:
        return (all(c in "\t\n\r" or " " <= c <= "~" for c in p) and "&" not in p
                and all(m.group() in (BOS, EOS) for m in regex.finditer(r"<\|(startoftext|endoftext)\|>", p, regex.I)))

    rng = random.Random(7)
    alphabet = [chr(c) for c in range(0x20, 0x7f) if chr(c) != "&"] + ["\t", "\n"] + [" "] * 20 + ["'s", "'ll"]
    for _ in range(3000):
        p = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        assert toks["sd1"](p).input_ids == reference.pieces(p), repr(p)

    cases = []
    differ = {"sd1": 0, "sd2": 0}
    reasons: dict[str, int] = {}
    for kind, prompt in all_prompts(lengths):
        enc = {name: encode(tok, prompt) for name, tok in toks.items()}
        for name, tok in toks.items():
            ids, warned = check(tok, prompt)
            assert ids == enc[name]["ids"], (name, prompt)
            expected = enc[name]["truncated"]
            assert (len(warned) == 1 and warned[0].endswith(str([expected]))) if expected is not None else not warned
        ref = reference.pieces(prompt)
        case = {"kind": kind, "prompt": prompt, "sd1": enc["sd1"]["ids"], "sd2": enc["sd2"]["ids"],
                "pieces": enc["sd1"]["pieces"], "truncated": enc["sd1"]["truncated"],
                "pieces_sd2": enc["sd2"]["pieces"], "truncated_sd2": enc["sd2"]["truncated"],
                "open_clip_differs": ref != enc["sd1"]["pieces"], "open_clip_differs_sd2": ref != enc["sd2"]["pieces"],
                "open_clip": None, "open_clip_why": None}
        if comparable(prompt):
            assert not case["open_clip_differs"], repr(prompt)
        if case["open_clip_differs"] or case["open_clip_differs_sd2"]:
            case["open_clip"] = ref
            why = reference.why(prompt, enc["sd1"]["pieces"]) if case["open_clip_differs"] else []
            if case["open_clip_differs_sd2"] and enc["sd2"]["pieces"] != enc["sd1"]["pieces"]:
                why.append("sd2 pad '!'")
            case["open_clip_why"] = why
            for r in why:
                reasons[r] = reasons.get(r, 0) + 1
        differ["sd1"] += case["open_clip_differs"]
        differ["sd2"] += case["open_clip_differs_sd2"]
        print(f"{kind:12} {'differs' if case['open_clip_differs'] else '       '} "
              f"{'differs-sd2' if case['open_clip_differs_sd2'] else '           '} "
              f"{len(case['pieces']):4} {str(case['open_clip_why'] or ''):28} {prompt[:60]!r}")
        cases.append(case)
    assert len(cases) >= 220, len(cases)

    why = ", ".join(f"{r}: {n}" for r, n in sorted(reasons.items(), key=lambda kv: -kv[1]))
    notes = (f"{len(cases)} cases. OpenAI CLIP's tokenizer (open_clip's SimpleTokenizer with OpenAI's special-token "
             f"names) gives other untruncated ids than transformers on {differ['sd1']} cases with SD 1.x's folder and "
             f"{differ['sd2']} with SD 2.x's. Steps that explain them ({why}): ftfy (curly quotes, ligatures, "
             "fullwidth forms, mojibake, control characters removed; transformers only does NFC), html.unescape "
             "(twice; transformers keeps entities), whitespace (str.split also splits on U+001C..U+001F), lower "
             "(Python's final sigma; tokenizers lowercases char by char), ignorecase (CLIP's regex is case-insensitive, "
             "so U+0345, whose case fold is a letter, matches none of its classes and is dropped), special tokens (CLIP matches "
             "<|startoftext|>/<|endoftext|> in any case; transformers' bos is normalized so any case, but SD 1.x's "
             "eos exact case only, and unmatched ones go through ByteLevel's GPT-2 split), sd2 pad '!' (SD 2.x's "
             "pad token '!' is a special added token, so every '!' in a prompt is id 0 on its own instead of BPE "
             "with '!</w>' 256 or a merged run). 3000 random ASCII prompts without '&' agree exactly.")
    doc = {"transformers": transformers.__version__, "tokenizers": __import__("tokenizers").__version__,
           "diffusers": __import__("diffusers").__version__, "open_clip": importlib.metadata.version("open_clip_torch"),
           "ftfy": ftfy.__version__, "notes": notes, "cases": cases}
    body = ",\n".join("    " + json.dumps(c, separators=(",", ":")) for c in cases)  # one case a line
    head = json.dumps({k: v for k, v in doc.items() if k != "cases"}, indent=2)[:-2]
    (OUT / "prompts.json").write_text(head + ',\n  "cases": [\n' + body + "\n  ]\n}\n")
    assert json.loads((OUT / "prompts.json").read_text()) == doc

    (OUT / "README.md").write_text(
        "Written by `tools/make_tokenizer_goldens.py` (transformers " + transformers.__version__ + ", diffusers "
        + doc["diffusers"] + "). `vocab.json.gz` and `merges.txt.gz` are CLIP's BPE vocabulary as a Hugging\n"
        "Face tokenizer folder holds it; gunzip them beside `sd1/` (Stable Diffusion 1.x, pad `<|endoftext|>`)\n"
        "or `sd2/` (2.x, pad `!`) to get that tokenizer folder. `prompts.json`: transformers' CLIPTokenizer's\n"
        "ids for each prompt as StableDiffusionPipeline.encode_prompt asks for them. Do not edit by hand.\n")
    print(notes)


if __name__ == "__main__":
    main()
