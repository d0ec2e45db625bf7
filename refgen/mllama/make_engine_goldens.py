"""An end-to-end golden for serving mllama through Egret's engine: a tiny random checkpoint whose
vocabulary is the Llama 3-shaped test tokenizer's, a folder as the hub ships one (config.json,
generation_config.json, preprocessor_config.json, tokenizer.json, tokenizer_config.json,
model.safetensors), two small PNGs, and HF's processor + model on prompts built from text and
those PNGs: the processor's input ids and greedy continuations.

Run with the reference venv (never in CI):
    ref/bin/python refgen/mllama/make_engine_goldens.py [OUT_DIR]
OUT_DIR defaults to tests/data/mllama/tiny-mllama-engine. Writes engine_golden.json there:
per case the prompt as parts ({"image": file} / {"text": ...}), HF's input_ids and the greedy ids
(EOS disabled; a full forward per step with generate's position and cross-mask rules, checked
against HF generate with its KV cache).
"""
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import PIL
import torch
from PIL import Image

import transformers
from transformers import MllamaConfig, MllamaForConditionalGeneration, MllamaProcessor, PreTrainedTokenizerFast
from transformers.models.mllama.image_processing_pil_mllama import MllamaImageProcessorPil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_model_goldens import CLIP_MEAN, CLIP_STD, MAX_TILES, gen_positions, random_image, randomize  # noqa: E402

torch.set_num_threads(2)
REPO = Path(__file__).resolve().parents[2]
OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "tests" / "data" / "mllama" / "tiny-mllama-engine"
TOKENIZER = REPO / "tests" / "data" / "mllama" / "tokenizer"
NEW_TOKENS = 8
TILE = 32

# (file, tiles rows x cols): sizes slightly off the tile grid so resizing and padding both happen
IMAGES = [("wide.png", (1, 3)), ("tall.png", (2, 1))]
CASES = [
    [{"image": "wide.png"}, {"text": "If I had to write a haiku"}],
    [{"image": "wide.png"}, {"image": "tall.png"}, {"text": " compare the two"}],
    [{"text": "A caption: "}, {"image": "tall.png"}, {"text": " and more"}],
    [{"text": "If I had to write a haiku"}],
]


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(TOKENIZER / f, OUT / f)
    tok = PreTrainedTokenizerFast.from_pretrained(str(OUT))  # tokenizer.json + tokenizer_config.json
    bos = tok.convert_tokens_to_ids("<|begin_of_text|>")
    img_id = tok.convert_tokens_to_ids("<|image|>")
    eos = [tok.convert_tokens_to_ids(t) for t in ("<|end_of_text|>", "<|eom_id|>", "<|eot_id|>")]
    vocab = img_id  # as in Llama 3.2 Vision: <|image|> is the first embedding row past vocab_size
    assert img_id == len(tok) - 1, (img_id, len(tok))

    vision = dict(hidden_size=32, attention_heads=4, intermediate_size=40, num_hidden_layers=2,
                  num_global_layers=1, image_size=TILE, patch_size=8, intermediate_layers_indices=[1, 0],
                  norm_eps=1e-5, max_num_tiles=MAX_TILES, hidden_act="gelu", vision_output_dim=96,
                  supported_aspect_ratios=[[a, b] for a in range(1, 5) for b in range(1, 5) if a * b <= 4])
    text = dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
                num_hidden_layers=4, cross_attention_layers=[1, 3], rms_norm_eps=1e-5,
                max_position_embeddings=256, vocab_size=vocab, bos_token_id=bos, eos_token_id=eos[0],
                pad_token_id=tok.convert_tokens_to_ids("<|finetune_right_pad_id|>"), hidden_act="silu",
                tie_word_embeddings=False,
                rope_parameters=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0,
                                     high_freq_factor=4.0, original_max_position_embeddings=64))
    cfg = MllamaConfig(vision_config=vision, text_config=text, image_token_index=img_id)
    cfg._attn_implementation = "eager"
    torch.manual_seed(2026)
    model = MllamaForConditionalGeneration(cfg).eval().float()
    randomize(model, 2027)
    model.generation_config.bos_token_id = bos
    model.generation_config.eos_token_id = eos
    model.save_pretrained(str(OUT))

    proc_img = MllamaImageProcessorPil(size={"height": TILE, "width": TILE}, max_image_tiles=MAX_TILES,
                                       image_mean=CLIP_MEAN, image_std=CLIP_STD, resample=2, do_rescale=True,
                                       rescale_factor=1 / 255, do_normalize=True, do_pad=True, do_resize=True,
                                       do_convert_rgb=True)
    proc_img.save_pretrained(str(OUT))
    processor = MllamaProcessor(image_processor=proc_img, tokenizer=tok)

    rng = np.random.default_rng(7)
    for name, (r, c) in IMAGES:
        Image.fromarray(random_image(rng, r * TILE - 3, c * TILE - 5)).save(OUT / name)

    cases = []
    model.generation_config.eos_token_id = None  # greedy runs to NEW_TOKENS
    for parts in CASES:
        text = "".join("<|image|>" if "image" in p else p["text"] for p in parts)
        images = [Image.open(OUT / p["image"]).convert("RGB") for p in parts if "image" in p]
        inputs = processor(text=text, images=[images] if images else None, return_tensors="pt")
        ids = inputs["input_ids"]
        am = inputs["attention_mask"]
        vis = {k: inputs[k] for k in ("pixel_values", "aspect_ratio_ids", "aspect_ratio_mask",
                                      "cross_attention_mask") if k in inputs}
        with torch.no_grad():
            gen = model.generate(input_ids=ids, attention_mask=am, max_new_tokens=NEW_TOKENS, do_sample=False,
                                 **vis)[:, ids.shape[1]:]
            # the same with a full forward per step (generate's rules: positions +1, last mask row repeated)
            cur, cam, pos, xm = ids, am, gen_positions(am), vis.get("cross_attention_mask")
            loop = []
            for _ in range(NEW_TOKENS):
                extra = {k: v for k, v in vis.items() if k != "cross_attention_mask"}
                lg = model(input_ids=cur, attention_mask=cam, position_ids=pos, cross_attention_mask=xm,
                           use_cache=False, **extra).logits[:, -1]
                top2 = lg.topk(2, -1).values
                assert (top2[0, 0] - top2[0, 1]).item() > 1e-3, "near-tie: change the prompt or seed"
                nxt = lg.argmax(-1, keepdim=True)
                loop.append(nxt)
                cur = torch.cat([cur, nxt], 1)
                cam = torch.cat([cam, torch.ones_like(nxt)], 1)
                pos = torch.cat([pos, pos[:, -1:] + 1], 1)
                if xm is not None:
                    xm = torch.cat([xm, xm[:, -1:]], 1)
        assert torch.equal(gen, torch.cat(loop, 1)), (gen, loop)
        cases.append(dict(parts=parts, processor_text=text, input_ids=ids[0].tolist(),
                          generated_ids=gen[0].tolist()))
        print(text, ids[0].tolist(), "->", gen[0].tolist())

    golden = dict(note="HF MllamaProcessor + MllamaForConditionalGeneration (eager, float32), greedy, EOS off",
                  transformers=transformers.__version__, torch=torch.__version__, pillow=PIL.__version__,
                  new_tokens=NEW_TOKENS, cases=cases)
    (OUT / "engine_golden.json").write_text(json.dumps(golden, indent=1) + "\n")


if __name__ == "__main__":
    main()
