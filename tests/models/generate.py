#!/usr/bin/env python3
"""Regenerate the small exporter-produced test models in tests/models/.

Builds tiny models from transformers' model definitions (configs built in code,
weights from ``torch.manual_seed(0)``, nothing downloaded), exports each with
both torch.onnx exporters (legacy TorchScript, opset 17, and dynamo), and saves

  <name>_<legacy|dynamo>.onnx   weights inline
  <name>_<legacy|dynamo>.npz    inputs (keys = ONNX input names) and the
                                onnxruntime CPU reference outputs under
                                ``output:<onnx output name>`` (graph
                                optimizations disabled)
  manifest.json                 one entry per saved model

Run with the separate generator venv (torch/transformers are not project deps):

  /work/genvenv/bin/python tests/models/generate.py [--only NAME ...]

``--only`` takes family names (bert, gpt2, ...) or model names (bert_legacy).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
import warnings
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# the repository root, for workbench.core.numerics (its imports: numpy and ml_dtypes, which onnx needs too)
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from workbench.core.numerics import rel_err  # noqa: E402

HERE = Path(__file__).resolve().parent
LEGACY_OPSET = 17
BATCH, SEQ = 2, 16          # saved shape
BATCH2, SEQ2 = 3, 8         # second shape, checked only

torch.set_num_threads(min(2, torch.get_num_threads()))
warnings.filterwarnings("ignore")


# ---------------------------------------------------------------- wrappers
class TextWrap(torch.nn.Module):
    """Calls a transformers text model with positional tensors and returns a tuple."""

    def __init__(self, model, input_names, output_names):
        super().__init__()
        self.model = model
        self.input_names = input_names
        self.output_names = output_names

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        out = self.model(**kwargs, return_dict=True)
        return tuple(out[k] for k in self.output_names)


class VisionWrap(torch.nn.Module):
    def __init__(self, model, output_names):
        super().__init__()
        self.model = model
        self.output_names = output_names

    def forward(self, pixel_values):
        out = self.model(pixel_values=pixel_values, return_dict=True)
        return tuple(out[k] for k in self.output_names)


# ---------------------------------------------------------------- families
def _eager(cfg_cls, **kw):
    # initializer_range 0.2 (default 0.02): at hidden 32 the default makes every attention
    # score ~0 and the softmax nearly uniform, which would hide attention bugs.
    kw.setdefault("initializer_range", 0.2)
    cfg = cfg_cls(**kw)
    cfg._attn_implementation = kw.get("attn_implementation", "eager")
    return cfg


def build_bert(attn="eager"):
    cfg = _eager(transformers.BertConfig, vocab_size=100, hidden_size=32, num_hidden_layers=2,
                 num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
                 type_vocab_size=2, attn_implementation=attn)
    model = transformers.BertModel(cfg)
    return model, cfg, ["input_ids", "attention_mask", "token_type_ids"], \
        ["last_hidden_state", "pooler_output"]


def build_gpt2(attn="eager"):
    cfg = _eager(transformers.GPT2Config, vocab_size=100, n_embd=32, n_layer=2, n_head=2,
                 n_positions=64, use_cache=False, bos_token_id=0, eos_token_id=0,
                 attn_implementation=attn)
    model = transformers.GPT2LMHeadModel(cfg)
    return model, cfg, ["input_ids", "attention_mask"], ["logits"]


def build_llama(attn="eager"):
    cfg = _eager(transformers.LlamaConfig, vocab_size=100, hidden_size=32, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
                 max_position_embeddings=64, use_cache=False, attn_implementation=attn)
    model = transformers.LlamaModel(cfg)
    return model, cfg, ["input_ids", "attention_mask"], ["last_hidden_state"]


def build_vit(attn="eager"):
    cfg = _eager(transformers.ViTConfig, image_size=32, patch_size=8, num_channels=3,
                 hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=64, attn_implementation=attn)
    model = transformers.ViTModel(cfg)
    return model, cfg, ["pixel_values"], ["last_hidden_state", "pooler_output"]


def build_resnet(attn=None):
    cfg = transformers.ResNetConfig(num_channels=3, embedding_size=16, hidden_sizes=[16, 32],
                                    depths=[1, 1], layer_type="basic", num_labels=10)
    model = transformers.ResNetForImageClassification(cfg)
    return model, cfg, ["pixel_values"], ["logits"]


def build_mobilenetv2(attn=None):
    # depth_multiplier 0.35 gives 409k parameters (1.6 MB; 306k with finegrained_output=False),
    # over the size budget; 0.25 with a non-fine-grained head is ~163k (~650 KB). Same graph
    # structure: 17 inverted-residual blocks, ReLU6 (Clip), TF "same" padding (tf_padding).
    cfg = transformers.MobileNetV2Config(num_channels=3, image_size=64, depth_multiplier=0.25,
                                         finegrained_output=False, num_labels=10)
    model = transformers.MobileNetV2ForImageClassification(cfg)
    return model, cfg, ["pixel_values"], ["logits"]


def build_convnext(attn=None):
    cfg = transformers.ConvNextConfig(num_channels=3, image_size=64, num_stages=2, hidden_sizes=[16, 32],
                                      depths=[1, 1])
    model = transformers.ConvNextModel(cfg)
    return model, cfg, ["pixel_values"], ["last_hidden_state", "pooler_output"]


# name -> (builder, kind, attn, image size, export options)
# export options: legacy_training (torch.onnx.TrainingMode for the legacy exporter; default EVAL,
# which folds BatchNorm into Conv), dynamo_optimize (onnxscript optimizer after the dynamo
# export; default True, which also folds BatchNorm).
FAMILIES = {
    "bert": (build_bert, "text", "eager", None, {}),
    "bert_sdpa": (build_bert, "text", "sdpa", None, {}),
    "gpt2": (build_gpt2, "text", "eager", None, {}),
    "llama": (build_llama, "text", "eager", None, {}),
    "llama_sdpa": (build_llama, "text", "sdpa", None, {}),
    "vit": (build_vit, "image", "eager", 32, {}),
    "resnet": (build_resnet, "image", None, 64, {}),
    # Same ResNet, BatchNormalization nodes kept: legacy with TrainingMode.PRESERVE on an eval
    # model (inference-form BN, training_mode=0), dynamo with optimize=False (raw translation:
    # CastLike/Expand/Shape chains too).
    "resnet_bn": (build_resnet, "image", None, 64,
                  {"legacy_training": torch.onnx.TrainingMode.PRESERVE, "dynamo_optimize": False}),
    "mobilenetv2": (build_mobilenetv2, "image", None, 64, {}),
    "convnext": (build_convnext, "image", None, 64, {}),
}
FAMILY_OF = {"bert_sdpa": "bert", "llama_sdpa": "llama", "resnet_bn": "resnet"}


def perturb_constant_tensors(model, seed=0):
    """Give every constant-initialised float tensor varied values.

    Fresh models have LayerNorm/RMSNorm weights of 1, biases of 0, BatchNorm running stats of
    0/1 and ConvNeXt layer scales of 1e-6: such tensors make normalisation and BatchNorm
    folding look right when they are wrong (and let the legacy exporter deduplicate them into
    Identity nodes). Deterministic: a private generator seeded with ``seed``.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            if not t.is_floating_point() or t.numel() == 0:
                continue
            flat = t.reshape(-1)
            if not bool((flat == flat[0]).all()) or (t.numel() == 1 and "num_batches" in name):
                continue
            noise = torch.randn(t.shape, generator=gen, dtype=t.dtype)
            if name.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=gen, dtype=t.dtype))
            elif name.endswith("running_mean"):
                t.copy_(0.2 * noise)
            elif float(flat[0]) == 0.0:          # biases, zero-initialised tensors
                t.copy_(0.1 * noise)
            else:                                 # scales: 1 +- 0.1, layer_scale 1e-6 -> ~0.5
                base = 1.0 if abs(float(flat[0])) >= 0.1 else 0.5
                t.copy_(base + 0.1 * noise)


# ---------------------------------------------------------------- inputs
def make_inputs(kind, names, vocab, batch, seq, image, seed):
    rng = np.random.default_rng(seed)
    feeds = {}
    for n in names:
        if n == "input_ids":
            feeds[n] = rng.integers(0, vocab, size=(batch, seq), dtype=np.int64)
        elif n == "attention_mask":
            m = np.ones((batch, seq), dtype=np.int64)
            for b in range(1, batch):       # row 0 full; later rows padded at the end
                m[b, seq - min(seq - 1, 3 * b):] = 0
            feeds[n] = m
        elif n == "token_type_ids":
            t = np.zeros((batch, seq), dtype=np.int64)
            t[:, seq // 2:] = 1
            feeds[n] = t
        elif n == "pixel_values":
            feeds[n] = rng.standard_normal((batch, 3, image, image)).astype(np.float32)
        else:
            raise KeyError(n)
    return feeds


def dynamic_spec(kind, names):
    """dim index -> name for every input."""
    if kind == "text":
        return {n: {0: "batch", 1: "sequence"} for n in names}
    return {n: {0: "batch"} for n in names}


# ---------------------------------------------------------------- export
def export_legacy(wrap, args, in_names, out_names, dyn, path, ref, kind, opts):
    dynamic_axes = dict(dyn)
    for o, r in zip(out_names, ref):
        # outputs: batch always; sequence where a text output carries it in dim 1
        dynamic_axes[o] = {0: "batch"}
        if kind == "text" and r.dim() >= 2 and r.shape[1] == SEQ:
            dynamic_axes[o][1] = "sequence"
    torch.onnx.export(wrap, args, str(path), dynamo=False, opset_version=LEGACY_OPSET,
                      input_names=in_names, output_names=out_names,
                      dynamic_axes=dynamic_axes, do_constant_folding=True,
                      training=opts.get("legacy_training", torch.onnx.TrainingMode.EVAL))


def export_dynamo(wrap, args, in_names, out_names, dyn, path, opts):
    dims = {}
    shapes = {}
    for n in in_names:
        spec = {}
        for i, dn in dyn[n].items():
            if dn not in dims:
                dims[dn] = torch.export.Dim(dn, min=1, max=64 if dn == "sequence" else 1024)
            spec[i] = dims[dn]
        shapes[n] = spec
    prog = torch.onnx.export(wrap, args, dynamo=True, verbose=False, input_names=in_names,
                             output_names=out_names, dynamic_shapes=shapes,
                             optimize=opts.get("dynamo_optimize", True))
    prog.save(str(path), external_data=False)
    # The dynamo exporter tags every node with metadata_props holding the FX node,
    # class hierarchy and a Python stack trace (local paths; ~2/3 of the file).
    # Keep only the short, path-free name scopes.
    m = onnx.load(str(path))
    for node in _all_nodes(m.graph):
        keep = [(p.key, p.value) for p in node.metadata_props if p.key in KEEP_NODE_METADATA]
        del node.metadata_props[:]
        for k, v in keep:
            node.metadata_props.add(key=k, value=v)
    onnx.save(m, str(path))


KEEP_NODE_METADATA = {"pkg.torch.onnx.name_scopes"}


def _all_nodes(graph):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(attr.g)
            for g in attr.graphs:
                yield from _all_nodes(g)


def ort_session(path):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def dim_str(d):
    return d.dim_param if d.HasField("dim_param") else (d.dim_value if d.HasField("dim_value") else "?")


def process(name, exporter):
    builder, kind, attn, image, opts = FAMILIES[name]
    torch.manual_seed(0)
    model, cfg, in_names, out_names = builder(attn) if attn else builder()
    perturb_constant_tensors(model)
    model.eval()
    vocab = getattr(cfg, "vocab_size", None)
    if kind == "text":
        wrap = TextWrap(model, in_names, out_names)
    else:
        wrap = VisionWrap(model, out_names)
    wrap.eval()

    feeds = make_inputs(kind, in_names, vocab, BATCH, SEQ, image, seed=1)
    feeds2 = make_inputs(kind, in_names, vocab, BATCH2, SEQ2, image, seed=2)
    args = tuple(torch.from_numpy(feeds[n]) for n in in_names)
    dyn = dynamic_spec(kind, in_names)
    stem = f"{name}_{exporter}"
    path = HERE / f"{stem}.onnx"

    with torch.no_grad():
        ref = wrap(*args)
        ref2 = wrap(*(torch.from_numpy(feeds2[n]) for n in in_names))
        if exporter == "legacy":
            export_legacy(wrap, args, in_names, out_names, dyn, path, ref, kind, opts)
        else:
            export_dynamo(wrap, args, in_names, out_names, dyn, path, opts)

    m = onnx.load(str(path))
    onnx.checker.check_model(m, full_check=True)
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in m.graph.initializer):
        raise RuntimeError("external data in saved model")
    graph_inputs = [i.name for i in m.graph.input]
    graph_outputs = [o.name for o in m.graph.output]

    sess = ort_session(path)
    feed = {n: feeds[n] for n in graph_inputs}
    outs = sess.run(None, feed)
    for o, r in zip(outs, ref):
        e = rel_err(o, r.numpy())
        if e > 1e-4:
            raise RuntimeError(f"ORT vs torch mismatch at saved shape: rel err {e:.3g}")
    outs2 = sess.run(None, {n: feeds2[n] for n in graph_inputs})
    for o, r in zip(outs2, ref2):
        if o.shape != tuple(r.shape):
            raise RuntimeError(f"second shape: got {o.shape}, want {tuple(r.shape)}")
        e = rel_err(o, r.numpy())
        if e > 1e-4:
            raise RuntimeError(f"ORT vs torch mismatch at second shape: rel err {e:.3g}")

    data = {n: feeds[n] for n in graph_inputs}
    for on, o in zip(graph_outputs, outs):
        data[f"output:{on}"] = o
    np.savez(HERE / f"{stem}.npz", **data)

    inputs_meta = []
    for gi in m.graph.input:
        tt = gi.type.tensor_type
        dims = list(tt.shape.dim)
        inputs_meta.append({
            "name": gi.name,
            "dtype": str(np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type))),
            "shape": list(feeds[gi.name].shape),
            "onnx_shape": [dim_str(d) for d in dims],
            "dynamic": {str(i): d.dim_param for i, d in enumerate(dims) if d.HasField("dim_param")},
            "second_shape": list(feeds2[gi.name].shape),
        })
    outputs_meta = []
    for go, o in zip(m.graph.output, outs):
        dims = list(go.type.tensor_type.shape.dim)
        outputs_meta.append({"name": go.name, "dtype": str(o.dtype), "shape": list(o.shape),
                             "onnx_shape": [dim_str(d) for d in dims]})
    opset = {(o.domain or "ai.onnx"): o.version for o in m.opset_import}
    hist = Counter(n.op_type if not n.domain else f"{n.domain}::{n.op_type}" for n in m.graph.node)
    return {
        "name": stem,
        "file": path.name,
        "data": f"{stem}.npz",
        "exporter": exporter,
        "family": FAMILY_OF.get(name, name),
        "variant": name,
        "attn_implementation": attn,
        "export_options": {k: (v.name if hasattr(v, "name") else v) for k, v in opts.items()
                           if k.startswith(exporter)},
        "opset": opset,
        "ir_version": m.ir_version,
        "size_bytes": path.stat().st_size,
        "node_count": len(m.graph.node),
        "functions": [f.name for f in m.functions],
        "op_histogram": dict(sorted(hist.items())),
        "inputs": inputs_meta,
        "outputs": outputs_meta,
        "shapes": ",".join(f"{i['name']}:{'x'.join(map(str, i['shape']))}" for i in inputs_meta),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="*", default=None,
                    help="family (bert) or model (bert_legacy) names to regenerate")
    ap.add_argument("--exporter", choices=["legacy", "dynamo", "both"], default="both")
    a = ap.parse_args(argv)

    exporters = ["legacy", "dynamo"] if a.exporter == "both" else [a.exporter]
    jobs = [(f, e) for f in FAMILIES for e in exporters]
    if a.only:
        jobs = [(f, e) for f, e in jobs if f in a.only or f"{f}_{e}" in a.only]
        if not jobs:
            ap.error(f"nothing matches {a.only}; families: {', '.join(FAMILIES)}")

    manifest_path = HERE / "manifest.json"
    manifest = {"models": [], "failures": []}
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        manifest.setdefault("failures", [])
    done = {f"{f}_{e}" for f, e in jobs}
    manifest["models"] = [x for x in manifest["models"] if x["name"] not in done]
    manifest["failures"] = [x for x in manifest["failures"] if x["name"] not in done]
    manifest["versions"] = {"torch": torch.__version__, "transformers": transformers.__version__,
                            "onnx": onnx.__version__, "onnxruntime": ort.__version__,
                            "onnxscript": _version("onnxscript"), "numpy": np.__version__}

    for fam, exp in jobs:
        stem = f"{fam}_{exp}"
        print(f"== {stem}", flush=True)
        try:
            entry = process(fam, exp)
        except Exception as e:  # keep going; record why
            msg = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:500]
            print(f"   FAILED {msg}", flush=True)
            traceback.print_exc(limit=3)
            for ext in (".onnx", ".npz"):
                p = HERE / f"{stem}{ext}"
                if p.exists():
                    p.unlink()
            manifest["failures"].append({"name": stem, "family": FAMILY_OF.get(fam, fam),
                                         "exporter": exp, "error": msg})
            continue
        manifest["models"].append(entry)
        print(f"   {entry['size_bytes']} B, {entry['node_count']} nodes, opset {entry['opset']}, "
              f"--shapes {entry['shapes']}", flush=True)
        print(f"   {entry['op_histogram']}", flush=True)

    order = {f"{f}_{e}": i for i, (f, e) in enumerate((f, e) for f in FAMILIES for e in ("legacy", "dynamo"))}
    manifest["models"].sort(key=lambda x: order.get(x["name"], 1 << 30))
    manifest["failures"].sort(key=lambda x: order.get(x["name"], 1 << 30))
    manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"wrote {manifest_path}: {len(manifest['models'])} models, "
          f"{len(manifest['failures'])} failures")
    return 0


def _version(mod):
    try:
        return __import__(mod).__version__
    except Exception:
        return None


if __name__ == "__main__":
    sys.exit(main())
