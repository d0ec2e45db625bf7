#!/usr/bin/env python3
"""Writes the fuzzers' seed corpora, fuzz/corpus/<target>/, from tests/data plus small synthetic
files for what tests/data lacks (BMP, GIF, TGA, PNG colour types and bit depths, small safetensors,
tiny tokenizers, id lists). Standard library only, plus jpegtran (Debian: libjpeg-turbo-progs) when installed, for the
progressive and restart-marker JPEGs (without it those two seeds are left as they are).
Rerunning it rewrites the same files.

    python3 fuzz/make_seeds.py
"""
import json
import os
import shutil
import struct
import subprocess
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")
DATA = os.path.join(ROOT, "tests", "data")


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def copy(target, src, name=None):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    shutil.copyfile(os.path.join(ROOT, src), os.path.join(d, name or os.path.basename(src)))


def pixel(x, y, c):
    return (x * 53 + y * 97 + c * 31) & 0xFF


# ---- images

def png(w, h, color, depth, interlace=0, plte=None, trns=None):
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color]
    bits = channels * depth

    def raw_rows(pw, ph, x0=0, y0=0, dx=1, dy=1):
        rows = b""
        for y in range(ph):
            vals = []
            for x in range(pw):
                for c in range(channels):
                    vals.append(pixel(x0 + x * dx, y0 + y * dy, c) % (1 << depth) if depth < 8
                                else pixel(x0 + x * dx, y0 + y * dy, c) * (257 if depth == 16 else 1))
            row = bytearray()
            if depth < 8:
                acc, n = 0, 0
                for v in vals:
                    acc = acc << depth | v
                    n += depth
                    if n == 8:
                        row.append(acc)
                        acc, n = 0, 0
                if n:
                    row.append(acc << (8 - n))
            else:
                for v in vals:
                    row += struct.pack(">H", v) if depth == 16 else bytes([v])
            rows += bytes([y % 5]) + bytes(row)  # cycle through the five filter types
        return rows

    def unfilter_ok(rows):  # filters other than 0 are fine: the decoder undoes them
        return rows

    if interlace:
        passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4),
                  (1, 0, 2, 2), (0, 1, 1, 2)]
        raw = b""
        for x0, y0, dx, dy in passes:
            pw = (w - x0 + dx - 1) // dx if w > x0 else 0
            ph = (h - y0 + dy - 1) // dy if h > y0 else 0
            if pw and ph:
                raw += raw_rows(pw, ph, x0, y0, dx, dy)
    else:
        raw = unfilter_ok(raw_rows(w, h))

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color, 0, 0,
                                                            interlace))
    if plte:
        out += chunk(b"PLTE", plte)
    if trns:
        out += chunk(b"tRNS", trns)
    out += chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    del bits
    return out


def bmp(w, h, bpp, top_down=False, palette=None):
    stride = ((w * bpp + 31) // 32) * 4
    pal = b"".join(bytes([b, g, r, 0]) for r, g, b in (palette or []))
    offset = 54 + len(pal)
    rows = []
    for y in range(h):
        row = bytearray()
        if bpp >= 24:
            for x in range(w):
                row += bytes([pixel(x, y, 2), pixel(x, y, 1), pixel(x, y, 0)])
                if bpp == 32:
                    row.append(0xFF)
        elif bpp == 8:
            row += bytes(pixel(x, y, 0) % len(palette) for x in range(w))
        elif bpp == 4:
            for x in range(0, w, 2):
                hi = pixel(x, y, 0) % len(palette)
                lo = pixel(x + 1, y, 0) % len(palette) if x + 1 < w else 0
                row.append(hi << 4 | lo)
        row += bytes(stride - len(row))
        rows.append(bytes(row))
    if not top_down:
        rows.reverse()
    data = b"".join(rows)
    return (b"BM" + struct.pack("<IHHI", offset + len(data), 0, 0, offset) +
            struct.pack("<IiiHHIIiiII", 40, w, -h if top_down else h, 1, bpp, 0, len(data),
                        2835, 2835, len(palette or []), 0) + pal + data)


def tga(w, h, kind, bpp, top_left=False):
    cmap = b""
    if kind == 1:
        cmap = b"".join(bytes([pixel(i, 0, 2), pixel(i, 0, 1), pixel(i, 0, 0)]) for i in range(5))
    desc = (0x20 if top_left else 0) | (8 if bpp == 32 else 0)
    hdr = struct.pack("<BBBHHBHHHHBB", 0, 1 if kind == 1 else 0, kind, 0, 5 if kind == 1 else 0,
                      24 if kind == 1 else 0, 0, 0, w, h, bpp, desc)
    px = []
    for y in range(h):
        for x in range(w):
            if kind == 1:
                px.append(bytes([pixel(x, y, 0) % 5]))
            elif kind in (3, 11):
                px.append(bytes([pixel(x, y, 0)]))
            else:
                p = bytes([pixel(x // 2, y, 2), pixel(x // 2, y, 1), pixel(x // 2, y, 0)])
                px.append(p + (bytes([pixel(x, y, 3)]) if bpp == 32 else b""))
    if kind in (9, 10, 11):  # RLE: runs of equal pixels, raw packets otherwise (one pixel each)
        out, i = b"", 0
        while i < len(px):
            n = 1
            while i + n < len(px) and n < 128 and px[i + n] == px[i]:
                n += 1
            out += bytes([0x80 | (n - 1)]) + px[i] if n > 1 else bytes([0]) + px[i]
            i += n
        body = out
    else:
        body = b"".join(px)
    return hdr + cmap + body


def gif(w, h, transparent=None, frames=1):
    pal = b"".join(bytes([pixel(i, 0, 0), pixel(i, 0, 1), pixel(i, 0, 2)]) for i in range(4))
    out = b"GIF89a" + struct.pack("<HHBBB", w, h, 0x80 | 0x01, 0, 0) + pal
    for f in range(frames):
        if transparent is not None:
            out += b"\x21\xF9\x04\x01\x00\x00" + bytes([transparent]) + b"\x00"
        out += b"\x2C" + struct.pack("<HHHHB", 0, 0, w, h, 0)
        # LZW with minimum code size 2 (clear 4, end 5), a clear after every two codes so the
        # table never grows past 3-bit codes.
        codes = []
        idx = [(pixel(x, y, f) % 4) for y in range(h) for x in range(w)]
        for i in range(0, len(idx), 2):
            codes += [4] + idx[i:i + 2]
        codes.append(5)
        acc, n, data = 0, 0, bytearray()
        for c in codes:
            acc |= c << n
            n += 3
            while n >= 8:
                data.append(acc & 0xFF)
                acc >>= 8
                n -= 8
        if n:
            data.append(acc & 0xFF)
        blocks = b"".join(bytes([len(data[i:i + 255])]) + bytes(data[i:i + 255])
                          for i in range(0, len(data), 255))
        out += b"\x02" + blocks + b"\x00"
    return out + b"\x3B"


def images():
    t = "fuzz_image"
    for name in ["gray_50x50.png", "palette_64x64.png", "rgb_40x30.png", "rgb_96x96_q90.jpg"]:
        copy(t, os.path.join("tests", "data", "preprocess", name))
    pal = bytes(pixel(i, 1, c) for i in range(6) for c in range(3))
    put(t, "png_gray1_9x5.png", png(9, 5, 0, 1))
    put(t, "png_gray4_trns.png", png(7, 3, 0, 4, trns=b"\x00\x05"))
    put(t, "png_gray16_6x4.png", png(6, 4, 0, 16))
    put(t, "png_rgb16_interlaced.png", png(11, 9, 2, 16, interlace=1))
    put(t, "png_graya8_5x5.png", png(5, 5, 4, 8))
    put(t, "png_rgba8_interlaced.png", png(9, 10, 6, 8, interlace=1))
    put(t, "png_pal2_trns.png", png(6, 3, 3, 2, plte=pal[:12], trns=b"\x00\x80"))
    put(t, "bmp24_5x3.bmp", bmp(5, 3, 24))
    put(t, "bmp32_topdown_4x4.bmp", bmp(4, 4, 32, top_down=True))
    put(t, "bmp8_pal_7x3.bmp", bmp(7, 3, 8, palette=[(pixel(i, 2, 0), i * 40, 9) for i in range(6)]))
    put(t, "bmp4_pal_5x2.bmp", bmp(5, 2, 4, palette=[(i * 50, 0, 255 - i * 50) for i in range(5)]))
    put(t, "tga_raw24_4x3.tga", tga(4, 3, 2, 24))
    put(t, "tga_rle32_6x2.tga", tga(6, 2, 10, 32, top_left=True))
    put(t, "tga_gray_3x3.tga", tga(3, 3, 3, 8))
    put(t, "tga_cmap_5x2.tga", tga(5, 2, 1, 8))
    put(t, "gif_4x3.gif", gif(4, 3))
    put(t, "gif_trans_2frames.gif", gif(5, 2, transparent=1, frames=2))
    if shutil.which("jpegtran"):
        src = os.path.join(DATA, "preprocess", "rgb_96x96_q90.jpg")
        for name, args in [("jpeg_progressive.jpg", ["-progressive"]),
                           ("jpeg_gray_restart.jpg", ["-grayscale", "-restart", "2"])]:
            out = subprocess.run(["jpegtran", "-copy", "none"] + args + [src], check=True,
                                 stdout=subprocess.PIPE).stdout
            put(t, name, out)


# ---- tokenizer: data[0] = mode (bit 0: 0 text, 1 ids) | flag (bit 1)

def tokenizer():
    t = "fuzz_tokenizer"
    cases = json.load(open(os.path.join(DATA, "tokenizer", "tokenizer_cases.json")))
    for i, c in enumerate(cases[:10]):
        put(t, "text_%02d" % i, b"\x00" + c["text"].encode())
        put(t, "ids_%02d" % i, b"\x01" + b"".join(struct.pack("<H", x) for x in c["ids_with_bos"]))
    put(t, "text_bos_image", "\x02<s>Output:<image><fake_token_around_image> é 漢字 🐍\n".encode())
    put(t, "text_invalid_utf8", b"\x00ok \xe2\x82 then \xff\xfe\xed\xa0\x80 \xf4\x90\x80\x80")
    put(t, "text_nul_and_controls", b"\x00a\x00b\t\r\n\x7f")
    # byte tokens <0xE2><0x82><0xAC> (id = byte + 3 in the test vocab) make a euro sign; then a
    # truncated sequence, a stray continuation byte, and the special ids, with skip_special
    ids = [1, 3 + 0xE2, 3 + 0x82, 3 + 0xAC, 3 + 0xF0, 3 + 0x9F, 299, 3 + 0x80, 2, 475, 476]
    put(t, "ids_bytes_skip", b"\x03" + b"".join(struct.pack("<H", x) for x in ids))
    put(t, "ids_extremes", b"\x01\xff\xff\xfe\xff\x00\x00\x01\x00\xdb\x01")


def tokenizer_json():
    t = "fuzz_tokenizer_json"
    copy(t, os.path.join("tests", "data", "tokenizer", "tokenizer.json"))
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab["<0x%02X>" % b] = 3 + b
    for i, s in enumerate(["▁", "h", "e", "l", "o", "he", "ll", "hell", "hello", "▁hello"]):
        vocab[s] = 259 + i
    added = [
        {"id": 0, "content": "<unk>", "special": True},
        {"id": 1, "content": "<s>", "special": True},
        {"id": 2, "content": "</s>", "special": True},
        {"id": 300, "content": "<image>", "special": True, "lstrip": True, "rstrip": True},
        {"id": 301, "content": "wor", "single_word": True, "normalized": True},
        {"id": 302, "content": "hello", "normalized": False},
    ]
    tiny = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "▁"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
        "pre_tokenizer": None,
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                      {"Sequence": {"id": "A", "type_id": 0}}],
                           "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "fuse_unk": True,
                  "byte_fallback": True, "ignore_merges": False, "vocab": vocab,
                  "merges": ["h e", "l l", ["he", "ll"], "hell o", "▁ hello"]},
    }
    put(t, "tiny.json", json.dumps(tiny, ensure_ascii=False))
    plain = dict(tiny, normalizer=None, post_processor=None, added_tokens=[],
                 decoder={"type": "Fuse"})
    plain["model"] = dict(tiny["model"], byte_fallback=False, fuse_unk=False, ignore_merges=True,
                          vocab={k: v for k, v in vocab.items() if not k.startswith("<0x")})
    put(t, "plain.json", json.dumps(plain, ensure_ascii=False, indent=1))
    # byte-level BPE (Llama 3's shape): the pre-tokenizer regex, ByteLevel map and decoder
    byte_chars = [chr(b) if 0x21 <= b <= 0x7E or 0xA1 <= b <= 0xAC or b >= 0xAE else None
                  for b in range(256)]
    extra = 0
    for b in range(256):
        if byte_chars[b] is None:
            byte_chars[b] = chr(0x100 + extra)
            extra += 1
    bl_vocab = {c: i for i, c in enumerate(byte_chars)}
    for i, s in enumerate(["Ġt", "he", "Ġthe", "ĠĠ", "ĊĊ"]):
        bl_vocab[s] = 256 + i
    llama3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
              r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
    bytelevel = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [dict(id=i, content=c, special=True, normalized=False, single_word=False,
                              lstrip=False, rstrip=False)
                         for i, c in [(261, "<|begin_of_text|>"), (262, "<|image|>")]],
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": llama3}, "behavior": "Isolated",
             "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
             "use_regex": False}]},
        "post_processor": {"type": "Sequence", "processors": [
            {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
             "use_regex": True},
            {"type": "TemplateProcessing",
             "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                        {"Sequence": {"id": "A", "type_id": 0}}],
             "pair": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                      {"Sequence": {"id": "A", "type_id": 0}},
                      {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 1}},
                      {"Sequence": {"id": "B", "type_id": 1}}],
             "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [261],
                                                      "tokens": ["<|begin_of_text|>"]}}}]},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "fuse_unk": False,
                  "byte_fallback": False, "ignore_merges": True, "vocab": bl_vocab,
                  "merges": [["Ġ", "t"], ["h", "e"], ["Ġt", "he"], ["Ġ", "Ġ"], ["Ċ", "Ċ"]]},
    }
    put(t, "bytelevel.json", json.dumps(bytelevel, ensure_ascii=False))


# ---- safetensors

def safetensors(tensors, metadata=None, pad=True):
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, payload in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data),
                                                                         len(data) + len(payload)]}
        data += payload
    h = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def safetensors_seeds():
    t = "fuzz_safetensors"
    f32 = struct.pack("<6f", 1.0, -2.5, 0.0, 3.25, float("inf"), -0.0)
    f16 = struct.pack("<4H", 0x3C00, 0xC000, 0x7E00, 0x0001)
    bf16 = struct.pack("<4H", 0x3F80, 0xC020, 0x7F80, 0x0080)
    put(t, "floats.safetensors", safetensors([
        ("w", "F32", [2, 3], f32), ("h", "F16", [4], f16), ("b", "BF16", [2, 1, 2], bf16),
        ("d", "F64", [1], struct.pack("<d", 1e300))], metadata={"format": "pt"}))
    put(t, "ints.safetensors", safetensors([
        ("ids", "I64", [3], struct.pack("<3q", 1, -2, 1 << 40)), ("i32", "I32", [2], struct.pack("<2i", 7, -7)),
        ("i16", "I16", [1], struct.pack("<h", -3)), ("i8", "I8", [2], b"\x80\x7f"),
        ("u8", "U8", [2], b"\xff\x00"), ("mask", "BOOL", [3], b"\x01\x00\x01")]))
    put(t, "empty_and_scalar.safetensors", safetensors([
        ("scalar", "F32", [], struct.pack("<f", 2.0)), ("none", "F16", [0, 5], b""),
        ("z", "F32", [1, 0], b"")], metadata={}))
    put(t, "metadata_only.safetensors", safetensors([], metadata={"total_size": "0"}, pad=False))
    # the header of a real checkpoint (the demo model's biggest tensors cut away): names, shapes
    src = os.path.join(DATA, "tiny-idefics-c", "model.safetensors")
    with open(src, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    small = []
    for name, e in sorted(header.items()):
        if name == "__metadata__":
            continue
        numel = 1
        for s in e["shape"]:
            numel *= s
        if numel <= 16:
            small.append((name, e["dtype"], e["shape"], bytes(numel * {"F32": 4, "F16": 2, "BF16": 2}
                                                                   .get(e["dtype"], 8))))
    put(t, "tiny_idefics_small_tensors.safetensors", safetensors(small[:12]))


# ---- config.json and egret_template.json (one target parses both)

def config():
    t = "fuzz_config"
    copy(t, os.path.join("tests", "data", "tiny-idefics-a", "config.json"), "config_a.json")
    copy(t, os.path.join("tests", "data", "tiny-idefics-b", "config_full.json"), "config_full_b.json")
    copy(t, os.path.join("models", "shapes-idefics", "egret_template.json"), "template_shapes.json")
    put(t, "template_full.json", json.dumps({
        "prefix": ["Describe the images.\n"], "example": ["<image>", "Output: {text}\n"],
        "query": ["<image>", "Question: {text} Answer:"], "stop": ["\n", "</s>"]}))
    put(t, "config_minimal.json", json.dumps({
        "model_type": "idefics", "vocab_size": 32, "hidden_size": 8, "intermediate_size": 16,
        "num_hidden_layers": 2, "num_attention_heads": 2, "cross_layer_interval": 1,
        "vision_config": {"embed_dim": 8, "image_size": 16, "patch_size": 8,
                          "num_attention_heads": 2, "intermediate_size": 16,
                          "num_hidden_layers": 1},
        "perceiver_config": {"use_resampler": True, "resampler_n_latents": 2,
                             "resampler_depth": 1, "resampler_n_heads": 2,
                             "resampler_head_dim": 4}}))


# ---- example set files: "EGRETSET", version 1 (LE uint32), a CreateExampleSetRequest

def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def field(number, payload):
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def example_set_seeds():
    t = "fuzz_example_set"
    header = b"EGRETSET" + struct.pack("<I", 1)
    scene = open(os.path.join(ROOT, "examples", "scene-002.png"), "rb").read()
    tiny = png(2, 2, 2, 8)
    pair = lambda image, text: field(1, field(1, image) + field(2, text.encode()))
    put(t, "one-pair.egset", header + pair(scene, "red."))
    put(t, "two-pairs-template.egset",
        header + pair(tiny, "a small red square.") + pair(tiny, "blue.") + field(2, b"model"))
    put(t, "empty-set.egset", header)
    put(t, "nul-text.egset", header + pair(tiny, "red\0."))
    put(t, "bad-utf8.egset", header + pair(tiny, "") + field(1, field(2, b"caf\xc3")))
    put(t, "version-2.egset", b"EGRETSET" + struct.pack("<I", 2) + pair(tiny, "red."))
    put(t, "truncated.egset", (header + pair(tiny, "red."))[:-3])


# ---- mllama config.json

def mllama_config():
    t = "fuzz_mllama_config"
    for n in "abc":
        copy(t, os.path.join("tests", "data", "mllama", "tiny-mllama-" + n, "config.json"),
             "config_%s.json" % n)
    copy(t, os.path.join("tests", "data", "mllama", "tiny-mllama-c", "config_full.json"),
         "config_full_c.json")
    put(t, "config_defaults.json", json.dumps({"model_type": "mllama"}))


if __name__ == "__main__":
    images()
    tokenizer()
    tokenizer_json()
    safetensors_seeds()
    config()
    example_set_seeds()
    mllama_config()
