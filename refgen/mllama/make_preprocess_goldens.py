#!/usr/bin/env python3
"""mllama image preprocessing goldens for tests/test_mllama_preprocess.c.

Runs HF's MllamaImageProcessor (as AutoImageProcessor picks it for a hub-style
preprocessor_config.json, on PIL images) over images of many sizes and aspect ratios: tiny,
extreme aspect, exact tile multiples, 1-4 tiles, other max_image_tiles, several images per prompt,
a batch with a padding image, PNG/JPEG files of every mode (tests/data/preprocess/), tile size 56
and the real 560.

Synthetic images are a closed formula of (x, y, channel, seed), so the C test rebuilds them instead
of reading pixel files (synthetic_image below; the C copy is in the test).

Writes tests/data/mllama/preprocess/: cases.json (what each case is) and goldens.safetensors:
  c{k}.b{i}.i{j}.tiles   F32 [a*b, 3, S, S]  pixel_values[i, j, :a*b] of sample i's image j,
                          when the case's pixel_stride is 1 (every other value of pixel_values
                          [B, N, J, 3, S, S] is 0); else, to keep the file small:
  c{k}.pixel_values_sampled  F32 [ceil(numel / stride)]  every pixel_stride-th value of the
                          flattened pixel_values (11 for S = 56, 97 for S = 560)
  c{k}.aspect_ratio_ids   I64 [B, N]
  c{k}.aspect_ratio_mask  I64 [B, N, J]
  c{k}.num_tiles          I64 [B, N]   (0 for padding slots)
  c{k}.b{i}.i{j}.resized  U8  [H', W', 3]  HF's resized image before padding (S = 56 only)

Run: ref/bin/python refgen/mllama/make_preprocess_goldens.py
"""
import json
import math
import os
import sys

import numpy as np
import PIL
import torch
import transformers
from PIL import Image
from safetensors.numpy import save_file
from transformers import AutoImageProcessor
from transformers.image_utils import SizeDict

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
SAMPLE_STRIDE = 97


def synthetic_image(w, h, seed):
    """uint8 [h, w, 3]: gradients that wrap (hard edges) plus a pseudo-random texture."""
    y, x = np.mgrid[0:h, 0:w].astype(np.int64)
    chans = []
    for c in range(3):
        v = (x * (3 + c) + y * (5 + 2 * c) + ((x * x + 3 * y * y + seed * 7 + c * 11) % 17) * 9
             + seed * 29)
        chans.append(v & 255)
    return np.stack(chans, axis=-1).astype(np.uint8)


def processor(tile, max_tiles, folder):
    cfg = {
        "image_processor_type": "MllamaImageProcessor", "do_convert_rgb": True, "do_resize": True,
        "size": {"height": tile, "width": tile}, "resample": 2, "do_rescale": True,
        "rescale_factor": 0.00392156862745098, "do_normalize": True, "image_mean": CLIP_MEAN,
        "image_std": CLIP_STD, "do_pad": True, "max_image_tiles": max_tiles,
    }
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "preprocessor_config.json"), "w") as f:
        json.dump(cfg, f)
    return AutoImageProcessor.from_pretrained(folder)


def main():
    out_dir = os.path.join(ROOT, "tests/data/mllama/preprocess")
    os.makedirs(out_dir, exist_ok=True)
    tmp = os.path.join(out_dir, ".tmp_processor")
    syn = lambda w, h, seed=1: {"synthetic": [w, h, seed]}
    png = lambda name: {"file": "preprocess/" + name}  # relative to tests/data
    cases = []
    add = lambda samples, tile=56, max_tiles=4: cases.append(
        {"tile_size": tile, "max_tiles": max_tiles, "samples": samples})
    # one image each, tile 56, 4 tiles
    for w, h in [(1, 1), (3, 2), (1, 200), (200, 1), (20, 15), (50, 50), (56, 56), (55, 57),
                 (57, 55), (100, 60), (112, 56), (60, 170), (230, 40), (120, 120), (150, 100),
                 (300, 45), (400, 300), (333, 777), (1000, 7), (7, 1000), (169, 56), (111, 113)]:
        add([[syn(w, h, seed=w + h)]])
    # files of every mode (decoded by Egret's image decoder in the test)
    for name in ["gray_50x50.png", "palette_64x64.png", "rgba_64x48.png", "rgb_100x75.png",
                 "rgb_96x96_q90.jpg", "rgb_640x480.png", "rgb_40x30.png"]:
        add([[png(name)]])
    # other max_image_tiles
    add([[syn(200, 100)]], max_tiles=1)
    add([[syn(200, 100)]], max_tiles=2)
    add([[syn(300, 100, 3)], [syn(100, 250, 4)]], max_tiles=6)
    # several images per prompt; a batch with unequal image counts (padding image slot)
    add([[syn(100, 60, 5), syn(60, 170, 6), syn(1, 1, 7)]])
    add([[syn(100, 60, 8)], [syn(230, 40, 9), png("rgba_64x48.png")]])
    # the real tile size (sampled pixel values)
    add([[png("rgb_640x480.png")]], tile=560)
    add([[syn(300, 2500, 11), syn(1920, 1080, 12)]], tile=560)

    tensors = {}
    for k, case in enumerate(cases):
        proc = processor(case["tile_size"], case["max_tiles"], tmp)
        batch = []
        for sample in case["samples"]:
            imgs = []
            for spec in sample:
                if "synthetic" in spec:
                    imgs.append(Image.fromarray(synthetic_image(*spec["synthetic"])))
                else:
                    imgs.append(Image.open(os.path.join(ROOT, "tests/data", spec["file"])))
            batch.append(imgs)
        out = proc(images=batch, return_tensors="np")
        pv = out["pixel_values"].astype(np.float32)
        nt_rows = out["num_tiles"]
        n_images = sum(len(r) for r in nt_rows)
        full = case["tile_size"] <= 56 and (sum(sum(r) for r in nt_rows) <= 3 or n_images > 1)
        case["pixel_stride"] = 1 if full else SAMPLE_STRIDE if case["tile_size"] > 56 else 11
        if full:
            # only the tiles of real images; HF's zeros elsewhere are asserted here and checked
            # as exact zeros by the test
            for i, row in enumerate(nt_rows):
                for j, n in enumerate(row):
                    tensors[f"c{k}.b{i}.i{j}.tiles"] = np.ascontiguousarray(pv[i, j, :n])
                    assert not pv[i, j, n:].any()
                assert not pv[i, len(row):].any()
        else:
            tensors[f"c{k}.pixel_values_sampled"] = np.ascontiguousarray(
                pv.reshape(-1)[:: case["pixel_stride"]])
        case["pixel_values_shape"] = list(pv.shape)
        tensors[f"c{k}.aspect_ratio_ids"] = out["aspect_ratio_ids"].astype(np.int64)
        tensors[f"c{k}.aspect_ratio_mask"] = out["aspect_ratio_mask"].astype(np.int64)
        n_max = pv.shape[1]
        nt = np.zeros((len(batch), n_max), dtype=np.int64)
        for i, row in enumerate(out["num_tiles"]):
            nt[i, : len(row)] = row
        tensors[f"c{k}.num_tiles"] = nt
        if case["tile_size"] <= 56:
            size = SizeDict(height=case["tile_size"], width=case["tile_size"])
            for i, imgs in enumerate(batch):
                for j, img in enumerate(imgs):
                    chw = proc.process_image(img, do_convert_rgb=True)
                    resized, _ = proc.resize(chw, size=size, max_image_tiles=case["max_tiles"],
                                             resample=proc.resample)
                    tensors[f"c{k}.b{i}.i{j}.resized"] = np.ascontiguousarray(
                        resized.transpose(1, 2, 0)).astype(np.uint8)
    for f in os.listdir(tmp):
        os.remove(os.path.join(tmp, f))
    os.rmdir(tmp)
    save_file(tensors, os.path.join(out_dir, "goldens.safetensors"))
    meta = {
        "made_by": "refgen/mllama/make_preprocess_goldens.py",
        "versions": {"transformers": transformers.__version__, "torch": torch.__version__,
                     "pillow": PIL.__version__, "numpy": np.__version__},
        "image_processor_class": type(proc).__name__,
        "image_mean": CLIP_MEAN, "image_std": CLIP_STD, "rescale_factor": 0.00392156862745098,
        "sample_stride": SAMPLE_STRIDE,
        "cases": cases,
    }
    with open(os.path.join(out_dir, "cases.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(f"{len(cases)} cases, processor {type(proc).__name__}, -> {out_dir}")


if __name__ == "__main__":
    main()
