"""Tiny random mllama (Llama 3.2 Vision) checkpoints + golden tensors, with HF transformers as the oracle.

Run with the reference venv (never in CI):
    ref/bin/python refgen/mllama/make_model_goldens.py [OUT_DIR]
OUT_DIR defaults to tests/data/mllama. For each case it writes OUT_DIR/<name>/ with
config.json (HF v5 format, as save_pretrained writes it), config_full.json (every field, defaults
included), generation_config.json, model.safetensors (float32) and golden.safetensors; and
OUT_DIR/VERSIONS. tests/data/mllama/README.md documents every golden tensor.

Inputs are built without a tokenizer: token ids are drawn directly, <|image|> (= vocab_size) sits at
the image positions, and cross_attention_mask comes from HF's own processing_mllama helpers applied
to those positions. Pixels come from HF's MllamaImageProcessorPil applied to random uint8 images
whose sizes pick the tile arrangements we want.
"""
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

import transformers
from transformers import MllamaConfig, MllamaForConditionalGeneration
from transformers.models.mllama.image_processing_pil_mllama import MllamaImageProcessorPil
from transformers.models.mllama.modeling_mllama import _prepare_cross_attention_mask
from transformers.models.mllama.processing_mllama import (
    convert_sparse_cross_attention_mask_to_dense,
    get_cross_attention_token_mask,
)

torch.set_num_threads(2)
OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "tests" / "data" / "mllama"
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
VOCAB = 512
BOS, EOS, PAD = 500, 501, 502
IMG = VOCAB  # <|image|>: the first of the 8 extra embedding rows
MAX_TILES = 4
NEW_TOKENS = 10

# Each case: vision/text config overrides, the two prompts of the batch (lists of token ids where
# "I" marks an image; ids < VOCAB are text) and the (height, width) in pixels of every image, in tile
# units of the tile size S (so (1, 2) is an image 1 tile high and 2 wide -> arrangement (1, 2)).
CASES = {
    # GQA with 2 groups; cross layers at 1 and the last index; P = 5 patches (pad 3 -> 8)
    "tiny-mllama-a": dict(
        vision=dict(hidden_size=32, attention_heads=2, intermediate_size=48, num_hidden_layers=4,
                    num_global_layers=2, image_size=28, patch_size=14, intermediate_layers_indices=[0, 2, 3],
                    norm_eps=1e-5),
        text=dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, intermediate_size=96,
                  num_hidden_layers=5, cross_attention_layers=[1, 4], rms_norm_eps=1e-5,
                  max_position_embeddings=256,
                  rope_parameters=dict(rope_type="llama3", rope_theta=10000.0, factor=8.0, low_freq_factor=1.0,
                                       high_freq_factor=4.0, original_max_position_embeddings=64)),
        # sample 0: text before the first image, two images apart; sample 1: one image, left padded
        prompts=[["B", 7, 33, "I", 101, 250, 9, 77, "I", 300, 12, 480, 5],
                 ["B", "I", 44, 45, 46, 399]],
        images=[[(1, 2), (2, 2)], [(4, 1)]],
    ),
    # no GQA (kv heads == heads); a cross layer at index 0; P = 10 patches (pad 6 -> 16)
    "tiny-mllama-b": dict(
        vision=dict(hidden_size=48, attention_heads=3, intermediate_size=64, num_hidden_layers=3,
                    num_global_layers=1, image_size=42, patch_size=14, intermediate_layers_indices=[0, 2],
                    norm_eps=1e-6),
        text=dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=4, intermediate_size=80,
                  num_hidden_layers=4, cross_attention_layers=[0, 2], rms_norm_eps=1e-6,
                  max_position_embeddings=128,
                  rope_parameters=dict(rope_type="llama3", rope_theta=500000.0, factor=4.0, low_freq_factor=1.0,
                                       high_freq_factor=2.0, original_max_position_embeddings=48)),
        # sample 0: two consecutive images then text; sample 1: text, one image, text, left padded
        prompts=[["B", "I", "I", 61, 62, 63, 64, 65, 66, 67],
                 ["B", 200, 201, "I", 202, 203]],
        images=[[(1, 1), (1, 3)], [(3, 1)]],
    ),
    # MQA (1 kv head for 4 heads, head_dim 8); P = 17 patches (pad 7 -> 24); three images in sample 0
    "tiny-mllama-c": dict(
        vision=dict(hidden_size=32, attention_heads=4, intermediate_size=40, num_hidden_layers=2,
                    num_global_layers=1, image_size=32, patch_size=8, intermediate_layers_indices=[1, 0],
                    norm_eps=1e-5),
        text=dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=1, intermediate_size=72,
                  num_hidden_layers=4, cross_attention_layers=[1, 3], rms_norm_eps=1e-5,
                  max_position_embeddings=2048,
                  rope_parameters=dict(rope_type="llama3", rope_theta=1000.0, factor=8.0, low_freq_factor=1.0,
                                       high_freq_factor=4.0, original_max_position_embeddings=512)),
        prompts=[["B", 90, "I", 91, 92, "I", 93, "I", 94, 95, 96],
                 ["B", "I", 70, 71, 72, 73, 74, 75, 76, 77, 78, 79]],
        images=[[(2, 1), (1, 4), (1, 1)], [(2, 2)]],
    ),
}
TEXT_ONLY = ["B", 17, 230, 231, 48, 99, 410]


def build_config(c):
    vision = dict(c["vision"], max_num_tiles=MAX_TILES, hidden_act="gelu")
    vision["vision_output_dim"] = vision["hidden_size"] * (len(vision["intermediate_layers_indices"]) + 1)
    # HF's default list is only accepted with max_num_tiles 4; write the enumeration out anyway
    vision["supported_aspect_ratios"] = [[a, b] for a in range(1, MAX_TILES + 1) for b in range(1, MAX_TILES + 1)
                                         if a * b <= MAX_TILES]
    text = dict(c["text"], vocab_size=VOCAB, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD,
                hidden_act="silu", tie_word_embeddings=False)
    return MllamaConfig(vision_config=vision, text_config=text, image_token_index=IMG)


def randomize(model, seed):
    """Every parameter far from its init, so gates, norms, biases and embedding rows all show."""
    g = torch.Generator().manual_seed(seed)

    def rn(shape):
        return torch.randn(shape, generator=g)

    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.split(".")[-1]
            if "gate" in leaf and p.numel() == 1:
                # gates start at 0 (tanh 0 = 0 would hide whole branches): nonzero, both signs, per layer
                sign = 1.0 if torch.rand(1, generator=g).item() < 0.7 else -1.0
                p.fill_(sign * (0.3 + 0.9 * torch.rand(1, generator=g).item()))
            elif "norm" in name and leaf == "weight":
                p.copy_(1.0 + 0.2 * rn(p.shape))
            elif "norm" in name and leaf == "bias":
                p.copy_(0.1 * rn(p.shape))
            elif leaf == "bias":
                p.copy_(0.1 * rn(p.shape))
            elif "embedding" in name or "embed_tokens" in name:
                p.copy_(0.5 * rn(p.shape))
            else:
                fan_in = p[0].numel()
                p.copy_(rn(p.shape) / math.sqrt(fan_in))


def random_image(rng, h, w):
    """Smooth-ish random RGB uint8 (HWC): low-frequency colour field plus noise."""
    yy, xx = np.mgrid[0:h, 0:w]
    chans = []
    for _ in range(3):
        fy, fx, ph = rng.uniform(0.02, 0.2), rng.uniform(0.02, 0.2), rng.uniform(0, 6.28)
        chans.append(127 + 90 * np.sin(fy * yy + fx * xx + ph) + rng.normal(0, 20, (h, w)))
    return np.clip(np.stack(chans, -1), 0, 255).astype(np.uint8)


def preprocess(rng, tile_size, images):
    proc = MllamaImageProcessorPil(size={"height": tile_size, "width": tile_size}, max_image_tiles=MAX_TILES,
                                   image_mean=CLIP_MEAN, image_std=CLIP_STD, resample=2, do_rescale=True,
                                   rescale_factor=1 / 255, do_normalize=True, do_pad=True, do_resize=True,
                                   do_convert_rgb=True)
    batch = []
    for sample in images:
        # sizes slightly off the tile grid so the resize and the canvas padding both happen
        batch.append([random_image(rng, a * tile_size - 3, b * tile_size - 5) for a, b in sample])
    out = proc(images=batch, return_tensors="pt")
    return out, proc


def build_ids(prompts):
    """Left-padded ids, attention mask and image-token positions; 'B' = BOS, 'I' = <|image|>."""
    rows = [[BOS if t == "B" else IMG if t == "I" else t for t in p] for p in prompts]
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), PAD, dtype=torch.long)
    am = torch.zeros((len(rows), T), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, T - len(r):] = torch.tensor(r)
        am[i, T - len(r):] = 1
    return ids, am


def gen_positions(am):
    """What generate uses: real tokens count from 0, pads get 0."""
    return (am.cumsum(-1) - 1).masked_fill(am == 0, 0)


def collect_vision_layers(model):
    """Forward hooks: every local and global encoder layer output, and layernorm_pre's output."""
    vm = model.model.vision_model
    got = {}
    hooks = []

    def hook(key):
        def f(_m, _i, o):
            got[key] = (o[0] if isinstance(o, tuple) else o).detach().clone()
        return f

    hooks.append(vm.layernorm_pre.register_forward_hook(hook("vision_layernorm_pre")))
    for i, layer in enumerate(vm.transformer.layers):
        hooks.append(layer.register_forward_hook(hook(f"vision_local_layer_{i}")))
    for i, layer in enumerate(vm.global_transformer.layers):
        hooks.append(layer.register_forward_hook(hook(f"vision_global_layer_{i}")))
    return got, hooks


def greedy_without_cache(model, ids, am, pos, steps, **vision):
    """Independent greedy decode: a full forward per step, with generate's rules for positions (+1 per
    step) and the cross-attention mask (the last row repeated for every new token)."""
    ids, am, pos = ids.clone(), am.clone(), pos.clone()
    xmask = vision.pop("cross_attention_mask", None)
    out = []
    margin = float("inf")
    for _ in range(steps):
        logits = model(input_ids=ids, attention_mask=am, position_ids=pos, cross_attention_mask=xmask,
                       use_cache=False, **vision).logits
        nxt = logits[:, -1].argmax(-1, keepdim=True)
        top2 = logits[:, -1].topk(2, -1).values
        margin = min(margin, (top2[:, 0] - top2[:, 1]).min().item())
        out.append(nxt)
        ids = torch.cat([ids, nxt], 1)
        am = torch.cat([am, torch.ones_like(nxt)], 1)
        pos = torch.cat([pos, pos[:, -1:] + 1], 1)
        if xmask is not None:
            xmask = torch.cat([xmask, xmask[:, -1:]], 1)
    # a near-tie would make "greedy ids identical" a coin toss for a float32 re-implementation
    assert margin > 1e-3, f"greedy top-2 margin {margin} too small: change the prompt or seed"
    return torch.cat(out, 1)


def greedy(model, ids, am, **vision):
    """HF generate with its KV cache, checked against the cache-free loop. HF's cache reads its length
    from layer 0, so generate fails when layer 0 is a cross-attention layer; the loop's ids stand then."""
    check = greedy_without_cache(model, ids, am, gen_positions(am), NEW_TOKENS, **dict(vision))
    try:
        gen = model.generate(input_ids=ids, attention_mask=am, max_new_tokens=NEW_TOKENS, do_sample=False,
                             **vision)[:, ids.shape[1]:]
    except RuntimeError as e:
        print("  generate failed (%s); using the cache-free greedy loop" % str(e).splitlines()[0])
        return check, "cache-free loop (HF generate fails with a cross layer at index 0)"
    assert torch.equal(gen, check), ("HF's cached generate disagrees with its own full forward", gen, check)
    return gen, "HF generate with KV cache (equal to the cache-free loop)"


def make_case(name, c, seed):
    folder = OUT / name
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    cfg = build_config(c)
    cfg._attn_implementation = "eager"
    model = MllamaForConditionalGeneration(cfg).eval().float()
    randomize(model, seed + 1)
    model.generation_config.bos_token_id = BOS
    model.generation_config.eos_token_id = EOS
    model.generation_config.pad_token_id = PAD
    model.save_pretrained(str(folder))
    (folder / "config_full.json").write_text(json.dumps(cfg.to_dict(), indent=1, default=str) + "\n")

    S = cfg.vision_config.image_size
    pre, _ = preprocess(rng, S, c["images"])
    px, ar_ids, ar_mask = pre["pixel_values"], pre["aspect_ratio_ids"], pre["aspect_ratio_mask"]
    num_tiles = pre["num_tiles"]
    want = [[a * b for a, b in s] for s in c["images"]]
    assert num_tiles == want, (num_tiles, want)

    ids, am = build_ids(c["prompts"])
    T = ids.shape[1]
    spans = [get_cross_attention_token_mask(row.tolist(), IMG) for row in ids]
    xmask = torch.from_numpy(convert_sparse_cross_attention_mask_to_dense(spans, num_tiles, MAX_TILES, T))
    pos = gen_positions(am)

    model.generation_config.eos_token_id = None  # greedy runs to NEW_TOKENS
    got, hooks = collect_vision_layers(model)
    with torch.no_grad():
        vis = model.model.vision_model(pixel_values=px, aspect_ratio_ids=ar_ids,
                                       aspect_ratio_mask=ar_mask).last_hidden_state
        for h in hooks:
            h.remove()
        proj = model.model.multi_modal_projector(vis).reshape(-1, vis.shape[-2], cfg.text_config.hidden_size)
        _, rowmask = _prepare_cross_attention_mask(xmask, model.model.vision_model.num_patches, torch.float32)
        logits = model(input_ids=ids, attention_mask=am, position_ids=pos, pixel_values=px, aspect_ratio_ids=ar_ids,
                       aspect_ratio_mask=ar_mask, cross_attention_mask=xmask, use_cache=False).logits
        t_ids = torch.tensor([[BOS if t == "B" else t for t in TEXT_ONLY]])
        t_logits = model(input_ids=t_ids, attention_mask=torch.ones_like(t_ids), use_cache=False).logits
        gen, how = greedy(model, ids, am, pixel_values=px, aspect_ratio_ids=ar_ids, aspect_ratio_mask=ar_mask,
                          cross_attention_mask=xmask)
        t_gen, t_how = greedy(model, t_ids, torch.ones_like(t_ids))
    print(name, "greedy:", how, gen.tolist(), "| text-only:", t_how)
    # the step-0 prediction of generate must be the argmax of the stored logits
    assert torch.equal(gen[:, 0], logits[:, -1].argmax(-1))

    tensors = dict(
        input_ids=ids, attention_mask=am, position_ids=pos, pixel_values=px, aspect_ratio_ids=ar_ids,
        aspect_ratio_mask=ar_mask, cross_attention_mask=xmask, num_tiles=torch.tensor(
            [s + [0] * (px.shape[1] - len(s)) for s in num_tiles], dtype=torch.long),
        vision_output=vis, cross_attention_states=proj, full_text_row_masked_out_mask=rowmask,
        logits=logits, generated_ids=gen,
        textonly_input_ids=t_ids, textonly_logits=t_logits, textonly_generated_ids=t_gen)
    tensors.update(got)
    from safetensors.torch import save_file
    meta = dict(note="HF transformers MllamaForConditionalGeneration reference outputs (eager, float32)",
                transformers=transformers.__version__, torch=torch.__version__, case=json.dumps(c),
                generated_ids=how, textonly_generated_ids=t_how)
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(folder / "golden.safetensors"),
              metadata=meta)
    print(name, "params", sum(p.numel() for p in model.parameters()), "T", T, "vision", tuple(vis.shape),
          "textonly gen", t_gen.tolist())


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for i, (name, c) in enumerate(CASES.items()):
        make_case(name, c, 1000 + 10 * i)
    import PIL
    (OUT / "VERSIONS").write_text(f"transformers {transformers.__version__}\ntorch {torch.__version__}\n"
                                  f"numpy {np.__version__}\npillow {PIL.__version__}\n")


if __name__ == "__main__":
    main()
