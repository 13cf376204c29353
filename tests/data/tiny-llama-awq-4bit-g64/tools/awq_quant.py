# Quantize the fp16 tiny model with GPTQModel's AWQ (4 bit, group 64, GEMM format), on the CPU.
# Mirrors /work/shared/fixtures/tools/gptq_quant.py; differences: AWQ config, and calibration rows of
# equal length in tokens (GPTQModel's AWQ concatenates captured activations only when all rows have the
# same shape; with variable-length rows it keeps the last row only, and its low-coverage check then
# falls back to plain RTN for the whole layer).
# usage: awq_quant.py SRC_FP16_DIR OUT_DIR CORPUS_DIR [ROW_LEN=128]
import sys, os, glob, time
import torch
src, out, corpus = sys.argv[1:4]
row_len = int(sys.argv[4]) if len(sys.argv) > 4 else 128
from tokenizers import Tokenizer
from gptqmodel import GPTQModel, QuantizeConfig
from gptqmodel.quantization import METHOD, FORMAT

# calibration: paragraphs of local English text (license texts), fixed order (same as gptq_quant.py)
paras = []
for f in sorted(glob.glob(os.path.join(corpus, "*"))):
    txt = open(f, encoding="utf-8", errors="replace").read()
    for p in txt.split("\n\n"):
        p = " ".join(p.split())
        if len(p) >= 200:
            paras.append(p)
paras = paras[:256]
print("calibration paragraphs:", len(paras))

# tokenize each paragraph with the model's own tokenizer.json (<s> = 0 prepended, as GPTQModel's
# own tokenization with add_special_tokens=True does), concatenate in order, cut into full rows of
# row_len tokens; the incomplete tail is dropped (no padding, so every row is all real tokens)
tok = Tokenizer.from_file(os.path.join(src, "tokenizer.json"))
stream = []
for p in paras:
    stream.extend(tok.encode(p).ids)
n_rows = len(stream) // row_len
rows = [{"input_ids": stream[i * row_len:(i + 1) * row_len]} for i in range(n_rows)]
print(f"calibration tokens {len(stream)} -> {n_rows} rows x {row_len} tokens (dropped tail {len(stream) - n_rows * row_len})")

# --- trace (read-only wrappers around GPTQModel's AWQProcessor, to show that the real AWQ scale search ran
# and the low-coverage RTN fallback did not); written to OUT_DIR/../awq_trace.json
import json
from gptqmodel.looper.awq_processor import AWQProcessor
trace = {"feature_stats": [], "scale_search": [], "clip_search": [], "fallback_group_checks": [], "layer_fallbacks": []}
_orig_lif = AWQProcessor._layer_input_features
def _lif(self, state):
    r = _orig_lif(self, state)
    trace["feature_stats"].append({k: {kk: (vv if isinstance(vv, (int, str)) else str(vv)) for kk, vv in v.items()}
                                   for k, v in getattr(self, "_feature_stats", {}).items()})
    trace["feature_stats"][-1]["_shapes"] = {k: list(v.shape) for k, v in r.items()}
    return r
AWQProcessor._layer_input_features = _lif
_orig_sbs = AWQProcessor._search_best_scale
def _sbs(self, module, prev_op, layers, inp, module2inspect=None, kwargs={}):
    r = _orig_sbs(self, module, prev_op, layers, inp, module2inspect=module2inspect, kwargs=kwargs)
    prev, names, scales, loss = r
    s = scales.float()
    trace["scale_search"].append({"layer": getattr(self._scale_context, "layer_index", None), "prev_op": prev,
                                  "layers": list(names), "inp_shape": list(inp.shape), "loss": float(loss),
                                  "scales_min": float(s.min()), "scales_max": float(s.max()),
                                  "scales_all_equal": bool((s == s.flatten()[0]).all())})
    return r
AWQProcessor._search_best_scale = _sbs
_orig_sbc = AWQProcessor._search_best_clip
def _sbc(self, layer, named_linears, input_feat):
    r = _orig_sbc(self, layer, named_linears, input_feat)
    trace["clip_search"].append({"layer": getattr(self._scale_context, "layer_index", None), "clipped": [n for n, _ in r]})
    return r
AWQProcessor._search_best_clip = _sbc
_orig_sfg = AWQProcessor._should_fallback_group
def _sfg(self, layer_names, input_feat):
    r = _orig_sfg(self, layer_names, input_feat)
    trace["fallback_group_checks"].append({"layers": list(layer_names), "fallback": bool(r)})
    return r
AWQProcessor._should_fallback_group = _sfg
_orig_qlf = AWQProcessor._quantize_layer_fallback
def _qlf(self, layer_index, state, reason):
    trace["layer_fallbacks"].append({"layer": layer_index, "reason": str(reason)})
    return _orig_qlf(self, layer_index, state, reason)
AWQProcessor._quantize_layer_fallback = _qlf

torch.manual_seed(0)
qcfg = QuantizeConfig(quant_method=METHOD.AWQ, format=FORMAT.GEMM, bits=4, group_size=64, sym=False)
print("QuantizeConfig:", type(qcfg).__name__, qcfg)
dev = "cuda:0" if torch.cuda.is_available() else "cpu"
model = GPTQModel.load(src, qcfg, device=dev, dtype=torch.float16)
t0 = time.time()
model.quantize(rows, batch_size=1)
print("quantize seconds", round(time.time() - t0, 1))
model.save(out)
print("saved", out, sorted(os.listdir(out)))
trace["calibration"] = {"paragraphs": len(paras), "tokens": len(stream), "rows": n_rows, "row_len": row_len}
json.dump(trace, open(os.path.join(os.path.dirname(os.path.abspath(out)), "awq_trace.json"), "w"), indent=1)
print("scale searches:", len(trace["scale_search"]), "fallback groups:", sum(c["fallback"] for c in trace["fallback_group_checks"]),
      "layer fallbacks:", len(trace["layer_fallbacks"]))
