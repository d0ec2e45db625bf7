#!/usr/bin/env python3
"""An independent PyTorch (CPU, float32) implementation of IDEFICS with a KV cache.

Written from ../shared/docs/idefics.md ("idefics.md" below; section numbers refer to it), not from
HuggingFace transformers, which this file never imports. It loads the checkpoint folders Egret loads
(config.json + *.safetensors, sharded through model.safetensors.index.json; F32/F16/BF16 weights, all
computed in float32) and works on token ids and normalised pixels (no tokenizer).

Two jobs:
  check   reproduce the reference goldens, so this is a second reference next to HF's:
          tests/data/tiny-idefics-{a,b,c}/golden.safetensors (per-tensor max relative error, greedy
          ids with the KV cache) and tests/data/shapes-cases/cases.json with models/shapes-idefics
          (greedy 24 ids from the PNG images). Falls back to ../shared/reference when a copy is missing.
  bench   the PyTorch side of Egret's side-by-side benchmark: vision+perceiver encode,
          prefill, decode with the KV cache and time to first token; --json prints one JSON object
          on stdout (progress goes to stderr), so bench/compare can run this as a subprocess.

Examples:
  python3 bench/torch_ref.py check
  python3 bench/torch_ref.py bench --model models/shapes-idefics --json
  python3 bench/torch_ref.py bench --random-weights path/to/config.json --batch 1 --json

Debian's python3-torch lives in /usr/bin/python3; when `python3` is another interpreter without
torch (pyenv, venv), the script re-runs itself with /usr/bin/python3.
"""
import os
import sys

# OpenMP threads sleep at barriers instead of spinning. On a small shared machine (2 cores, other work running) the
# default spin-wait turns every parallel region into a scheduler wait of several ms (a 64x640 silu: mean 0.9-2.4 ms
# spinning vs 30 us passive, 2 threads, load average ~2.5). Must be set before libgomp starts; an explicit value wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

try:
    import numpy as np
    import torch
    import torch.nn.functional as F
except ImportError:  # pragma: no cover - interpreter selection
    if os.path.exists("/usr/bin/python3") and os.path.realpath(sys.executable) != os.path.realpath("/usr/bin/python3") \
            and not os.environ.get("TORCH_REF_REEXEC"):
        os.environ["TORCH_REF_REEXEC"] = "1"
        os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)
    sys.stderr.write("torch_ref.py needs torch and numpy (Debian: apt-get install python3-torch python3-numpy)\n")
    sys.exit(2)

import argparse
import dataclasses
import datetime
import importlib.util
import json
import platform
import statistics
import struct
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED_REF = REPO.parent / "shared" / "reference"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
NEG = torch.finfo(torch.float32).min  # the additive "masked" value (§3.1 step 7, §6 v5 note 1)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# =========================================================================================== safetensors
_ST_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16, "I64": np.int64,
              "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def read_safetensors(path):
    """Read a .safetensors file (§2 last paragraph) into {name: torch.Tensor}.

    Floating tensors come back as float32 (BF16 is widened by putting its 16 bits in the high half of a
    float32; F16 through numpy), integer/bool tensors keep their type."""
    out = {}
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dt = info["dtype"]
        if dt not in _ST_DTYPES:
            raise ValueError(f"{path}: tensor {name}: unsupported dtype {dt}")
        a, b = info["data_offsets"]
        arr = np.frombuffer(data, dtype=_ST_DTYPES[dt], count=(b - a) // np.dtype(_ST_DTYPES[dt]).itemsize, offset=a)
        if dt == "BF16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        elif dt in ("F16", "F64"):
            arr = arr.astype(np.float32)
        out[name] = torch.from_numpy(arr.copy()).reshape(info["shape"])
    return out


def load_checkpoint(folder):
    """All tensors of a checkpoint folder: model.safetensors.index.json's shards if present, else every *.safetensors
    (golden files excluded)."""
    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    if index.exists():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = sorted(p.name for p in folder.glob("*.safetensors") if "golden" not in p.name)
    if not files:
        raise FileNotFoundError(f"{folder}: no *.safetensors")
    weights = {}
    for fn in files:
        weights.update(read_safetensors(folder / fn))
    return weights


# =========================================================================================== configuration
@dataclasses.dataclass
class VisionConfig:
    """§1.1 (defaults used for missing keys)."""
    embed_dim: int = 768
    image_size: int = 224
    patch_size: int = 14
    intermediate_size: int = 5120
    num_hidden_layers: int = 32
    num_attention_heads: int = 16
    num_channels: int = 3
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-5


@dataclasses.dataclass
class PerceiverConfig:
    """§1.2."""
    resampler_n_latents: int = 64
    resampler_depth: int = 6
    resampler_n_heads: int = 16
    resampler_head_dim: int = 96
    qk_layer_norms_perceiver: bool = False


@dataclasses.dataclass
class Config:
    """§1.3 / §1.4b: the fields the forward pass reads."""
    vocab_size: int = 32000
    additional_vocab_size: int = 0
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    hidden_act: str = "silu"
    rms_norm_eps: float = 1e-6
    pad_token_id: int = 0
    bos_token_id: int = 1
    eos_token_id: int = 2
    tie_word_embeddings: bool = False
    cross_layer_interval: int = 1
    qk_layer_norms: bool = False
    use_resampler: bool = False
    alpha_type: str = "float"
    initializer_range: float = 0.02
    rope_theta: float = 10000.0
    vision: VisionConfig = dataclasses.field(default_factory=VisionConfig)
    perceiver: PerceiverConfig = dataclasses.field(default_factory=PerceiverConfig)

    @staticmethod
    def from_dict(d):
        def pick(cls, src):
            names = {f.name for f in dataclasses.fields(cls)}
            return cls(**{k: v for k, v in src.items() if k in names})
        vis = dict(d.get("vision_config") or {})
        if "embed_dim" not in vis and "hidden_size" in vis:  # hidden_size is an alias (§1.1)
            vis["embed_dim"] = vis["hidden_size"]
        cfg = pick(Config, {k: v for k, v in d.items() if k not in ("vision", "perceiver")})
        cfg.vision = pick(VisionConfig, vis)
        cfg.perceiver = pick(PerceiverConfig, d.get("perceiver_config") or {})
        rp = d.get("rope_parameters") or {}
        cfg.rope_theta = float(rp.get("rope_theta", d.get("rope_theta", 10000.0)))  # §1.4b
        if cfg.num_hidden_layers % cfg.cross_layer_interval:
            raise ValueError("num_hidden_layers must be a multiple of cross_layer_interval (§3.7)")
        return cfg

    @property
    def head_dim(self):
        return self.hidden_size // self.num_attention_heads

    @property
    def n_cross(self):
        return self.num_hidden_layers // self.cross_layer_interval

    @property
    def n_patches(self):
        return (self.vision.image_size // self.vision.patch_size) ** 2

    @property
    def image_tokens(self):
        """S: tokens per image in the cross-attention memory (§3 notation)."""
        return self.perceiver.resampler_n_latents if self.use_resampler else self.n_patches + 1

    @property
    def image_token_id(self):
        """`<image>` is the second additional token in IDEFICS checkpoints (README: 475/476 for the tiny models)."""
        return self.vocab_size + 1

    @property
    def fake_token_id(self):
        return self.vocab_size


def expected_tensors(cfg):
    """Every tensor name and shape of a checkpoint for this config (§2)."""
    H, I, V, A, hd = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size, cfg.additional_vocab_size, cfg.head_dim
    v, p = cfg.vision, cfg.perceiver
    E, C, ps = v.embed_dim, v.num_channels, v.patch_size
    t = {"model.embed_tokens.weight": (V, H), "model.norm.weight": (H,), "lm_head.weight": (V, H)}
    if A:
        t["model.embed_tokens.additional_embedding.weight"] = (A, H)
        t["lm_head.additional_fc.weight"] = (A, H)
    for i in range(cfg.num_hidden_layers):
        pre = f"model.layers.{i}."
        for n in "qkvo":
            t[pre + f"self_attn.{n}_proj.weight"] = (H, H)
        t[pre + "mlp.gate_proj.weight"] = (I, H)
        t[pre + "mlp.up_proj.weight"] = (I, H)
        t[pre + "mlp.down_proj.weight"] = (H, I)
        t[pre + "input_layernorm.weight"] = (H,)
        t[pre + "post_attention_layernorm.weight"] = (H,)
    alpha = (1,) if cfg.alpha_type == "float" else (1, 1, H)
    for m in range(cfg.n_cross):
        pre = f"model.gated_cross_attn_layers.{m}."
        t[pre + "alpha_cross_attn"] = alpha
        t[pre + "alpha_dense"] = alpha
        t[pre + "cross_attn.q_proj.weight"] = (H, H)
        t[pre + "cross_attn.k_proj.weight"] = (H, E)
        t[pre + "cross_attn.v_proj.weight"] = (H, E)
        t[pre + "cross_attn.o_proj.weight"] = (H, H)
        if cfg.qk_layer_norms:
            t[pre + "cross_attn.q_layer_norm.weight"] = (hd,)
            t[pre + "cross_attn.k_layer_norm.weight"] = (hd,)
        t[pre + "mlp.gate_proj.weight"] = (I, H)
        t[pre + "mlp.up_proj.weight"] = (I, H)
        t[pre + "mlp.down_proj.weight"] = (H, I)
        t[pre + "input_layernorm.weight"] = (H,)
        t[pre + "post_attention_layernorm.weight"] = (H,)
    vm = "model.vision_model."
    t[vm + "embeddings.class_embedding"] = (E,)
    t[vm + "embeddings.patch_embedding.weight"] = (E, C, ps, ps)
    t[vm + "embeddings.position_embedding.weight"] = (cfg.n_patches + 1, E)
    for n in ("pre_layrnorm", "post_layernorm"):
        t[vm + n + ".weight"] = (E,)
        t[vm + n + ".bias"] = (E,)
    for l in range(v.num_hidden_layers):
        pre = vm + f"encoder.layers.{l}."
        for n in ("k", "v", "q", "out"):
            t[pre + f"self_attn.{n}_proj.weight"] = (E, E)
            t[pre + f"self_attn.{n}_proj.bias"] = (E,)
        for n in ("layer_norm1", "layer_norm2"):
            t[pre + n + ".weight"] = (E,)
            t[pre + n + ".bias"] = (E,)
        t[pre + "mlp.fc1.weight"] = (v.intermediate_size, E)
        t[pre + "mlp.fc1.bias"] = (v.intermediate_size,)
        t[pre + "mlp.fc2.weight"] = (E, v.intermediate_size)
        t[pre + "mlp.fc2.bias"] = (E,)
    if cfg.use_resampler:
        inner, dh = p.resampler_n_heads * p.resampler_head_dim, p.resampler_head_dim
        pr = "model.perceiver_resampler."
        t[pr + "latents"] = (p.resampler_n_latents, E)
        for d in range(p.resampler_depth):
            a, m = pr + f"blocks.{d}.0.", pr + f"blocks.{d}.1."
            for n in ("context_layer_norm", "latents_layer_norm"):
                t[a + n + ".weight"] = (E,)
                t[a + n + ".bias"] = (E,)
            if p.qk_layer_norms_perceiver:
                for n in ("q_layer_norm", "k_layer_norm"):
                    t[a + n + ".weight"] = (dh,)
                    t[a + n + ".bias"] = (dh,)
            for n in "qkv":
                t[a + f"{n}_proj.weight"] = (inner, E)
            t[a + "output_proj.weight"] = (E, inner)
            t[m + "ln.weight"] = (E,)
            t[m + "ln.bias"] = (E,)
            t[m + "fc.weight"] = (4 * E, E)
            t[m + "c_proj.weight"] = (E, 4 * E)
        t[pr + "layer_norm.weight"] = (E,)
        t[pr + "layer_norm.bias"] = (E,)
    return t


def check_weights(cfg, weights):
    """Tie fallback (§2 'Not saved') and a name/shape check against expected_tensors."""
    if "lm_head.weight" not in weights and cfg.tie_word_embeddings:
        weights["lm_head.weight"] = weights["model.embed_tokens.weight"]
        if cfg.additional_vocab_size:
            weights["lm_head.additional_fc.weight"] = weights["model.embed_tokens.additional_embedding.weight"]
    for name, shape in expected_tensors(cfg).items():
        if name.startswith("model.vision_model.post_layernorm."):
            continue  # unused by IDEFICS (§3.2 step 6)
        if name not in weights:
            raise KeyError(f"checkpoint lacks {name}")
        if tuple(weights[name].shape) != tuple(shape):
            raise ValueError(f"{name}: shape {tuple(weights[name].shape)}, expected {tuple(shape)}")
    return weights


def random_weights(cfg, seed=0):
    """fp32 random weights with the config's shapes (for benchmarking shapes with no checkpoint): normal(0, std) for
    matrices/embeddings/latents, norm weights near 1, small biases, alphas 0.5 so that every path does work."""
    g = torch.Generator().manual_seed(seed)
    w = {}
    for name, shape in expected_tensors(cfg).items():
        if "alpha" in name:
            w[name] = torch.full(shape, 0.5)
        elif name.endswith(".bias"):
            w[name] = torch.randn(shape, generator=g) * 0.02
        elif len(shape) == 1 and name.endswith(".weight"):
            w[name] = 1.0 + 0.1 * torch.randn(shape, generator=g)
        else:
            w[name] = torch.randn(shape, generator=g) * cfg.initializer_range
    return w


# =========================================================================================== building blocks
def rms_norm(x, w, eps):
    """IdeficsRMSNorm (§3.5): x · rsqrt(mean(x²) + eps) · w (all float32 here)."""
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def layer_norm(x, W, prefix, eps):
    """nn.LayerNorm with weight and bias `prefix.{weight,bias}`."""
    return F.layer_norm(x, (x.shape[-1],), W[prefix + ".weight"], W[prefix + ".bias"], eps)


def activation(name):
    """ACT2FN (§1.1, §3.5): exact-erf gelu, quick_gelu, silu, relu."""
    return {"gelu": F.gelu, "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x), "silu": F.silu,
            "relu": F.relu, "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
            "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh")}[name]


def split_heads(x, heads):
    """[B, T, heads·d] → [B, heads, T, d]."""
    B, T, D = x.shape
    return x.view(B, T, heads, D // heads).transpose(1, 2)


def merge_heads(x):
    """[B, heads, T, d] → [B, T, heads·d]."""
    B, h, T, d = x.shape
    return x.transpose(1, 2).reshape(B, T, h * d)


def attention(q, k, v, scale, mask=None):
    """Eager attention: softmax(q·kᵀ·scale + mask)·v, softmax in float32 (§3.2 step 5, §3.5, §3.6 step 4)."""
    s = torch.matmul(q, k.transpose(-1, -2)) * scale
    if mask is not None:
        s = s + mask
    return torch.matmul(torch.softmax(s, dim=-1), v)


def swiglu_mlp(x, W, prefix, act):
    """LLaMA MLP (§3.5): down(act(gate(x)) ⊙ up(x)); also the dense branch of the cross block (§3.6 step 7)."""
    return F.linear(act(F.linear(x, W[prefix + ".gate_proj.weight"])) * F.linear(x, W[prefix + ".up_proj.weight"]),
                    W[prefix + ".down_proj.weight"])


# =========================================================================================== vision (§3.2)
def vision_embeddings(cfg, W, pixels):
    """§3.2 steps 1-3: conv patch embedding (kernel = stride = p, no bias), CLS prepended, position embeddings."""
    v = cfg.vision
    if pixels.shape[-1] != v.image_size or pixels.shape[-2] != v.image_size:
        raise ValueError(f"pixels are {tuple(pixels.shape[-2:])}, the model wants {v.image_size}x{v.image_size} "
                         "(interpolate_pos_encoding is not implemented here)")
    pre = "model.vision_model.embeddings."
    x = F.conv2d(pixels, W[pre + "patch_embedding.weight"], stride=v.patch_size)  # [B', E, g, g]
    x = x.flatten(2).transpose(1, 2)  # [B', Np, E], patches row-major
    cls = W[pre + "class_embedding"].view(1, 1, -1).expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1)
    return x + W[pre + "position_embedding.weight"][: x.shape[1]]


def vision_layer(cfg, W, l, h):
    """§3.2 step 5: one pre-LN CLIP encoder layer (biased projections, no mask)."""
    v = cfg.vision
    pre = f"model.vision_model.encoder.layers.{l}."
    a = layer_norm(h, W, pre + "layer_norm1", v.layer_norm_eps)
    proj = lambda n: split_heads(F.linear(a, W[pre + f"self_attn.{n}_proj.weight"], W[pre + f"self_attn.{n}_proj.bias"]),
                                 v.num_attention_heads)
    q, k, vv = proj("q"), proj("k"), proj("v")
    o = merge_heads(attention(q, k, vv, (v.embed_dim // v.num_attention_heads) ** -0.5))
    h = h + F.linear(o, W[pre + "self_attn.out_proj.weight"], W[pre + "self_attn.out_proj.bias"])
    m = layer_norm(h, W, pre + "layer_norm2", v.layer_norm_eps)
    m = activation(v.hidden_act)(F.linear(m, W[pre + "mlp.fc1.weight"], W[pre + "mlp.fc1.bias"]))
    return h + F.linear(m, W[pre + "mlp.fc2.weight"], W[pre + "mlp.fc2.bias"])


def vision_transformer(cfg, W, pixels):
    """§3.2: [B', C, H, W] normalised pixels → last_hidden_state [B', Np+1, E] (CLS included, NO post_layernorm)."""
    h = vision_embeddings(cfg, W, pixels)
    h = layer_norm(h, W, "model.vision_model.pre_layrnorm", cfg.vision.layer_norm_eps)
    for l in range(cfg.vision.num_hidden_layers):
        h = vision_layer(cfg, W, l, h)
    return h


# =========================================================================================== perceiver (§3.3)
def perceiver_attention(cfg, W, d, x, z):
    """§3.3 step 1: latents attend to [context ; latents]; LayerNorms eps 1e-5; scale multiplied into q;
    row-max-subtracted softmax; output_proj back to E."""
    p = cfg.perceiver
    pre = f"model.perceiver_resampler.blocks.{d}.0."
    xn = layer_norm(x, W, pre + "context_layer_norm", 1e-5)
    zn = layer_norm(z, W, pre + "latents_layer_norm", 1e-5)
    kv_in = torch.cat([xn, zn], dim=1)
    q = split_heads(F.linear(zn, W[pre + "q_proj.weight"]), p.resampler_n_heads)
    k = split_heads(F.linear(kv_in, W[pre + "k_proj.weight"]), p.resampler_n_heads)
    v = split_heads(F.linear(kv_in, W[pre + "v_proj.weight"]), p.resampler_n_heads)
    if p.qk_layer_norms_perceiver:
        q = layer_norm(q, W, pre + "q_layer_norm", 1e-5)
        k = layer_norm(k, W, pre + "k_layer_norm", 1e-5)
    q = q * p.resampler_head_dim ** -0.5
    s = torch.matmul(q, k.transpose(-1, -2))
    s = s - s.amax(dim=-1, keepdim=True)
    out = merge_heads(torch.matmul(torch.softmax(s, dim=-1), v))
    return F.linear(out, W[pre + "output_proj.weight"])


def perceiver_mlp(cfg, W, d, z):
    """§3.3 step 2: c_proj(ReLU(fc(LN(z)))), no biases, width 4E."""
    pre = f"model.perceiver_resampler.blocks.{d}.1."
    h = layer_norm(z, W, pre + "ln", 1e-5)
    return F.linear(F.relu(F.linear(h, W[pre + "fc.weight"])), W[pre + "c_proj.weight"])


def perceiver_resampler(cfg, W, x):
    """§3.3: context [B', S0, E] → [B', nL, E]; every block re-reads the same raw context; final LayerNorm."""
    z = W["model.perceiver_resampler.latents"].unsqueeze(0).expand(x.shape[0], -1, -1)
    for d in range(cfg.perceiver.resampler_depth):
        z = z + perceiver_attention(cfg, W, d, x, z)
        z = z + perceiver_mlp(cfg, W, d, z)
    return layer_norm(z, W, "model.perceiver_resampler.layer_norm", 1e-5)


def encode_images(cfg, W, pixel_values):
    """§3.1 steps 4-5: pixel_values [B, N, C, H, W] → (ViT output [B·N, S0, E], image memory [B, N, S, E]).
    Zero-filled padding images run through like the others (§6 last pitfall)."""
    B, N = pixel_values.shape[:2]
    vis = vision_transformer(cfg, W, pixel_values.reshape(B * N, *pixel_values.shape[2:]).float())
    mem = perceiver_resampler(cfg, W, vis) if cfg.use_resampler else vis
    return vis, mem.reshape(B, N, mem.shape[1], mem.shape[2])


# =========================================================================================== text decoder (§3.5-3.8)
def embed_tokens(cfg, W, ids):
    """DecoupledEmbedding (§3.5): ids < V from embed_tokens, ids ≥ V from additional_embedding."""
    V = cfg.vocab_size
    x = W["model.embed_tokens.weight"][ids.clamp(max=V - 1)]
    if cfg.additional_vocab_size:
        extra = W["model.embed_tokens.additional_embedding.weight"][(ids - V).clamp(min=0)]
        x = torch.where((ids >= V).unsqueeze(-1), extra, x)
    return x


def rope_cos_sin(cfg, pos):
    """RoPE tables (§3.5): inv_freq[j] = theta^(-2j/hd), angle = pos·inv_freq, duplicated over both halves.
    pos [B, T] → cos, sin [B, 1, T, hd]."""
    hd = cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
    ang = pos.float().unsqueeze(-1) * inv_freq
    emb = torch.cat([ang, ang], dim=-1).unsqueeze(1)
    return emb.cos(), emb.sin()


def apply_rope(x, cos, sin):
    """x·cos + rotate_half(x)·sin, rotate_half(x) = [−x2, x1] (GPT-NeoX style, §3.5)."""
    h = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., h:], x[..., :h]], dim=-1) * sin


class KVCache:
    """Self-attention K/V per decoder layer, preallocated [B, heads, capacity, hd]; rows are aligned (left padding),
    so one length serves the batch. Rotated keys are stored (§3.5)."""

    def __init__(self, cfg, batch, capacity):
        shape = (batch, cfg.num_attention_heads, capacity, cfg.head_dim)
        self.k = [torch.zeros(shape) for _ in range(cfg.num_hidden_layers)]
        self.v = [torch.zeros(shape) for _ in range(cfg.num_hidden_layers)]
        self.length = 0

    def update(self, layer, k, v):
        """Write this step's k, v after the cached ones; return the keys/values so far (views)."""
        end = self.length + k.shape[2]
        if end > self.k[layer].shape[2]:
            grow = max(end, 2 * self.k[layer].shape[2]) - self.k[layer].shape[2]
            pad = lambda t: torch.cat([t, t.new_zeros(t.shape[0], t.shape[1], grow, t.shape[3])], dim=2)
            self.k[layer], self.v[layer] = pad(self.k[layer]), pad(self.v[layer])
        self.k[layer][:, :, self.length:end] = k
        self.v[layer][:, :, self.length:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]

    def advance(self, n):
        self.length += n


def self_attention(cfg, W, i, x, cos, sin, mask, cache):
    """§3.5 self-attention: bias-free q/k/v, RoPE on q and k, cache append, causal+padding mask, o_proj."""
    pre = f"model.layers.{i}.self_attn."
    nh = cfg.num_attention_heads
    q = apply_rope(split_heads(F.linear(x, W[pre + "q_proj.weight"]), nh), cos, sin)
    k = apply_rope(split_heads(F.linear(x, W[pre + "k_proj.weight"]), nh), cos, sin)
    v = split_heads(F.linear(x, W[pre + "v_proj.weight"]), nh)
    if cache is not None:
        k, v = cache.update(i, k, v)
    o = merge_heads(attention(q, k, v, cfg.head_dim ** -0.5, mask))
    return F.linear(o, W[pre + "o_proj.weight"])


def decoder_layer(cfg, W, i, h, cos, sin, mask, cache):
    """§3.5: h += SelfAttn(RMSNorm_in(h)); h += MLP(RMSNorm_post(h))."""
    pre = f"model.layers.{i}."
    eps = cfg.rms_norm_eps
    h = h + self_attention(cfg, W, i, rms_norm(h, W[pre + "input_layernorm.weight"], eps), cos, sin, mask, cache)
    return h + swiglu_mlp(rms_norm(h, W[pre + "post_attention_layernorm.weight"], eps), W, pre + "mlp",
                          activation(cfg.hidden_act))


def cross_kv(cfg, W, memory):
    """§3.6 step 2-3 for the image side: K, V of every cross block from the image memory [B, N, S, E], computed
    once per request (HF recomputes them each step; same numbers). k gets the RMSNorm if qk_layer_norms."""
    B, N, S, E = memory.shape
    y = memory.reshape(B, N * S, E)  # image-major (§3.1 step 6)
    out = []
    for m in range(cfg.n_cross):
        pre = f"model.gated_cross_attn_layers.{m}.cross_attn."
        k = split_heads(F.linear(y, W[pre + "k_proj.weight"]), cfg.num_attention_heads)
        v = split_heads(F.linear(y, W[pre + "v_proj.weight"]), cfg.num_attention_heads)
        if cfg.qk_layer_norms:
            k = rms_norm(k, W[pre + "k_layer_norm.weight"], cfg.rms_norm_eps)
        out.append((k, v))
    return out


def image_mask_and_gate(cfg, image_attention_mask, S):
    """§3.4: [B, T, N] 0/1 → additive mask [B, 1, T, N·S] (0 / finfo.min) and gate [B, T] (1 if any image seen)."""
    allowed = (image_attention_mask != 0).repeat_interleave(S, dim=2)  # M[b,t,n·S+s] = mask[b,t,n]
    add = torch.zeros(allowed.shape).masked_fill(~allowed, NEG).unsqueeze(1)
    return add, allowed.any(dim=-1)


def gated_cross_block(cfg, W, m, h, kv, img_mask, gate):
    """§3.6: gated cross-attention then the tanh-gated dense branch (which is NOT gated by the image gate)."""
    pre = f"model.gated_cross_attn_layers.{m}."
    eps = cfg.rms_norm_eps
    a = rms_norm(h, W[pre + "input_layernorm.weight"], eps)
    q = split_heads(F.linear(a, W[pre + "cross_attn.q_proj.weight"]), cfg.num_attention_heads)
    if cfg.qk_layer_norms:
        q = rms_norm(q, W[pre + "cross_attn.q_layer_norm.weight"], eps)
    k, v = kv
    o = F.linear(merge_heads(attention(q, k, v, cfg.head_dim ** -0.5, img_mask)), W[pre + "cross_attn.o_proj.weight"])
    o = o.masked_fill(~gate.unsqueeze(-1), 0.0)  # step 5: tokens that see no image get exact zeros
    h = h + torch.tanh(W[pre + "alpha_cross_attn"]) * o
    d = swiglu_mlp(rms_norm(h, W[pre + "post_attention_layernorm.weight"], eps), W, pre + "mlp", activation(cfg.hidden_act))
    return h + torch.tanh(W[pre + "alpha_dense"]) * d


def lm_head(cfg, W, h):
    """IdeficsDecoupledLinear (§3.8): [h·W_lmᵀ, h·W_addᵀ] → width V + A."""
    logits = F.linear(h, W["lm_head.weight"])
    if cfg.additional_vocab_size:
        logits = torch.cat([logits, F.linear(h, W["lm_head.additional_fc.weight"])], dim=-1)
    return logits


def causal_mask(attention_mask, T):
    """§3.5: query t of this chunk (absolute past+t) sees keys 0..past+t whose attention_mask is 1.
    attention_mask [B, past+T] → additive [B, 1, T, past+T]."""
    B, total = attention_mask.shape
    past = total - T
    causal = torch.arange(total).unsqueeze(0) <= (past + torch.arange(T)).unsqueeze(1)  # [T, total]
    allowed = causal.unsqueeze(0) & (attention_mask != 0).unsqueeze(1)
    return torch.zeros(allowed.shape).masked_fill(~allowed, NEG).unsqueeze(1)


def positions_from_mask(attention_mask):
    """§3.1 step 3: cumsum(mask) − 1, with 1 at masked slots."""
    pos = attention_mask.long().cumsum(-1) - 1
    return pos.masked_fill(attention_mask == 0, 1)


def text_forward(cfg, W, input_ids, attention_mask, position_ids, image_attention_mask, kv, cache=None,
                 last_only=False):
    """§3.1 steps 1, 7-12 with the image side precomputed (`kv` from cross_kv): input_ids [B, T],
    attention_mask [B, past+T], position_ids [B, T], image_attention_mask [B, T, N] → logits [B, T, V+A]
    (only the last position if last_only). Appends to `cache` (and advances it) when one is given."""
    T = input_ids.shape[1]
    S = kv[0][0].shape[2] // image_attention_mask.shape[2] if kv else 1
    h = embed_tokens(cfg, W, input_ids)
    cos, sin = rope_cos_sin(cfg, position_ids)
    mask = causal_mask(attention_mask, T)
    img_mask, gate = image_mask_and_gate(cfg, image_attention_mask, S)
    for i in range(cfg.num_hidden_layers):  # §3.7
        if i % cfg.cross_layer_interval == 0:
            h = gated_cross_block(cfg, W, i // cfg.cross_layer_interval, h, kv[i // cfg.cross_layer_interval], img_mask, gate)
        h = decoder_layer(cfg, W, i, h, cos, sin, mask, cache)
    if cache is not None:
        cache.advance(T)
    if last_only:
        h = h[:, -1:]
    return lm_head(cfg, W, rms_norm(h, W["model.norm.weight"], cfg.rms_norm_eps))


class Model:
    """A loaded IDEFICS: config + float32 weights, with the whole-model entry points."""

    def __init__(self, cfg, weights):
        self.cfg = cfg
        self.W = check_weights(cfg, {k: v.float().contiguous() for k, v in weights.items()})

    @staticmethod
    def load(folder):
        folder = Path(folder)
        cfg = Config.from_dict(json.loads((folder / "config.json").read_text()))
        return Model(cfg, load_checkpoint(folder))

    @staticmethod
    def random(config_json, seed=0):
        cfg = Config.from_dict(json.loads(Path(config_json).read_text()))
        return Model(cfg, random_weights(cfg, seed))

    def n_params(self):
        return sum(v.numel() for k, v in self.W.items() if not k.startswith("model.vision_model.post_layernorm"))

    def encode(self, pixel_values):
        """pixel_values [B, N, C, H, W] → (ViT output, image memory [B, N, S, E])."""
        return encode_images(self.cfg, self.W, pixel_values)

    def cross_kv(self, memory):
        return cross_kv(self.cfg, self.W, memory)

    def forward(self, input_ids, attention_mask, pixel_values, image_attention_mask, position_ids=None):
        """Whole forward without a cache (§3.1): logits [B, T, V+A] and the image memory."""
        if position_ids is None:
            position_ids = positions_from_mask(attention_mask)
        _, mem = self.encode(pixel_values)
        return text_forward(self.cfg, self.W, input_ids, attention_mask, position_ids, image_attention_mask,
                            self.cross_kv(mem)), mem

    def prefill(self, input_ids, attention_mask, image_attention_mask, kv, extra_capacity=0):
        """Prompt pass with a fresh KV cache: → (last-position logits [B, 1, V+A], cache)."""
        cache = KVCache(self.cfg, input_ids.shape[0], input_ids.shape[1] + extra_capacity)
        logits = text_forward(self.cfg, self.W, input_ids, attention_mask, positions_from_mask(attention_mask),
                              image_attention_mask, kv, cache, last_only=True)
        return logits, cache

    def decode(self, first_logits, cache, attention_mask, image_attention_mask, kv, n_new):
        """Greedy decode of n_new tokens from the prefill's logits (§4 generation): each new token reuses the last
        prompt row of the image mask; positions come from the growing attention mask. → ids [B, n_new]."""
        B = first_logits.shape[0]
        img_row = image_attention_mask[:, -1:, :]
        am = attention_mask
        logits = first_logits
        out = []
        for step in range(n_new):
            tok = logits[:, -1].argmax(dim=-1, keepdim=True)
            out.append(tok)
            if step == n_new - 1:
                break
            am = torch.cat([am, am.new_ones(B, 1)], dim=1)
            pos = am.long().sum(dim=1, keepdim=True) - 1
            logits = text_forward(self.cfg, self.W, tok, am, pos, img_row, kv, cache)
        return torch.cat(out, dim=1)

    def generate(self, input_ids, attention_mask, pixel_values, image_attention_mask, n_new):
        """Greedy generation with the KV cache, end-of-sequence ignored: → new ids [B, n_new]."""
        _, mem = self.encode(pixel_values)
        kv = self.cross_kv(mem)
        logits, cache = self.prefill(input_ids, attention_mask, image_attention_mask, kv, n_new)
        return self.decode(logits, cache, attention_mask, image_attention_mask, kv, n_new)


# =========================================================================================== inputs (§5)
def image_attention_mask_for(ids, image_id, eos_id, n_images):
    """§5.1: one-hot [T, n_images] — each token sees the most recent <image> at or before it, none after an EOS
    (strictly earlier) with no <image> since, none before the first image."""
    rows = torch.zeros(len(ids), max(n_images, 1), dtype=torch.long)
    count, after_eos = -1, False
    for t, tok in enumerate(ids):
        if tok == image_id:
            count += 1
            after_eos = False
        cur = -1 if after_eos else count
        if tok == eos_id:
            after_eos = True
        if 0 <= cur < n_images:
            rows[t, cur] = 1
    return rows


def load_image(path, size):
    """§5.2 (PIL backend): RGB (transparent images composited over white), bicubic resize to size×size when needed,
    /255, CLIP mean/std → float32 [3, size, size]."""
    from PIL import Image
    im = Image.open(path)
    if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, rgba)
    im = im.convert("RGB")
    if im.size != (size, size):
        im = im.resize((size, size), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(im, dtype=np.float32).copy()).permute(2, 0, 1) / 255.0
    return (x - torch.tensor(CLIP_MEAN).view(3, 1, 1)) / torch.tensor(CLIP_STD).view(3, 1, 1)


# =========================================================================================== check
def data_path(*names):
    """tests/data/<names> if present, else ../shared/reference/<names>."""
    for base in (REPO / "tests" / "data", SHARED_REF):
        p = base.joinpath(*names)
        if p.exists():
            return p
    raise FileNotFoundError("/".join(names) + " in tests/data or " + str(SHARED_REF))


def rel_err(got, ref):
    """max|got − ref| / max|ref|."""
    return float((got.float() - ref.float()).abs().max() / ref.float().abs().max().clamp(min=1e-30))


def check_tiny(name, tol):
    """One tiny-idefics golden: vision, perceiver, logits at real positions, text-only logits, greedy ids."""
    folder = data_path(name)
    m = Model.load(folder)
    g = read_safetensors(folder / "golden.safetensors")
    ids, am, px, im = g["input_ids"], g["attention_mask"], g["pixel_values"], g["image_attention_mask"]
    res = {}
    vis, mem = m.encode(px)
    res["vision_last_hidden_state"] = rel_err(vis, g["vision_last_hidden_state"])
    res["perceiver_output"] = rel_err(mem, g["perceiver_output"])
    logits = text_forward(m.cfg, m.W, ids, am, g["position_ids"], im, m.cross_kv(mem))
    real = am.bool()
    res["logits"] = rel_err(logits[real], g["logits"][real])
    # the same logits through the cached path: prefill all but the last token, then one step (exercises the cache)
    kv = m.cross_kv(mem)
    cache = KVCache(m.cfg, ids.shape[0], ids.shape[1])
    pos = positions_from_mask(am)
    text_forward(m.cfg, m.W, ids[:, :-1], am[:, :-1], pos[:, :-1], im[:, :-1], kv, cache)
    step = text_forward(m.cfg, m.W, ids[:, -1:], am, pos[:, -1:], im[:, -1:], kv, cache)
    res["logits_last_via_cache"] = rel_err(step[:, 0], g["logits"][:, -1])
    tid = g["textonly_input_ids"]
    tl, _ = m.forward(tid, torch.ones_like(tid), torch.zeros(1, 1, m.cfg.vision.num_channels, m.cfg.vision.image_size,
                                                             m.cfg.vision.image_size),
                      torch.zeros(1, tid.shape[1], 1, dtype=torch.long))
    res["textonly_logits"] = rel_err(tl, g["textonly_logits"])
    ok = all(v <= tol for v in res.values())
    gen = m.generate(ids, am, px, im, g["generated_ids"].shape[1])
    gen_ok = torch.equal(gen, g["generated_ids"])
    return dict(errors=res, generated_ids=gen.tolist(), generated_match=gen_ok, ok=ok and gen_ok, folder=str(folder))


def check_shapes(model_dir, cases_path, limit=None):
    """shapes-cases: greedy 24 ids per case from prompt_ids and the PNG images must equal HF's greedy_ids."""
    m = Model.load(model_dir)
    cases = json.loads(Path(cases_path).read_text())[:limit]
    size = m.cfg.vision.image_size
    matched, rows = 0, []
    for i, c in enumerate(cases):
        files = [p["image"] for p in c["parts"] if "image" in p]
        ids = torch.tensor([c["prompt_ids"]])
        px = torch.stack([load_image(Path(cases_path).parent / f, size) for f in files]).unsqueeze(0)
        im = image_attention_mask_for(c["prompt_ids"], m.cfg.image_token_id, m.cfg.eos_token_id, len(files)).unsqueeze(0)
        gen = m.generate(ids, torch.ones_like(ids), px, im, len(c["greedy_ids"]))[0].tolist()
        same = gen == c["greedy_ids"]
        matched += same
        n_prefix = next((j for j, (a, b) in enumerate(zip(gen, c["greedy_ids"])) if a != b), len(gen))
        rows.append(dict(case=i, task=c["task"], shots=c["shots"], match=same, matching_prefix=n_prefix))
        if not same:
            log(f"  shapes case {i} ({c['task']}, {c['shots']}-shot): differs at new token {n_prefix}: "
                f"{gen} vs {c['greedy_ids']}")
    return dict(matched=matched, total=len(cases), cases=rows, ok=matched == len(cases))


def check_preprocess():
    """Informational: load_image against preprocess_golden.safetensors (FILE@64 / FILE@224) — PIL version dependent."""
    if importlib.util.find_spec("PIL") is None:
        return None
    try:
        gold = read_safetensors(data_path("preprocess", "preprocess_golden.safetensors"))
    except FileNotFoundError:
        return None
    out = {}
    for key, ref in gold.items():
        fn, size = key.rsplit("@", 1)
        p = data_path("preprocess", fn)
        out[key] = float((load_image(p, int(size)) - ref).abs().max())
    return out


def check_processor():
    """processor_golden.safetensors (one HF IdeficsProcessor call): the image attention mask from its input_ids must be
    equal (§5.1 rule); its 224-px pixels are compared for information (HF used torchvision's antialiased bicubic)."""
    try:
        g = read_safetensors(data_path("preprocess", "processor_golden.safetensors"))
    except FileNotFoundError:
        return None
    ids = g["processor/input_ids"][0].tolist()
    ref_mask = g["processor/image_attention_mask"][0]
    n = ref_mask.shape[1]
    # token ids of the tokenizer shared by all reference models: 475 fake, 476 <image>, 2 </s>
    mask_ok = torch.equal(image_attention_mask_for(ids, 476, 2, n), ref_mask)
    out = dict(image_attention_mask_match=mask_ok, ok=mask_ok)
    if importlib.util.find_spec("PIL") is not None:
        files = ["rgb_64x64.png", "rgb_100x75.png"]  # the processor call's images (README, preprocess/)
        px = torch.stack([load_image(data_path("preprocess", f), 224) for f in files])
        d = (px - g["processor/pixel_values"][0]).abs()
        out.update(pixel_max_abs_diff=float(d.max()), pixel_mean_abs_diff=float(d.mean()))
    return out


def cmd_check(args):
    torch.set_num_threads(args.threads)
    report = {"tolerance": args.tol, "tiny": {}}
    all_ok = True
    with torch.inference_mode():
        for name in ("tiny-idefics-a", "tiny-idefics-b", "tiny-idefics-c"):
            t = time.time()
            r = check_tiny(name, args.tol)
            report["tiny"][name] = r
            all_ok &= r["ok"]
            errs = "  ".join(f"{k} {v:.2e}" for k, v in r["errors"].items())
            log(f"{name}: {errs}  greedy {'match' if r['generated_match'] else 'MISMATCH'}  "
                f"{'ok' if r['ok'] else 'FAIL'}  ({time.time() - t:.1f}s)")
        if not args.skip_shapes:
            t = time.time()
            model_dir = Path(args.model) if args.model else (REPO / "models" / "shapes-idefics")
            if not (model_dir / "config.json").exists():
                model_dir = SHARED_REF / "shapes-idefics"
            r = check_shapes(model_dir, data_path("shapes-cases", "cases.json"), args.limit)
            report["shapes"] = r
            all_ok &= r["ok"]
            log(f"shapes-cases: {r['matched']}/{r['total']} greedy sequences match  ({time.time() - t:.1f}s)")
        proc = check_processor()
        if proc is not None:
            report["processor"] = proc
            all_ok &= proc["ok"]
            log(f"processor golden: image_attention_mask {'match' if proc['image_attention_mask_match'] else 'MISMATCH'}"
                + (f"; pixels (informational) max |diff| {proc['pixel_max_abs_diff']:.3g}, mean "
                   f"{proc['pixel_mean_abs_diff']:.2g}" if "pixel_max_abs_diff" in proc else ""))
        pre = check_preprocess()
        if pre is not None:
            report["preprocess_max_abs_diff"] = pre
            log(f"preprocess (informational): max |diff| over {len(pre)} images {max(pre.values()):.3g} "
                f"(one 8-bit level is ~{1 / 255 / min(CLIP_STD):.3g})")
    report["ok"] = all_ok
    if args.json:
        print(json.dumps(report, indent=1))
    log("check: " + ("PASS" if all_ok else "FAIL"))
    return 0 if all_ok else 1


# =========================================================================================== bench
def blas_library():
    """The BLAS shared library this process has mapped (Debian's torch links libblas.so.3, chosen by
    update-alternatives: the reference BLAS is ~25x slower than OpenBLAS here — apt-get install libopenblas0-openmp,
    which libtorch Recommends)."""
    try:
        with open("/proc/self/maps") as f:
            libs = {l.split()[-1] for l in f if "blas" in l.rsplit("/", 1)[-1] or "blis" in l.rsplit("/", 1)[-1]}
    except OSError:
        return "unknown"
    return ",".join(sorted(libs)) or "none"


def timed(fn, warmup, reps, label):
    """Run fn warmup times, then reps timed runs; → dict(median, min, runs) in seconds."""
    for _ in range(warmup):
        fn()
    runs = []
    for r in range(reps):
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    log(f"  {label}: median {statistics.median(runs) * 1e3:.2f} ms over {reps} runs")
    return dict(median_s=statistics.median(runs), min_s=min(runs), runs_s=runs)


def bench_prompt(cfg, batch, T, seed=0):
    """The benchmark prompt (as ../shared/reference/refgen stage_bench): [BOS, fake, <image>, fake, text…] of T tokens,
    one random normalised image per row, every token from the <image> on sees it."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, cfg.vocab_size, (batch, T), generator=g)
    ids[:, 0] = cfg.bos_token_id
    if cfg.additional_vocab_size >= 2:
        ids[:, 1:4] = torch.tensor([cfg.fake_token_id, cfg.image_token_id, cfg.fake_token_id])
    im = torch.zeros(batch, T, 1, dtype=torch.long)
    im[:, 2:, 0] = 1
    px = torch.randn(batch, 1, cfg.vision.num_channels, cfg.vision.image_size, cfg.vision.image_size, generator=g)
    return ids, torch.ones_like(ids), px, im


def cmd_bench(args):
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load_before = os.getloadavg()
    t0 = time.time()
    if args.random_weights:
        m, source = Model.random(args.random_weights), "random:" + str(args.random_weights)
    else:
        m, source = Model.load(args.model), str(args.model)
    cfg = m.cfg
    load_s = time.time() - t0
    torch.mm(torch.ones(2, 2), torch.ones(2, 2))  # make sure the BLAS is loaded before looking for it
    blas = blas_library()
    if "openblas" not in blas and "blis" not in blas and "mkl" not in blas:
        log(f"warning: BLAS is {blas} (the reference BLAS?): matmuls will be very slow; "
            "apt-get install libopenblas0-openmp")
    log(f"torch_ref bench: {source}, {m.n_params():,} parameters, float32 on CPU, {torch.get_num_threads()} threads "
        f"(loaded in {load_s:.1f}s)")
    enc_b = args.batch or [1, 16]
    gen_b = args.batch or [1, 8]
    T, NEW = args.prompt_tokens, args.new_tokens
    only = set(args.only.split(",")) if args.only else {"encode", "prefill", "decode", "ttft"}
    res = {"encode": {}, "prefill": {}, "prefill_with_encode": {}, "decode": {}}
    with torch.inference_mode():
        if "encode" in only:
            for b in enc_b:
                px = torch.randn(b, 1, cfg.vision.num_channels, cfg.vision.image_size, cfg.vision.image_size)
                r = timed(lambda: m.encode(px), args.warmup, args.reps, f"encode b{b}")
                r.update(images=b, s_per_image=r["median_s"] / b, images_per_s=b / r["median_s"])
                res["encode"][f"b{b}"] = r
        for b in gen_b:
            ids, am, px, im = bench_prompt(cfg, b, T)
            _, mem = m.encode(px)
            kv = m.cross_kv(mem)
            if "prefill" in only:
                r = timed(lambda: m.prefill(ids, am, im, kv, NEW), args.warmup, args.reps, f"prefill b{b} T{T}")
                r.update(tokens=b * T, tokens_per_s=b * T / r["median_s"])
                res["prefill"][f"b{b}"] = r

                def full_prefill():
                    _, mm = m.encode(px)
                    return m.prefill(ids, am, im, m.cross_kv(mm), NEW)
                r = timed(full_prefill, args.warmup, args.reps, f"prefill+encode b{b} T{T}")
                r.update(tokens=b * T, tokens_per_s=b * T / r["median_s"])
                res["prefill_with_encode"][f"b{b}"] = r
            if "decode" in only:
                # each repetition decodes NEW tokens after a fresh (untimed) prefill; the first token comes from
                # the prefill's logits, so NEW−1 forward steps run (as in generate)
                runs = []
                for rep in range(args.warmup + args.reps):
                    logits, cache = m.prefill(ids, am, im, kv, NEW)
                    t = time.perf_counter()
                    m.decode(logits, cache, am, im, kv, NEW)
                    if rep >= args.warmup:
                        runs.append(time.perf_counter() - t)
                med = statistics.median(runs)
                steps = max(NEW - 1, 1)
                log(f"  decode b{b} {NEW} new: median {med * 1e3:.1f} ms, {med / steps * 1e3:.2f} ms/step")
                res["decode"][f"b{b}"] = dict(median_s=med, min_s=min(runs), runs_s=runs, new_tokens=NEW, steps=steps,
                                              s_per_step=med / steps, tokens_per_s=b * steps / med,
                                              stream_tokens_per_s=steps / med)
        if "ttft" in only:
            ids, am, px, im = bench_prompt(cfg, 1, T)

            def first_token():
                _, mm = m.encode(px)
                logits, _ = m.prefill(ids, am, im, m.cross_kv(mm), 1)
                return int(logits[0, -1].argmax())
            res["ttft"] = timed(first_token, args.warmup, args.reps, f"time to first token T{T}")
    out = dict(
        tool="bench/torch_ref.py", model=source, params=m.n_params(), dtype="float32", device="cpu",
        threads=torch.get_num_threads(), omp_wait_policy=os.environ.get("OMP_WAIT_POLICY"), blas=blas,
        torch=torch.__version__, python=platform.python_version(),
        machine=platform.machine(), cpus=os.cpu_count(), host=platform.node(),
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        loadavg_before=load_before, loadavg_after=os.getloadavg(), prompt_tokens=T, new_tokens=NEW, warmup=args.warmup, reps=args.reps, load_s=load_s,
        definitions=dict(
            encode="vision transformer + perceiver for b images of the model's size (median time per call)",
            prefill=f"text forward of a {T}-token prompt (one image: <image> at index 2) into a fresh KV cache, image "
                    "features and cross K/V precomputed; last-position logits",
            prefill_with_encode="prefill including the image encode and the cross K/V projection",
            decode=f"{NEW} greedy new tokens after the prefill ({NEW}-1 forward steps with the KV cache and the "
                   "cross-attention over the cached image K/V); tokens_per_s counts all streams",
            ttft=f"batch 1: image encode + cross K/V + {T}-token prefill + argmax"),
        results=res)
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        print(f"{source}: {m.n_params():,} params, {out['threads']} threads, torch {torch.__version__}, {blas}")
        for b, r in res["encode"].items():
            print(f"encode          {b:>4}: {r['s_per_image'] * 1e3:9.2f} ms/image  {r['images_per_s']:9.1f} images/s")
        for b, r in res["prefill"].items():
            print(f"prefill         {b:>4}: {r['median_s'] * 1e3:9.2f} ms        {r['tokens_per_s']:9.1f} tokens/s")
        for b, r in res["prefill_with_encode"].items():
            print(f"prefill+encode  {b:>4}: {r['median_s'] * 1e3:9.2f} ms        {r['tokens_per_s']:9.1f} tokens/s")
        for b, r in res["decode"].items():
            print(f"decode          {b:>4}: {r['s_per_step'] * 1e3:9.2f} ms/step   {r['tokens_per_s']:9.1f} tokens/s")
        if "ttft" in res:
            print(f"time to first token  : {res['ttft']['median_s'] * 1e3:9.2f} ms")
    return 0


# =========================================================================================== main
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="reproduce the reference goldens")
    c.add_argument("--tol", type=float, default=1e-4, help="max relative error per tensor (default 1e-4)")
    c.add_argument("--model", help="demo model folder for shapes-cases (default models/shapes-idefics)")
    c.add_argument("--limit", type=int, help="only the first N shapes cases")
    c.add_argument("--skip-shapes", action="store_true")
    c.add_argument("--threads", type=int, default=2)
    c.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    b = sub.add_parser("bench", help="time encode / prefill / decode / time to first token")
    src = b.add_mutually_exclusive_group()
    src.add_argument("--model", default=str(REPO / "models" / "shapes-idefics"), help="checkpoint folder")
    src.add_argument("--random-weights", metavar="CONFIG.json", help="random fp32 weights with this config's shapes")
    b.add_argument("--batch", type=lambda s: [int(x) for x in s.split(",")],
                   help="batch size(s), comma-separated, for every section (default: encode 1,16; prefill/decode 1,8)")
    b.add_argument("--only", help="comma list of sections: encode,prefill,decode,ttft")
    b.add_argument("--prompt-tokens", type=int, default=64)
    b.add_argument("--new-tokens", type=int, default=64)
    b.add_argument("--warmup", type=int, default=2)
    b.add_argument("--reps", type=int, default=5)
    b.add_argument("--threads", type=int, default=2)
    b.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    args = ap.parse_args(argv)
    return cmd_check(args) if args.cmd == "check" else cmd_bench(args)


if __name__ == "__main__":
    sys.exit(main())
