"""RoPE goldens for the mllama text decoder: HF's llama3-scaled inverse frequencies.

Run with the reference venv (never in CI):
    ref/bin/python refgen/mllama/make_text_goldens.py [DATA_DIR]
DATA_DIR defaults to tests/data/mllama. For each tiny-mllama-*/config.json there it writes
tiny-mllama-*/text_golden.safetensors with

    rope_inv_freq      [head_dim/2] float32  HF's inv_freq for that config (MllamaRotaryEmbedding)
    rope_inv_freq_11b  [64]         float32  the same for Llama-3.2-11B-Vision's text config
                                             (head_dim 128, theta 500000, llama3 factor 8, low 1,
                                             high 4, original 8192): all three bands at full size

The model goldens themselves (logits, greedy ids) come from make_model_goldens.py.
"""
import sys
from pathlib import Path

import torch
import transformers
from safetensors.torch import save_file
from transformers import MllamaConfig
from transformers.models.mllama.configuration_mllama import MllamaTextConfig
from transformers.models.mllama.modeling_mllama import MllamaRotaryEmbedding

DATA = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "tests" / "data" / "mllama"


def inv_freq(text_config):
    return MllamaRotaryEmbedding(text_config).inv_freq.detach().to(torch.float32).contiguous()


hub_11b = MllamaTextConfig(
    hidden_size=4096, num_attention_heads=32, num_key_value_heads=8, num_hidden_layers=40,
    max_position_embeddings=131072,
    rope_parameters=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0,
                         high_freq_factor=4.0, original_max_position_embeddings=8192))
freq_11b = inv_freq(hub_11b)
assert freq_11b.shape == (64,)

for folder in sorted(DATA.glob("tiny-mllama-*")):
    cfg = MllamaConfig.from_pretrained(folder)
    tensors = {"rope_inv_freq": inv_freq(cfg.text_config), "rope_inv_freq_11b": freq_11b.clone()}
    meta = {"transformers": transformers.__version__, "torch": torch.__version__}
    save_file(tensors, str(folder / "text_golden.safetensors"), metadata=meta)
    print(folder.name, {k: tuple(v.shape) for k, v in tensors.items()})
