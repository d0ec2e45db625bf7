"""An AWQ int4 checkpoint of tiny-mllama-a and HF's logits for it (docs/quantization.md, "AWQ checkpoints").

Run with the reference venv (never in CI):
    /work/venv-ref/bin/python refgen/awq/make_awq_goldens.py [AUTOAWQ_SRC]
AUTOAWQ_SRC: an unpacked AutoAWQ source tree (`pip download autoawq --no-deps`, 0.2.9 here); only
its pure-torch awq/utils/packing_utils.py is imported (dequantize_gemm, AWQ_ORDER), by path.

Writes tests/data/awq/tiny-mllama-awq/:
  config.json        tiny-mllama-a's, with quantization_config {"quant_method": "awq", "bits": 4,
                     "group_size": 32, "zero_point": true, "version": "gemm",
                     "modules_to_not_convert": ["vision_model", "multi_modal_projector", "lm_head"]}
  generation_config.json  copied
  model.safetensors  every text decoder projection (self and cross attention q/k/v/o, MLP gate/up/down)
                     as AWQ's <prefix>.qweight I32 [in, out/8], .qzeros I32 [in/32, out/8],
                     .scales F16 [in/32, out]; every other tensor in fp16 (as published AWQ
                     checkpoints keep them; the references use exactly these values)
  golden.safetensors logits [1, 13, 512]: HF MllamaForConditionalGeneration, fp32, on
                     tiny-mllama-a's golden inputs (its golden.safetensors: the test reads them
                     there), sample 0, every AWQ Linear replaced by AutoAWQ's dequantize_gemm (q - z) * s
                     computed in fp32 (exact);
                     logits_m16 [1, 13, 512]: the same with Egret's q4 weights d*q + m, d = s,
                     m = fp16(-z*s) (the only rounding of the mapping);
                     generated_ids [1, 10]: HF's greedy ids for the exact weights (asserted
                     equal to those for Egret's);
                     m_err_max [1], m_err_rel [1]: the largest |(d*q + m) - (q - z)*s| over every
                     weight, and that over its scale.
The q, z, s come from AutoAWQ's own zero-point quantizer formula (awq/quantize/quantizer.py,
pseudo_quantize_tensor) applied to tiny-mllama-a's weights, so the weights look like the originals.
Then tests/data/awq/linear-g128.safetensors (linear_g128) and tests/data/awq/tiny-idefics-awq/
(idefics), described in tests/data/awq/README.md.
"""
import importlib.util
import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import MllamaForConditionalGeneration

torch.set_num_threads(2)
ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "tests" / "data" / "mllama" / "tiny-mllama-a"
OUT = ROOT / "tests" / "data" / "awq" / "tiny-mllama-awq"
AWQ_SRC = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/tmp/awqsrc/autoawq-0.2.9")
GROUP = 32
NEW_TOKENS = 10

spec = importlib.util.spec_from_file_location("packing_utils", AWQ_SRC / "awq" / "utils" / "packing_utils.py")
pu = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pu)
AWQ_ORDER = pu.AWQ_ORDER
assert AWQ_ORDER == [0, 2, 4, 6, 1, 3, 5, 7]

PROJ = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "cross_attn.q_proj", "cross_attn.k_proj", "cross_attn.v_proj", "cross_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


def awq_quantize(w):
    """AutoAWQ's zero-point quantizer (pseudo_quantize_tensor, w_bit 4) on W [out, in]: int q and z
    [out, in] / [out, in/G], fp16 scales [out, in/G]."""
    out_f, in_f = w.shape
    g = w.reshape(-1, GROUP)
    mx, mn = g.amax(1, keepdim=True), g.amin(1, keepdim=True)
    scales = ((mx - mn).clamp(min=1e-5) / 15).half()  # stored as fp16 (WQLinear_GEMM.from_linear)
    s = scales.float()
    zeros = (-torch.round(mn / s)).clamp(0, 15)
    q = torch.clamp(torch.round(g / s) + zeros, 0, 15)
    return (q.reshape(out_f, in_f).to(torch.int32), zeros.reshape(out_f, -1).to(torch.int32),
            scales.reshape(out_f, -1))


def pack_cols(iv):
    """WQLinear_GEMM.from_linear's packing: iv [rows, cols] ints 0..15 -> int32 [rows, cols/8],
    word j bits 4i.. holding column 8j + AWQ_ORDER[i]."""
    rows, cols = iv.shape
    packed = torch.zeros(rows, cols // 8, dtype=torch.int64)
    for i in range(8):
        packed |= iv[:, AWQ_ORDER[i]::8].to(torch.int64) << (4 * i)
    return packed.to(torch.uint32).view(torch.int32) if hasattr(torch, "uint32") else \
        torch.where(packed >= 2**31, packed - 2**32, packed).to(torch.int32)


def to_awq(w):
    q, z, s = awq_quantize(w)
    qweight = pack_cols(q.t().contiguous())            # [in, out/8]
    qzeros = pack_cols(z.t().contiguous())             # [in/G, out/8]
    scales = s.t().contiguous()                        # [in/G, out] fp16
    # AutoAWQ's own dequantization, in fp32 (exact: small ints times fp16 values)
    deq = pu.dequantize_gemm(qweight, qzeros, scales.float(), 4, GROUP).t().contiguous()
    # cross-check against the unpacked values: the packing order is AutoAWQ's
    zr = z.repeat_interleave(GROUP, 1).float()
    sr = s.float().repeat_interleave(GROUP, 1)
    assert torch.equal(deq, (q.float() - zr) * sr)
    # Egret's q4: d = s, m = fp16(-z*s), weight d*q + m in fp32
    m16 = (-(zr * sr)).half().float()
    egret = sr * q.float() + m16
    awq_fp16 = pu.dequantize_gemm(qweight, qzeros, scales, 4, GROUP).t().float()
    return dict(qweight=qweight, qzeros=qzeros, scales=scales), deq, egret, awq_fp16, sr


def store_dense(t):
    """Dense tensors are stored in fp16, as published AWQ checkpoints keep them (and to keep
    the test data small); the references use exactly these values."""
    return t.half() if t.is_floating_point() else t


def hf_model(cls, src, dense, linears):
    """cls loaded in fp32 from a temporary folder holding src's config.json, the dense tensors
    as stored (fp16, read back as fp32) and every AWQ Linear as the dense `.weight` given."""
    tmp = Path(tempfile.mkdtemp())
    shutil.copy(src / "config.json", tmp / "config.json")
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in dense.items()}
    state.update(linears)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    model = cls.from_pretrained(str(tmp), dtype=torch.float32).eval()
    shutil.rmtree(tmp)
    return model


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    tensors, dense, awq_exact, awq_egret = {}, {}, {}, {}
    err_max = err_rel = err_fp16 = 0.0
    n_linear = 0
    with safe_open(str(SRC / "model.safetensors"), "pt") as f:
        meta = f.metadata()
        for k in f.keys():
            t = f.get_tensor(k)
            if k.startswith("language_model.") and k.endswith(".weight") and any(p in k for p in PROJ):
                parts, deq, egret, fp16, sr = to_awq(t)
                prefix = k[: -len("weight")]
                for name, v in parts.items():
                    tensors[prefix + name] = v
                awq_exact[k], awq_egret[k] = deq, egret
                d = (egret - deq).abs()
                err_max = max(err_max, d.max().item())
                err_rel = max(err_rel, (d / sr).max().item())
                err_fp16 = max(err_fp16, (egret - fp16).abs().max().item())
                n_linear += 1
            else:
                tensors[k] = dense[k] = store_dense(t)
    save_file(tensors, str(OUT / "model.safetensors"), metadata=meta)
    cfg = json.loads((SRC / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "awq", "bits": 4, "group_size": GROUP, "zero_point": True,
                                  "version": "gemm",
                                  "modules_to_not_convert": ["vision_model", "multi_modal_projector", "lm_head"]}
    (OUT / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    shutil.copy(SRC / "generation_config.json", OUT / "generation_config.json")

    g = {}
    with safe_open(str(SRC / "golden.safetensors"), "pt") as f:
        for k in ("input_ids", "attention_mask", "position_ids", "pixel_values", "aspect_ratio_ids",
                  "aspect_ratio_mask", "cross_attention_mask"):
            g[k] = f.get_tensor(k)
    vision = dict(pixel_values=g["pixel_values"], aspect_ratio_ids=g["aspect_ratio_ids"],
                  aspect_ratio_mask=g["aspect_ratio_mask"], cross_attention_mask=g["cross_attention_mask"])
    out, gens = {}, {}
    with torch.no_grad():
        for name, ws in (("logits_m16", awq_egret), ("logits", awq_exact)):
            model = hf_model(MllamaForConditionalGeneration, SRC, dense, ws)
            out[name] = model(input_ids=g["input_ids"], attention_mask=g["attention_mask"],
                              position_ids=g["position_ids"], use_cache=False, **vision).logits[:1]
            gens[name] = model.generate(input_ids=g["input_ids"], attention_mask=g["attention_mask"],
                                        max_new_tokens=NEW_TOKENS, do_sample=False,
                                        **vision)[:, g["input_ids"].shape[1]:]
    gen, gen_m16 = gens["logits"], gens["logits_m16"]
    assert torch.equal(gen[:1, 0], out["logits"][:, -1].argmax(-1))
    # the m rounding does not move a greedy id here: the test may require HF's ids exactly
    assert torch.equal(gen, gen_m16)
    out["generated_ids"] = gen[:1]
    out["m_err_max"] = torch.tensor([err_max], dtype=torch.float32)
    out["m_err_rel"] = torch.tensor([err_rel], dtype=torch.float32)
    d = (out["logits"] - out["logits_m16"]).abs()
    print("AWQ Linears:", n_linear, " worst |egret - exact|: %.3g (%.3g of its scale), vs AWQ's fp16 dequant %.3g"
          % (err_max, err_rel, err_fp16))
    print("logits: max |exact - m16| %.3g, max |exact| %.3g" % (d.max().item(), out["logits"].abs().max().item()))
    save_file({k: v.contiguous() for k, v in out.items()}, str(OUT / "golden.safetensors"),
              metadata={"source": "tiny-mllama-a", "group_size": str(GROUP)})
    print("generated:", gen.tolist())


def linear_g128():
    """One AWQ Linear(256, 16) with group 128 (wider than tiny-mllama-a's layers allow) and
    AutoAWQ's own dequantization of it: linear-g128.safetensors (linear.qweight, .qzeros, .scales,
    and reference F32 [16, 256] = dequantize_gemm in fp32, as [out, in])."""
    gen = torch.Generator().manual_seed(128)
    in_f, out_f, group = 256, 16, 128
    q = torch.randint(0, 16, (out_f, in_f), generator=gen, dtype=torch.int32)
    z = torch.randint(0, 16, (out_f, in_f // group), generator=gen, dtype=torch.int32)
    # scales over several binades, some large enough that z*s needs more bits than fp16 has
    s = (torch.rand(out_f, in_f // group, generator=gen) * 3 + 0.01) ** 3
    s = (s * torch.tensor([1e-3, 1.0])[torch.randint(0, 2, s.shape, generator=gen)]).half()
    qweight, qzeros = pack_cols(q.t().contiguous()), pack_cols(z.t().contiguous())
    scales = s.t().contiguous()
    ref = pu.dequantize_gemm(qweight, qzeros, scales.float(), 4, group).t().contiguous()
    zr, sr = z.repeat_interleave(group, 1).float(), s.float().repeat_interleave(group, 1)
    assert torch.equal(ref, (q.float() - zr) * sr)
    save_file({"linear.qweight": qweight, "linear.qzeros": qzeros, "linear.scales": scales,
               "reference": ref}, str(OUT.parent / "linear-g128.safetensors"))


IDEFICS_SRC = ROOT / "tests" / "data" / "tiny-idefics-c"
IDEFICS_OUT = ROOT / "tests" / "data" / "awq" / "tiny-idefics-awq"
# tiny-idefics-c: every width (32, 64) holds whole groups of 32; the decoder's and the cross layers'
# projections are packed (the cross layers' k/v stacked at load: two AWQ Linears in one matrix)
IDEFICS_PROJ = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                "cross_attn.q_proj", "cross_attn.k_proj", "cross_attn.v_proj", "cross_attn.o_proj",
                "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


def idefics():
    """tiny-idefics-c with its decoder (model.layers.*) and cross layers' q, o and MLP
    (model.gated_cross_attn_layers.*) AWQ-packed: tiny-idefics-awq/ with golden.safetensors
    holding logits and logits_m16 of its golden's row 0 [1, T, V] (as for mllama, on tiny-idefics-c's golden inputs,
    which the test reads there), generated_ids [2, 8] (HF generate, exact weights)."""
    from transformers import IdeficsForVisionText2Text
    IDEFICS_OUT.mkdir(parents=True, exist_ok=True)
    tensors, dense, exact, egret = {}, {}, {}, {}
    with safe_open(str(IDEFICS_SRC / "model.safetensors"), "pt") as f:
        meta = f.metadata()
        for k in f.keys():
            t = f.get_tensor(k)
            if (k.startswith("model.layers.") or k.startswith("model.gated_cross_attn_layers.")) and \
                    k.endswith(".weight") and any(p in k for p in IDEFICS_PROJ):
                parts, deq, eg, _, _ = to_awq(t)
                for name, v in parts.items():
                    tensors[k[: -len("weight")] + name] = v
                exact[k], egret[k] = deq, eg
            else:
                tensors[k] = dense[k] = store_dense(t)
    save_file(tensors, str(IDEFICS_OUT / "model.safetensors"), metadata=meta)
    cfg = json.loads((IDEFICS_SRC / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "awq", "bits": 4, "group_size": GROUP, "zero_point": True,
                                  "version": "gemm",
                                  "modules_to_not_convert": ["vision_model", "perceiver_resampler", "lm_head"]}
    (IDEFICS_OUT / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    for name in ("generation_config.json",):
        shutil.copy(IDEFICS_SRC / name, IDEFICS_OUT / name)
    g = {}
    with safe_open(str(IDEFICS_SRC / "golden.safetensors"), "pt") as f:
        for k in ("input_ids", "attention_mask", "position_ids", "pixel_values", "image_attention_mask",
                  "logits", "generated_ids"):
            g[k] = f.get_tensor(k)
    inputs = dict(input_ids=g["input_ids"], attention_mask=g["attention_mask"], position_ids=g["position_ids"],
                  pixel_values=g["pixel_values"], image_attention_mask=g["image_attention_mask"], use_cache=False)
    gen_inputs = {k: v for k, v in inputs.items() if k not in ("position_ids", "use_cache")}
    out, gens = {}, []
    with torch.no_grad():
        for name, ws in (("logits_m16", egret), ("logits", exact)):
            model = hf_model(IdeficsForVisionText2Text, IDEFICS_SRC, dense, ws)
            out[name] = model(**inputs).logits[:1]
            gens.append(model.generate(**gen_inputs, max_new_tokens=8, do_sample=False)[:, g["input_ids"].shape[1]:])
        gen = gens[1]
        assert torch.equal(gens[0], gen)  # the m rounding moves no greedy id here
    out["generated_ids"] = gen
    out["generated_ids"] = gen[:1]
    d = (out["logits"] - out["logits_m16"]).abs()
    print("idefics logits: max |exact - m16| %.3g; generated %s" % (d.max().item(), gen.tolist()))
    save_file({k: v.contiguous() for k, v in out.items()}, str(IDEFICS_OUT / "golden.safetensors"),
              metadata={"source": "tiny-idefics-c", "group_size": str(GROUP)})


if __name__ == "__main__":
    main()
    linear_g128()
    idefics()
