#!/usr/bin/env python3
"""Llama 3 tokenizer goldens for tests/test_llama3_tokenizer.c.

Trains a small byte-level BPE tokenizer.json with HF `tokenizers`, built exactly like Meta's
Llama 3 tokenizer (Split with the Llama 3 regex, behaviour Isolated; ByteLevel without prefix
space and without its own regex; ByteLevel decoder; ignore_merges; BOS post-processor; Llama 3's
special tokens, with mllama's <|image|>, at Llama 3's layout shifted down to a 4000-token vocab),
on a generated multi-script corpus. Then records HF's answers for >= 2000 strings.

Writes tests/data/mllama/tokenizer/: tokenizer.json, tokenizer_config.json (from
PreTrainedTokenizerFast.save_pretrained), cases.txt, README.md. Deterministic (seeded).

Run: ref/bin/python refgen/mllama/make_tokenizer_goldens.py [out_dir]

cases.txt, one record per block, lines tagged by their first letter:
  S <hex of the UTF-8 text>          a string case
  A <ids>   tokenizer(text) (add_special_tokens=True: BOS, specials in the text parsed)
  P <ids>   tokenizer(text, add_special_tokens=False, split_special_tokens=True)
  R <ids>   a decode case: random ids (no S line)
  D <hex>   decode(A or R ids, skip_special_tokens=False)
  K <hex>   decode(A or R ids, skip_special_tokens=True)
Ids are space-separated decimals. Lines starting with '#' are comments.
"""
import json
import os
import random
import shutil
import sys
import tempfile
import unicodedata

import tokenizers
import transformers
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
N_REGULAR = 4000  # Llama 3: 128000 regular tokens; the specials follow at N_REGULAR + k

# Llama 3.2's special tokens in id order (128000 + k there, N_REGULAR + k here), then <|image|>.
SPECIALS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|step_id|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
] + [f"<|reserved_special_token_{i}|>" for i in range(2, 247)] + ["<|image|>"]

# Script blocks the corpus and the test strings draw letters (and marks) from.
BLOCKS = {
    "latin": (0x41, 0x7A),
    "latin_ext": (0xC0, 0x24F),
    "greek": (0x391, 0x3C9),
    "cyrillic": (0x410, 0x44F),
    "armenian": (0x531, 0x586),
    "hebrew": (0x5D0, 0x5EA),
    "arabic": (0x621, 0x64A),
    "syriac": (0x710, 0x72F),
    "thaana": (0x780, 0x7B0),
    "devanagari": (0x905, 0x94D),
    "bengali": (0x985, 0x9CD),
    "gurmukhi": (0xA05, 0xA4D),
    "gujarati": (0xA85, 0xACD),
    "tamil": (0xB85, 0xBCD),
    "telugu": (0xC05, 0xC4D),
    "kannada": (0xC85, 0xCCD),
    "malayalam": (0xD05, 0xD4D),
    "sinhala": (0xD85, 0xDCA),
    "thai": (0xE01, 0xE3A),
    "lao": (0xE81, 0xEB9),
    "tibetan": (0xF40, 0xF6C),
    "myanmar": (0x1000, 0x102A),
    "georgian": (0x10D0, 0x10FA),
    "hangul_jamo": (0x1100, 0x1159),
    "ethiopic": (0x1200, 0x1248),
    "cherokee": (0x13A0, 0x13F4),
    "canadian": (0x1401, 0x1676),
    "ogham": (0x1681, 0x169A),
    "runic": (0x16A0, 0x16EA),
    "khmer": (0x1780, 0x17B3),
    "mongolian": (0x1820, 0x1877),
    "hiragana": (0x3041, 0x3096),
    "katakana": (0x30A1, 0x30FA),
    "bopomofo": (0x3105, 0x312F),
    "cjk": (0x4E00, 0x4FFF),
    "hangul": (0xAC00, 0xAFFF),
    "yi": (0xA000, 0xA48C),
    "vai": (0xA500, 0xA60B),
    "fullwidth": (0xFF21, 0xFF5A),
    "gothic": (0x10330, 0x1034A),
    "deseret": (0x10400, 0x1044F),
    "cuneiform": (0x12000, 0x1236E),
    "math_alnum": (0x1D400, 0x1D6A5),
    "cjk_ext_b": (0x20000, 0x2A6D6),
}


def block_chars(lo, hi):
    # Letters, marks and numbers assigned in Unicode 14 already (PCRE2 10.42's tables), so that
    # the test checks the tokenizer, not the age of two Unicode databases.
    out = []
    for cp in range(lo, hi + 1):
        c = chr(cp)
        if unicodedata.category(c)[0] in "LMN" and unicodedata.name(c, ""):
            out.append(c)
    return out


CHARS = {name: block_chars(*r) for name, r in BLOCKS.items()}

ENGLISH = (
    "the of and to in is that for it as was with be by on not he this are or his from at which "
    "but have an they you were her she there can all their would one we what so if will out up "
    "about who them some could time into only new like then other more these two may first "
    "people image picture photo shows a an cat dog red blue green house tree car street city "
    "water sky cloud mountain river person man woman child table chair window door light dark "
    "left right top bottom center small large describe caption answer question model token"
).split()

CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'Ve", "'LL", "'D"]

EMOJI = [
    "😀", "😂", "🥲", "👍", "👍🏻", "👍🏽", "👍🏿", "❤️", "🔥", "✨", "🎉", "🐍", "🦀",
    "👨‍👩‍👧‍👦", "👩‍💻", "🧑🏾‍🚀", "🏳️‍🌈", "🏴‍☠️", "👁️‍🗨️", "🇫🇷", "🇯🇵", "🇺🇸", "🇩🇪",
    "🇧🇷", "🏴󠁧󠁢󠁳󠁣󠁴󠁿", "#️⃣", "1️⃣", "©️", "™️", "☺", "♥", "⚽", "🀄", "🃏", "🫠", "🪿",
]

SPACES = [" ", "  ", "   ", "\t", "\t\t", "\n", "\n\n", "\r\n", "\r", "\r\n\r\n", " \n", "\n ",
          "\x0b", "\x0c", "\x85", "\xa0", "\u1680", "\u2000", "\u2003", "\u2009", "\u200a",
          "\u2028", "\u2029", "\u202f", "\u205f", "\u3000", "\u200b", "\ufeff", " \t \n",
          "\u180e", "\x1c", "\x1f"]

# Letters and digits assigned in Unicode 15-16 (tokenizers' Oniguruma knows them, Python 3.11's
# unicodedata and PCRE2 10.42 do not): a few from each range Egret adds to PCRE2's \p{L}, \p{N}.
NEWER = ["\u1c89", "\ua7cb", "\U000105c0\U000105c1", "\U00010d4a\U00010d4b", "\U00011380",
         "\U00013460\U00013461", "\U00016100", "\U0001e030", "\U0001e5d0", "\U00031350\U00031351",
         "\U0002ebf0", "\U00010d40\U00010d41\U00010d42\U00010d43", "\U0001ccf0\U0001ccf1",
         "\U0001e5f1\U0001e5f2\U0001e5f3\U0001e5f4"]

PUNCT = list(".,;:!?-_()[]{}<>/\\|\"'`~@#$%^&*+=") + ["...", "--", "—", "–", "«", "»", "“", "”",
                                                       "‘", "’", "¿", "¡", "。", "、", "！", "？",
                                                       "·", "•", "€", "£", "¥", "§", "°", "±",
                                                       "∑", "√", "∞", "≠", "→", "⇒", "★", "☆"]


# Frequent corpus words where Oniguruma and a Unicode-14 regex engine cut differently (U+180E is
# not white space for Oniguruma; Unicode 15-16 letters and digits): merges learnt across those
# cuts make the ids tell the two apart.
TRAPS = ["ab\u1c89\u1c8a", "\U00013460\U00013461x", "\u182e\u180e\u1823", ".\u180e,", " \u180e\u180e",
         "x\U00010d40\U00010d41\U00010d42\U00010d43", "\U00031350\U00031351\U00031352",
         "e\U0001e5d0\U0001e5d1", "7\U0001ccf0\U0001ccf1\U0001ccf2\U0001ccf3", "\u180e\u180e!"]


def script_word(rng, name, lexicon):
    # Zipf-ish reuse of a per-script lexicon, so BPE learns multi-character tokens in every script.
    lex = lexicon.setdefault(name, [])
    if lex and rng.random() < 0.8:
        return lex[min(int(rng.paretovariate(1.2)) - 1, len(lex) - 1)]
    w = "".join(rng.choice(CHARS[name]) for _ in range(rng.randint(1, 7)))
    lex.append(w)
    return w


def number(rng):
    return str(rng.randint(0, 10 ** rng.randint(1, 12)))


def corpus_line(rng, lexicon):
    parts = []
    for _ in range(rng.randint(4, 30)):
        r = rng.random()
        if r < 0.45:
            w = rng.choice(ENGLISH)
            if rng.random() < 0.1:
                w = w.capitalize()
            parts.append(w)
        elif r < 0.75:
            parts.append(script_word(rng, rng.choice(list(CHARS)), lexicon))
        elif r < 0.82:
            parts.append(number(rng))
        elif r < 0.87:
            parts.append(rng.choice(ENGLISH) + rng.choice(CONTRACTIONS))
        elif r < 0.90:
            parts.append(rng.choice(PUNCT))
        elif r < 0.93:
            parts.append(rng.choice(TRAPS))
        else:
            parts.append(rng.choice(EMOJI))
    sep = [" "] * 12 + ["  ", "\n", "\t", ", ", ". "]
    return "".join(p + rng.choice(sep) for p in parts)


def make_corpus(rng, n_bytes):
    lexicon = {}
    lines, size = [], 0
    while size < n_bytes:
        line = corpus_line(rng, lexicon)
        lines.append(line)
        size += len(line.encode())
    return lines


def train(rng):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=N_REGULAR, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(make_corpus(rng, 3_000_000), trainer=trainer)
    assert tok.get_vocab_size() == N_REGULAR, tok.get_vocab_size()
    # Llama 3's tokenizer.json sets ignore_merges (tiktoken semantics); the trainer does not.
    j = json.loads(tok.to_str())
    j["model"]["ignore_merges"] = True
    tok = Tokenizer.from_str(json.dumps(j))
    n = tok.add_special_tokens(SPECIALS)
    assert n == len(SPECIALS)
    for k, s in enumerate(SPECIALS):
        assert tok.token_to_id(s) == N_REGULAR + k
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(
            single="<|begin_of_text|> $A",
            pair="<|begin_of_text|> $A <|begin_of_text|>:1 $B:1",
            special_tokens=[("<|begin_of_text|>", bos)]),
    ])
    return tok


# ------------------------------------------------------------------ test strings

def test_strings(rng):
    out = []
    add = out.append
    # hand-written edge cases first
    for s in ["", " ", "a", "A", "  a", "a  ", "a   b", "hello world", "Hello, World!",
              "\n", "\n\n\n", "\r\n", "a\r\nb", "a\n\n\nb", "\t\tx", "x\t\t", "x \n y",
              "   \n   ", " \n\n ", "trailing spaces   ", "   leading", "a \t\n b",
              "I'm", "you're", "we've", "they'll", "he'd", "it's", "don't", "DON'T", "I'M",
              "YOU'RE", "'s", "'S", "''s", "x's's", "'ſ", "O'Neil", "rock'n'roll", "'hello'",
              "1", "12", "123", "1234", "12345", "123456", "1234567", "3.14159", "1,000,000",
              "2024-01-01", "v1.2.3", "0x7fff", "١٢٣٤٥", "१२३४५", "一二三", "½¾", "²³", "Ⅻ",
              "<|image|>", "<|image|><|image|>", "a<|image|>b", "sentence   <|image|>",
              "<|begin_of_text|>hi", "<|eot_id|>", "<|start_header_id|>user<|end_header_id|>\n\n",
              "<|image|", "|image|>", "<|imag e|>", "<|reserved_special_token_246|>",
              "<|reserved_special_token_247|>", "<<|image|>>", "<|eot_id|><|eom_id|>",
              "café", "naïve", "Ångström", "ﬁ ligature", "e\u0301", "ñ vs n\u0303",
              "日本語のテキスト", "中文文本测试", "한국어 텍스트", "Привет, мир!", "Γειά σου",
              "שלום עולם", "مرحبا بالعالم", "नमस्ते दुनिया", "হ্যালো", "வணக்கம்", "สวัสดีครับ",
              "ሰላም", "Ꭳ Ꮟ", "ᠮᠣᠩᠭᠣᠯ", "བོད་ཡིག", "ქართული", "Հայերեն", "ꆈꌠ", "𐌰𐌱𐌲",
              "𝐀𝐁𝐂 𝑎𝑏𝑐", "𠀀𠀁", "\u200d", "\u200c", "a\u00adb", "\x00", "a\x00b", "\x7f",
              "\x01\x02\x1f", "\ufffd", "\U0010ffff", "\ue000", "x" * 300, " " * 100,
              "\n" * 50, "ab" * 100, "9" * 40, "😀" * 20]:
        add(s)
    for w in TRAPS:
        add(w)
        add("q" + w + w + " z")
        add(w.strip() + "  " + w)
    for w in NEWER:
        add(w)
        add(" " + w + "x")
        add("." + w + "12345")
        add(w + "\u180e" + w)
    for e in EMOJI:
        add(e)
        add("I love " + e + " so much")
        add(e + e)
    for sp in SPACES:
        add("a" + sp + "b")
        add(sp + "x")
        add("x" + sp)
        add("word" + sp + sp + "word")
        add("." + sp + ",")
    for n in range(1, 26):
        add("".join(rng.choice("0123456789") for _ in range(n)))
        add("x" + "".join(rng.choice("0123456789") for _ in range(n)) + "y")
        add(" " + "".join(rng.choice("٠١٢٣٤٥٦٧٨٩") for _ in range(n)))
    for c in CONTRACTIONS:
        for w in ["it", "IT", "they", "She", "x"]:
            add(w + c)
            add(w + c + " ok")
    for name, chars in CHARS.items():
        for _ in range(12):
            add("".join(rng.choice(chars) for _ in range(rng.randint(1, 12))))
        add("".join(rng.choice(chars) for _ in range(5)) + " " + "".join(
            rng.choice(chars) for _ in range(5)))
        add("The " + name + ": " + "".join(rng.choice(chars) for _ in range(6)) + ", 42.")
    # specials inside text, parsed and split (both recorded for every string)
    for _ in range(150):
        parts = []
        for _ in range(rng.randint(1, 6)):
            r = rng.random()
            if r < 0.35:
                parts.append(rng.choice(SPECIALS[:11] + SPECIALS[-1:] + [rng.choice(SPECIALS)]))
            elif r < 0.7:
                parts.append(corpus_line(rng, {})[: rng.randint(1, 40)])
            else:
                parts.append(rng.choice(SPACES))
        add("".join(parts))
    # random mixtures of everything
    all_chars = [c for cs in CHARS.values() for c in cs]
    while len(out) < 2300:
        r = rng.random()
        if r < 0.5:
            add(corpus_line(rng, {}))
        elif r < 0.75:
            s = []
            for _ in range(rng.randint(1, 30)):
                q = rng.random()
                s.append(rng.choice(all_chars) if q < 0.5 else rng.choice(SPACES) if q < 0.65
                         else rng.choice(PUNCT) if q < 0.8 else rng.choice(EMOJI) if q < 0.9
                         else number(rng))
            add("".join(s))
        else:
            # random code points anywhere in the BMP and beyond (assigned in Unicode 14 or
            # not a letter/number: unassigned ones are neither \p{L} nor \p{N} in any version)
            s = []
            for _ in range(rng.randint(1, 20)):
                cp = rng.choice([rng.randint(0x20, 0x7E), rng.randint(0xA0, 0x2FFF),
                                 rng.randint(0x3000, 0xD7FF), rng.randint(0xE000, 0xFFFD),
                                 rng.randint(0x10000, 0x1FAFF)])
                c = chr(cp)
                if unicodedata.category(c) == "Cn":
                    continue
                s.append(c)
            add("".join(s))
    return out


def hexs(s):
    return s.encode("utf-8").hex()


def main():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "tests/data/mllama/tokenizer")
    os.makedirs(out_dir, exist_ok=True)
    rng = random.Random(20261207)
    tok = train(rng)
    with tempfile.TemporaryDirectory() as tmp:
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>",
                                       eos_token="<|eot_id|>", pad_token="<|finetune_right_pad_id|>",
                                       clean_up_tokenization_spaces=True, model_max_length=131072)
        fast.save_pretrained(tmp)
        for f in ["tokenizer.json", "tokenizer_config.json"]:
            shutil.copy(os.path.join(tmp, f), os.path.join(out_dir, f))
    # the goldens come from the saved files, loaded as users load them
    hf = transformers.AutoTokenizer.from_pretrained(out_dir)
    fast = PreTrainedTokenizerFast.from_pretrained(out_dir)
    raw = Tokenizer.from_file(os.path.join(out_dir, "tokenizer.json"))
    lines = [f"# tokenizers {tokenizers.__version__}, transformers {transformers.__version__}"
             f" ({type(hf).__name__}; PreTrainedTokenizerFast and tokenizers agree)"]
    strings = test_strings(rng)
    for s in strings:
        a = hf(s)["input_ids"]
        p = hf(s, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        assert a == raw.encode(s).ids == fast(s)["input_ids"], repr(s)
        assert p == fast(s, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        d = hf.decode(a, skip_special_tokens=False)
        k = hf.decode(a, skip_special_tokens=True)
        assert d == raw.decode(a, skip_special_tokens=False), repr(s)
        assert k == raw.decode(a, skip_special_tokens=True), repr(s)
        assert hf.decode(p) == s, repr(s)  # byte-level BPE is lossless
        lines += ["S " + hexs(s), "A " + " ".join(map(str, a)), "P " + " ".join(map(str, p)),
                  "D " + hexs(d), "K " + hexs(k)]
    # decoding arbitrary ids: byte runs that are not UTF-8 (U+FFFD rules), specials between
    n_ids = len(hf)
    for _ in range(400):
        ids = []
        for _ in range(rng.randint(1, 16)):
            q = rng.random()
            ids.append(rng.randrange(256) if q < 0.6 else rng.randrange(n_ids) if q < 0.9
                       else N_REGULAR + rng.randrange(len(SPECIALS)))
        d = hf.decode(ids, skip_special_tokens=False)
        k = hf.decode(ids, skip_special_tokens=True)
        assert d == raw.decode(ids, skip_special_tokens=False)
        lines += ["R " + " ".join(map(str, ids)), "D " + hexs(d), "K " + hexs(k)]
    with open(os.path.join(out_dir, "cases.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"{len(strings)} strings, vocab {len(hf)}, -> {out_dir}")


if __name__ == "__main__":
    main()
